"""Where metrics go: WORKDIR/metrics.jsonl, TensorBoard event files (tensorboardX, no
TensorFlow, no account; scalars and the PNG pictures as images), a progress bar whose
ETA starts once the first step has compiled, and WORKDIR/summary.json at the end.

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
import numpy as np
from PIL import Image
import tqdm

from lensfm import utils


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


def read_png(path: str) -> np.ndarray:
  """[H, W, 3] uint8 pixels of a PNG (Pillow, which matplotlib already needs)."""
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def log_pictures(workdir: str, step: int, paths) -> None:
  """PNG files of a run without a MetricWriter (evaluation, figures at the end of
  fine-tuning) into WORKDIR/tensorboard, each under its file name (e.g. 'val_roc')."""
  writer = MetricWriter(workdir, 0, start_step=step, progress=False, metrics_file=False)
  try:
    writer.write_pictures(step, {os.path.splitext(os.path.basename(p))[0]: p for p in paths})
  finally:
    writer.close()


class MetricWriter:
  """Appends metrics per step; shows a progress bar with step, loss, images/s and ETA."""

  def __init__(self, workdir: str, total_steps: int, *, start_step: int = 0,
               progress: bool = True, tensorboard: bool = True, metrics_file: bool = True):
    self.workdir = workdir
    self.active = jax.process_index() == 0
    self.last: dict = {}
    self._bar = None
    self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = None
    if metrics_file:  # A training run's log: what a resumed run repeats is dropped.
      path = os.path.join(workdir, "metrics.jsonl")
      drop_rows_after(path, start_step)
      self._jsonl = open(path, "a")
    if tensorboard:
      # Deferred: tensorboardX imports torch when installed (~1.3 s), only worth it here.
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # purge_step: TensorBoard discards earlier files' events from this step on.
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=start_step + 1 if metrics_file else None)
    if progress:
      self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                       mininterval=1.0)

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    record = {"step": int(step), "time": time.time(), **{k: _plain(v) for k, v in metrics.items()}}
    self.last.update(record)
    if self._jsonl is not None:
      self._jsonl.write(json.dumps(record) + "\n")
      self._jsonl.flush()
    if self._tb is not None:
      for k, v in record.items():
        if k not in ("step", "time") and isinstance(v, float):
          self._tb.add_scalar(k, v, step)
    if self._bar is not None:
      shown = {k: record[k] for k in ("loss", "images_per_sec") if k in record}
      self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items() if isinstance(v, float)})

  def start_clock(self, step: int) -> None:
    """Restarts the bar's rate and ETA at `step` (after the first step compiled and ran),
    so compilation time never counts as time per step."""
    if self._bar is None:
      return
    self._bar.reset(self._bar.total)
    self._bar.initial = self._bar.n = self._bar.last_print_n = step
    self._bar.refresh()

  def advance(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def write_pictures(self, step: int, paths: dict[str, str]) -> None:
    """Adds PNG files ({tag: path}) to TensorBoard's Images tab (missing files skipped)."""
    if self._tb is None:
      return
    for tag, path in paths.items():
      if path and os.path.exists(path):
        self._tb.add_image(tag, read_png(path), step, dataformats="HWC")
    self._tb.flush()

  def summary(self, extra: Optional[dict] = None) -> dict:
    """Writes WORKDIR/summary.json with the last metrics (and `extra`)."""
    summary = {**self.last, **{k: _plain(v) for k, v in (extra or {}).items()}}
    if self.active:
      utils.write_json_atomically(os.path.join(self.workdir, "summary.json"), summary)
    return summary

  def close(self) -> None:
    if not self.active:
      return
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()
