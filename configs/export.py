r"""Ships a pretraining run's encoder as a named checkpoint (`lensfm:NAME`).

  python -m lensfm.main --config=configs/export.py --config.init_from=PRETRAIN_WORKDIR \
      --config.name=NAME --workdir=DIR
  python -m lensfm.main --config=configs/export.py --config.init_from=PRETRAIN_WORKDIR \
      --config.out=OUT_DIR --workdir=DIR       # anywhere else than lensfm/weights/
Writes params/encoder only (no optimizer state, no heads) as an orbax checkpoint whose
files are each at most `max_file_mib`, plus config.json, into lensfm/weights/NAME/ (or
`out`); other files there (MODEL_CARD.md) are kept. DIR/summary.json names what was
written and its size. A release step: add a MODEL_CARD.md beside it (lensfm/weights/README.md).
"""
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  parse_arg(arg)  # No args.
  c = ml_collections.ConfigDict()
  c.task = "export"
  c.init_from = ""  # A pretraining workdir, its checkpoints/<step>, or lensfm:NAME.
  c.name = ""  # Ship as lensfm:<name> (lensfm/weights/<name>/) ...
  c.out = ""  # ... or write to this directory instead (exactly one of the two).
  c.max_file_mib = 16  # Largest file written, MiB.
  return c
