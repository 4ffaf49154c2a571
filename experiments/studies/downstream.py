r"""The downstream tasks beyond classification, by LensBench: axion-mass regression (MAE in
dex), x2 super-resolution (PSNR gain over bicubic) and lens finding (AUC, TPR at 1% FPR),
for a pretrained checkpoint (fine-tuned and linear probe) beside the same backbone and
ResNet-18 from scratch.

  python -m experiments.studies.downstream                       # cpu preset (default)
  python -m experiments.studies.downstream --preset=accelerator --pretrained=workdirs/mae_vit_b

Without --pretrained it pretrains (or reuses) the runlocal MAE of label_efficiency's
default workdir. A thin caller of LensBench (`--config.only='^(regress|superres|lensfind)/'`).
Writes experiments/results/downstream_<preset>_<device>.{md,json} (the preset is left out
where it names the device: downstream_cpu on a CPU).
"""
from absl import app
from absl import flags

from experiments.studies import lensbench_part

flags.adopt_module_key_flags(lensbench_part)  # --help lists its flags.


def main(argv):
  del argv
  lensbench_part.run("downstream", only="^(regress|superres|lensfind)/",
                     bench_dir="bench_downstream")


if __name__ == "__main__":
  app.run(main)
