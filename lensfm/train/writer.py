"""Where metrics go: WORKDIR/metrics.jsonl, TensorBoard event files (tensorboardX, no
TensorFlow, no account), a progress bar, and WORKDIR/summary.json at the end.

Only process 0 writes; other processes get a writer that does nothing, so callers
never branch on the process index.

A run resumed from step s first drops what was logged after s (by the run that went
on past its last checkpoint): metrics.jsonl keeps its rows up to step s (rewritten
atomically) and TensorBoard is told to purge events after s, so every step is logged
once however often a run is interrupted.
"""
import json
import math
import os
import time
from typing import Optional

import jax

from lensfm.train import checkpoint


def _plain(value):
  """JSON-friendly scalar: bools and integers keep their type; NaN/inf become strings."""
  if hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
    value = value.item()
  if isinstance(value, (bool, int)):
    return value
  try:
    value = float(value)
  except (TypeError, ValueError):
    return value
  return value if math.isfinite(value) else str(value)


def drop_rows_after(path: str, step: int) -> None:
  """Keeps only the rows of metrics.jsonl logged at steps <= `step` (atomically).

  A torn last line (a process killed mid-write) is dropped too.
  """
  if not os.path.exists(path):
    return
  kept, changed = [], False
  with open(path) as f:
    for line in f:
      try:
        row_step = int(json.loads(line)["step"])
      except (ValueError, KeyError, TypeError):
        changed = True
        continue
      if row_step > step:
        changed = True
        continue
      kept.append(line if line.endswith("\n") else line + "\n")
  if changed:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)


class MetricWriter:
  """Appends metrics per step; shows a progress bar with step, loss, images/s and ETA."""

  def __init__(self, workdir: str, total_steps: int, *, start_step: int = 0,
               progress: bool = True, tensorboard: bool = True):
    self.workdir = workdir
    self.active = jax.process_index() == 0
    self.last: dict = {}
    self._bar = None
    self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    drop_rows_after(path, start_step)
    self._jsonl = open(path, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # purge_step: TensorBoard discards earlier files' events from this step on.
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=start_step + 1)
    if progress:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                       mininterval=1.0)

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    record = {"step": int(step), "time": time.time(), **{k: _plain(v) for k, v in metrics.items()}}
    self.last.update(record)
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in record.items():
        if k not in ("step", "time") and isinstance(v, float):
          self._tb.add_scalar(k, v, step)
    if self._bar is not None:
      shown = {k: record[k] for k in ("loss", "images_per_sec") if k in record}
      self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items() if isinstance(v, float)})

  def advance(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def summary(self, extra: Optional[dict] = None) -> dict:
    """Writes WORKDIR/summary.json with the last metrics (and `extra`)."""
    summary = {**self.last, **{k: _plain(v) for k, v in (extra or {}).items()}}
    if self.active:
      checkpoint.write_json_atomically(os.path.join(self.workdir, "summary.json"), summary)
    return summary

  def close(self) -> None:
    if not self.active:
      return
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    self._jsonl.close()
