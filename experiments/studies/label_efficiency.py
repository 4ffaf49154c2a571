r"""Label efficiency: LensBench's Model II classification rows (10 / 100 / 1,000 labels per
class and all; fine-tuning and linear probe of a pretrained checkpoint beside the same
backbone and ResNet-18 from scratch; 3 seeds at 10 and 100).

  python -m experiments.studies.label_efficiency                 # cpu preset (default)
  python -m experiments.studies.label_efficiency --preset=accelerator \
      --pretrained=workdirs/mae_vit_b

Without --pretrained (cpu preset) it first pretrains the runlocal ViT with MAE on 32x32
simulated lenses for --pretrain_steps. A thin caller of LensBench (lensfm/tasks/bench.py,
`--config.only='^classify/model_ii/'`): the same fixed sets, budgets and table.
Writes experiments/results/label_efficiency_<preset>_<device>.{md,json,png} (the preset
is left out where it names the device: label_efficiency_cpu on a CPU).
"""
from absl import app
from absl import flags

from experiments.studies import lensbench_part

flags.adopt_module_key_flags(lensbench_part)  # --help lists its flags.


def main(argv):
  del argv
  lensbench_part.run("label_efficiency", only="^classify/model_ii/", bench_dir="bench")


if __name__ == "__main__":
  app.run(main)
