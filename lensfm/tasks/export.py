"""Task 'export': a pretraining run's encoder shipped as a named checkpoint (lensfm:NAME).

  python -m lensfm.main --config=configs/export.py --config.init_from=PRETRAIN_WORKDIR \
      --config.name=NAME --workdir=DIR

Writes the checkpoint's params/encoder (no optimizer state, no heads) with
`lensfm.train.loading.export_encoder`: an orbax checkpoint whose files are each at most
`max_file_mib`, plus config.json, into lensfm/weights/NAME/ (loadable as lensfm:NAME) or
into `out`; other files there (a MODEL_CARD.md) are kept.

config fields:
  task: 'export'.
  init_from: the pretraining workdir (or checkpoints/<step>, or lensfm:NAME).
  name: ship as lensfm:<name>; or
  out: write to this directory instead (exactly one of name and out).
  max_file_mib: largest file written, MiB (default 16).
Writes WORKDIR/summary.json: checkpoint, out, name, files, mib, largest_mib.
"""
import os
import re

from lensfm import errors
from lensfm import utils
from lensfm.train import loading


def output_dir(config) -> str:
  """Where the encoder goes: lensfm/weights/<name>, or config.out."""
  name, out = config.get("name", ""), config.get("out", "")
  if not config.get("init_from", ""):
    raise errors.UserError("config.init_from is required: the pretraining workdir to export.")
  if bool(name) == bool(out):
    raise errors.UserError("Give exactly one of config.name (lensfm/weights/NAME) and "
                           "config.out (a directory).")
  if name and not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
    raise errors.UserError(f"config.name={name!r}: letters, digits, '_', '.', '-' only.")
  return os.path.expanduser(out) if out else os.path.join(loading.WEIGHTS_DIR, name)


def run(config, workdir: str) -> dict:
  out = output_dir(config)
  loading.export_encoder(config.init_from, out,
                         max_file_bytes=int(config.get("max_file_mib", 16) * 2**20))
  sizes = [os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(out) for f in files]
  summary = {"checkpoint": str(config.init_from), "out": out,
             "name": f"{loading.NAMED_PREFIX}{config.name}" if config.get("name") else "",
             "files": len(sizes), "mib": round(sum(sizes) / 2**20, 2),
             "largest_mib": round(max(sizes) / 2**20, 2)}
  os.makedirs(workdir, exist_ok=True)
  utils.write_json_atomically(os.path.join(workdir, "summary.json"), summary)
  print(f"Wrote {out}: {summary['files']} files, {summary['mib']:.2f} MiB, largest "
        f"{summary['largest_mib']:.2f} MiB.", flush=True)
  return summary
