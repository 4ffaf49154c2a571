"""What label_efficiency and downstream share (a module, not a script): their flags, and a
main that scores a checkpoint (--pretrained, or the runlocal MAE pretrained here) on a
part of LensBench and copies its table to experiments/results/<name>_<preset>_<device>.*"""
import os

from absl import flags

from experiments import results
from experiments.studies import common
from lensfm.tasks import pretrain

_PRESET = flags.DEFINE_enum("preset", "cpu", ["runlocal", "cpu", "accelerator"], "Scale.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lensfm_label_efficiency", "Run directories.")
_PRETRAINED = flags.DEFINE_string("pretrained", None, "Checkpoint; default: pretrain one.")
_PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", 1500, "MAE steps without --pretrained.")


def run(name: str, only: str, bench_dir: str) -> None:
  """LensBench rows matching `only` on the checkpoint, in WORKDIR/bench_dir; prints the
  table written to experiments/results/<name>_<preset>_<device>.{md,json}."""
  pretrained = _PRETRAINED.value
  if not pretrained:  # Both parts share this pretraining (the same default --workdir).
    pretrained = os.path.join(_WORKDIR.value, "pretrain")
    pretrain.run(common.cpu_pretrain_config(_PRETRAIN_STEPS.value), pretrained)
  stem = results.stem(name, _PRESET.value)
  common.lensbench(pretrained, os.path.join(_WORKDIR.value, bench_dir), preset=_PRESET.value,
                   only=only, results_stem=stem)
  print(open(stem + ".md").read())
