r"""Label efficiency: LensBench's Model II classification rows (10 / 100 / 1,000 labels per
class and all; fine-tuning and linear probe of a pretrained checkpoint beside the same
backbone and ResNet-18 from scratch; 3 seeds at 10 and 100).

  python experiments/label_efficiency.py                      # cpu preset (default)
  python experiments/label_efficiency.py --preset=accelerator --pretrained=workdirs/mae_vit_b

Without --pretrained (cpu preset) it first pretrains the runlocal ViT with MAE on 32x32
simulated lenses for --pretrain_steps. A thin caller of LensBench (lensfm/tasks/bench.py,
`--config.only='^classify/model_ii/'`): the same fixed sets, budgets and table.
Writes experiments/results/label_efficiency_<preset>_<platform>.{md,json,png}.
"""
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top

from experiments import common  # pylint: disable=g-import-not-at-top
from lensfm.tasks import pretrain

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
_PRESET = flags.DEFINE_enum("preset", "cpu", ["runlocal", "cpu", "accelerator"], "Scale.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lensfm_label_efficiency", "Run directories.")
_PRETRAINED = flags.DEFINE_string("pretrained", None, "Checkpoint; default: pretrain one.")
_PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", 1500, "MAE steps without --pretrained.")


def main(argv):
  del argv
  pretrained = _PRETRAINED.value
  if not pretrained:
    pretrained = os.path.join(_WORKDIR.value, "pretrain")
    pretrain.run(common.cpu_pretrain_config(_PRETRAIN_STEPS.value), pretrained)
  stem = os.path.join(RESULTS, f"label_efficiency_{_PRESET.value}_{jax.devices()[0].platform}")
  common.lensbench(pretrained, os.path.join(_WORKDIR.value, "bench"), preset=_PRESET.value,
                   only="^classify/model_ii/", results_stem=stem)
  print(open(stem + ".md").read())


if __name__ == "__main__":
  app.run(main)
