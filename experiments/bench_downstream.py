r"""The downstream tasks beyond classification, by LensBench: axion-mass regression (MAE in
dex), x2 super-resolution (PSNR gain over bicubic) and lens finding (AUC, TPR at 1% FPR),
for a pretrained checkpoint (fine-tuned and linear probe) beside the same backbone and
ResNet-18 from scratch.

  python experiments/bench_downstream.py                     # cpu preset (default)
  python experiments/bench_downstream.py --preset=accelerator --pretrained=workdirs/mae_vit_b

Without --pretrained it pretrains (or reuses) the runlocal MAE of label_efficiency.py's
default workdir. A thin caller of LensBench (`--config.only='^(regress|superres|lensfind)/'`).
Writes experiments/results/downstream_<preset>_<platform>.{md,json}.
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
  stem = os.path.join(RESULTS, f"downstream_{_PRESET.value}_{jax.devices()[0].platform}")
  common.lensbench(pretrained, os.path.join(_WORKDIR.value, "bench_downstream"),
                   preset=_PRESET.value, only="^(regress|superres|lensfind)/",
                   results_stem=stem)
  print(open(stem + ".md").read())


if __name__ == "__main__":
  app.run(main)
