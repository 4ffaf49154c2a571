r"""Ships a pretraining run's encoder as a named checkpoint (`lensfm:<name>`).

  python experiments/export_weights.py --workdir=/work/runs/lensfm_tiny --name=tiny
  python experiments/export_weights.py --workdir=W --out=DIR    # anywhere else

Writes params/encoder only (no optimizer state, no heads) as an orbax checkpoint whose
files are each at most --max_file_mib, plus config.json, into lensfm/weights/<name>/ (or
--out); other files there (MODEL_CARD.md) are kept. Prints the size written.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lensfm.train import loading  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining workdir or checkpoints/<step>.")
_NAME = flags.DEFINE_string("name", None, "Ship as lensfm:<name> (lensfm/weights/<name>).")
_OUT = flags.DEFINE_string("out", None, "Or write to this directory instead.")
_MAX_FILE_MIB = flags.DEFINE_integer("max_file_mib", 16, "Largest file written, MiB.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file at INFO.
  if not _WORKDIR.value or bool(_NAME.value) == bool(_OUT.value):
    raise app.UsageError("Give --workdir and exactly one of --name or --out.")
  out = _OUT.value or os.path.join(loading.WEIGHTS_DIR, _NAME.value)
  loading.export_encoder(_WORKDIR.value, out, max_file_bytes=_MAX_FILE_MIB.value * 2**20)
  sizes = [os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(out) for f in files]
  print(f"Wrote {out}: {len(sizes)} files, {sum(sizes) / 2**20:.2f} MiB, largest "
        f"{max(sizes) / 2**20:.2f} MiB.")


if __name__ == "__main__":
  app.run(main)
