"""Pieces shared by the lensfm TFDS builders.

Both builders write ArrayRecord (`file_format='array_record'`), which TFDS
4.9.10 builds and reads without TensorFlow: `tfds.core.GeneratorBasedBuilder`
serialises examples with its own vendored `tf.train.Example` protos, the
features used here (`Tensor`, `Scalar`, `ClassLabel`, `Text`) encode with
numpy, and `tfds.data_source` / `builder.as_data_source()` decode with numpy.
(`tfds.features.Image` would need TF for PNG coding, hence raw float Tensors.)

Every builder stores in the dataset's `metadata.json` (TFDS `MetadataDict`,
available as `builder.info.metadata`):
  'pixel_stats': per-channel {'mean': [C], 'std': [C]} of the train split's raw
                 pixels, for config.data.normalize='standardize';
  'pixel_scale': arcsec per pixel of the images (mapped onto a model's grid on read);
  'build_args':  the arguments that decide the content (checked on reuse);
  'report':      examples written per split and files skipped per reason.
"""
from __future__ import annotations

import collections
import os
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

MAX_LISTED_SKIPS = 20


class BadInputError(ValueError):
  """Input the builder cannot turn into a good example (names the file)."""

  def __init__(self, where: str, problem: str, expected: str = "",
               reason: str = "bad_file"):
    self.where, self.problem, self.expected, self.reason = (
        where, problem, expected, reason)
    message = f"{where}: {problem}"
    if expected:
      message += f"; expected {expected}"
    super().__init__(message + ".")

  def with_skip_hint(self) -> "BadInputError":
    """The same error, telling how to skip such files instead."""
    hint = "; pass --skip_bad (skip_bad=True) to skip bad files instead"
    return BadInputError(self.where, self.problem,
                         (self.expected or "a good file") + hint, self.reason)


class PixelStats:
  """Streaming per-channel mean/std (float64 sums; fine for < 1e12 pixels)."""

  def __init__(self):
    self.total = None
    self.total_sq = None
    self.count = 0

  def add(self, image: np.ndarray) -> None:
    """Adds one image [H, W, C]."""
    self.add_batch(np.asarray(image)[None])

  def add_batch(self, images: np.ndarray) -> None:
    """Adds images [N, H, W, C]."""
    pixels = np.asarray(images, np.float64).reshape(-1, images.shape[-1])
    if self.total is None:
      self.total = np.zeros(pixels.shape[-1])
      self.total_sq = np.zeros(pixels.shape[-1])
    self.total += pixels.sum(axis=0)
    self.total_sq += (pixels ** 2).sum(axis=0)
    self.count += pixels.shape[0]

  def add_sums(self, sums: np.ndarray, sums_sq: np.ndarray, count: int) -> None:
    """Adds per-image channel sums [N, C] and sums of squares [N, C] of `count` pixels."""
    if self.total is None:
      self.total = np.zeros(sums.shape[-1])
      self.total_sq = np.zeros(sums.shape[-1])
    self.total += np.asarray(sums, np.float64).sum(axis=0)
    self.total_sq += np.asarray(sums_sq, np.float64).sum(axis=0)
    self.count += count

  def result(self) -> Optional[dict[str, list[float]]]:
    if not self.count:
      return None
    mean = self.total / self.count
    std = np.sqrt(np.maximum(self.total_sq / self.count - mean ** 2, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist()}


class BuildReport:
  """Counts what a build wrote and skipped (reported and stored in metadata)."""

  def __init__(self):
    self.written = collections.Counter()
    self.skipped = collections.Counter()
    self.skipped_files: list[str] = []
    self.notes = collections.Counter()

  def wrote(self, split: str) -> None:
    self.written[split] += 1

  def skip(self, error: BadInputError) -> None:
    self.skipped[error.reason] += 1
    if len(self.skipped_files) < MAX_LISTED_SKIPS:
      self.skipped_files.append(str(error))

  def note(self, what: str) -> None:
    self.notes[what] += 1

  def to_dict(self) -> dict[str, Any]:
    return {"written": dict(self.written), "skipped": dict(self.skipped),
            "skipped_total": int(sum(self.skipped.values())),
            "skipped_files": list(self.skipped_files),
            "notes": dict(self.notes)}


def check_finite(image: np.ndarray, where: str) -> None:
  """Raises BadInputError for NaN or infinite pixels."""
  finite = np.isfinite(image)
  if not finite.all():
    bad = int(image.size - finite.sum())
    raise BadInputError(where, f"{bad} of {image.size} pixels are NaN or "
                        "infinite", "finite pixel values", reason="non_finite")


def guarded(items: Iterable, make_example: Callable, report: BuildReport,
            skip_bad: bool, catch: type = BadInputError) -> Iterator:
  """Yields make_example(item) for each item; a `catch` error (one naming the bad file)
  is re-raised with a hint, or (skip_bad) counted in `report` and skipped."""
  for item in items:
    try:
      example = make_example(item)
    except catch as error:
      if not skip_bad:
        raise error.with_skip_hint() from None
      report.skip(error)
      continue
    yield example


def abspath(path) -> str:
  return os.path.abspath(os.path.expanduser(os.fspath(path)))
