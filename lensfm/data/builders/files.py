"""TFDS builder `files`: your own labelled (or partly labelled, or unlabelled) image files.

  --config.data.source=tfds --config.data.name=files/NAME --config.data.manual_dir=PATH
  python -m lensfm.data.build files/NAME --manual_dir=PATH [--builder_args='{...}']

NAME is yours (letters, digits, '_', '.', '-'): the build lives in
<data_dir>/files/NAME/<version>. One NAME holds one PATH: asking for files/NAME from
another PATH whose files differ is an error that says so (nothing is replaced); the same
PATH with changed files is rebuilt (the old build stays until the new one is complete).

PATH is a folder (`DIR/<class>/*`, `DIR/{train,val,test}/<class>/*`) or a CSV catalogue;
`files_source.py` says how rows, labels, targets, extra columns and splits are read.

Files: .npy (never unpickled; (H, W), (H, W, C) or (C, H, W)), FITS (.fits, .fit, .fts,
.fits.gz, .fz: the first image HDU, or config.data.hdu: an index or EXTNAME, a
comma-separated list of them or 'all' for one band per extension; a 3-D HDU is C bands),
PNG/JPEG (grey: 1 band, else RGB: 3). Pixel scale, per example: a catalogue row's
pixel_scale cell if it has one, else config.data.source_pixel_scale if set, else the FITS
file's WCS (a FITS file with none of them is an error naming the flag and the column);
.npy and pictures carry none: a dataset of them without either has no pixel scale and
the pipeline asks for source_pixel_scale (or the column) at read time.

Bands: an (H, W, C) array carries C bands in order; config.data.bands='g,r,i' names them
(default band_0, ...; red, green, blue for RGB pictures; path_<band> columns name their
own). Every example must have the same bands; a band count that differs is an error
naming the file.

Sizes: images of one size (and pixel scale) are stored as they are. Mixed sizes are stored
on one grid: the side of the most common size (its larger side when not square) at its
pixel scale; the others are mapped onto it by exact pixel-overlap area (`lensfm.data.grid`,
crop or pad with re-drawn sky, the field of view kept per pixel scale; files without a
pixel scale are taken to share one). The build summary says so in one line.

Features: image float32 (H, W, C); label (ClassLabel when there are classes, else int64;
-1 = no label); one float32 per target (NaN = no value); filename and every extra
catalogue column as strings (the input pipeline drops strings from batches).
metadata.json: pixel_scale, class_names, bands, targets, extra_columns, pixel_stats
(per-channel mean/std of the stored train images), grid, build_args, report.

Bad files (missing, unreadable, wrong shape or bands, bands of different sizes, no HDU or
WCS asked for, NaN or infinite pixels) raise `BadFileError` (a `UserError`), one line naming
the file or catalogue line and what was expected; with skip_bad (config.data.skip_bad,
--skip_bad) they are skipped, counted and listed instead. Catalogue mistakes (a missing
column, an empty path cell, a bad label, split or target cell) are always errors.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import re
from typing import Any, Optional

from etils import epath
import jax
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from lensfm import errors
from lensfm.data import grid as grid_lib
from lensfm.data import image_files
from lensfm.data.builders import base
from lensfm.data.builders import files_source

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Content-deciding arguments, their defaults, and the config.data fields that give them.
DEFAULT_ARGS = {"label": None, "targets": [], "bands": [], "hdu": None,
                "source_pixel_scale": None, "require_labels": False, "seed": 0,
                "validation_fraction": 0.1, "test_fraction": 0.1}
CONFIG_FIELDS = {"label": "label", "targets": "targets", "bands": "bands", "hdu": "hdu",
                 "source_pixel_scale": "source_pixel_scale",
                 "require_labels": "require_labels", "seed": "split_seed",
                 "validation_fraction": "validation_fraction",
                 "test_fraction": "test_fraction"}
_SPLIT_ARGS = ("seed", "validation_fraction", "test_fraction")


class BadFileError(errors.UserError):
  """A file or catalogue row the builder cannot turn into an example (names it)."""

  def __init__(self, message: str, reason: str = "bad_file"):
    self.reason = reason
    super().__init__(message)

  def with_skip_hint(self) -> "BadFileError":
    return BadFileError(str(self).rstrip(".") + "; set config.data.skip_bad=True "
                        "(--skip_bad) to skip such files instead.", self.reason)


@dataclasses.dataclass(eq=False)
class FilesConfig(tfds.core.BuilderConfig):
  """files/NAME: any NAME (see the module docstring)."""


def config_for(name: str) -> FilesConfig:
  if not NAME_PATTERN.match(name or ""):
    raise errors.UserError(f"files/{name}: the name after 'files/' must be letters, digits, "
                           "'_', '.' or '-' (e.g. files/my_lenses); it names the build.")
  return FilesConfig(name=name, description="Your own image files (lensfm `files`).")


def suggest_name(manual_dir: str) -> str:
  """A files/NAME for a source: its folder or catalogue name, made valid."""
  stem = os.path.basename(os.path.normpath(manual_dir or "")).rsplit(".csv", 1)[0]
  stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("_.-")
  return stem or "my_files"


def _listed(value) -> list[str]:
  if value is None or value == "":
    return []
  items = value.split(",") if isinstance(value, str) else list(value)
  return [str(v).strip() for v in items if str(v).strip()]


def normalize_args(given: Optional[dict]) -> dict[str, Any]:
  """The arguments asked for, in stored form (lists, floats); unknown names are an error."""
  given = dict(given or {})
  unknown = sorted(set(given) - set(DEFAULT_ARGS))
  if unknown:
    raise errors.UserError(f"files builder arguments {unknown} are unknown; expected some of "
                           f"{sorted(DEFAULT_ARGS)}."
                           f"{errors.did_you_mean(unknown[0], DEFAULT_ARGS)}")
  out = {}
  for key, value in given.items():
    if value is None:
      continue
    if key in ("targets", "bands"):
      value = _listed(value)
    elif key in ("source_pixel_scale", "validation_fraction", "test_fraction"):
      value = float(value)
    elif key == "seed":
      value = int(value)
    elif key == "require_labels":
      value = bool(value)
    elif key == "hdu":
      value = str(value)
    out[key] = value
  return out


def args_from_config(data_config) -> dict[str, Any]:
  """The builder arguments config.data sets (empty fields are not set)."""
  given = {}
  for key, field in CONFIG_FIELDS.items():
    value = data_config.get(field, None)
    if value not in (None, "", (), []) and not (key == "source_pixel_scale" and not value):
      given[key] = value
  return normalize_args(given)


# -- reading one row -----------------------------------------------------------------------


def _bad(row: files_source.Row, error, reason: str = "bad_file") -> BadFileError:
  """A BadFileError naming the row (the catalogue line, or the file)."""
  text = str(error)
  for path in row.files:
    if text.startswith(f"{path}: "):
      text = text[len(path) + 2:]
      if row.where != path and len(row.files) > 1:
        text = f"{os.path.basename(path)}: {text}"
  if isinstance(error, errors.MissingFileError):
    reason = "missing_file"
    missing = next((p for p in row.files if not os.path.isfile(p)), row.files[0])
    text = (f"{missing} does not exist; expected an image file (catalogue paths are "
            "relative to the catalogue)")
  return BadFileError(f"{row.where}: {text.rstrip('.')}.", reason)


def probe(row: files_source.Row, hdu, channels: Optional[int]
          ) -> tuple[tuple[int, int, int], Optional[float]]:
  """((H, W, C), pixel scale from the WCS or None) of a row, reading headers only."""
  try:
    if len(row.files) == 1:
      shape, scale = image_files.read_any(row.files[0], hdu=hdu, read=False)
      return image_files.hwc_shape(shape, row.files[0], channels), scale
    shapes, scale = [], None
    for path in row.files:
      shape, band_scale = image_files.read_any(path, hdu=hdu, read=False)
      shapes.append(image_files.hwc_shape(shape, path, 1))
      scale = band_scale if scale is None else scale
  except errors.UserError as e:
    error = _bad(row, e)
    if (channels or 1) > 1 and hdu is None and "has shape" in str(e) and \
        row.files[0].lower().endswith(image_files.FITS_EXTENSIONS):
      error = BadFileError(str(error).rstrip(".") + " (config.data.hdu='all' reads one band "
                           "per FITS extension).", error.reason)
    raise error from None
  if len({s[:2] for s in shapes}) > 1:
    sizes = ", ".join(f"{os.path.basename(p)} {s[0]}x{s[1]}"
                      for p, s in zip(row.files, shapes))
    raise BadFileError(f"{row.where}: its bands have different sizes ({sizes}); expected one "
                       "size for every band.", "band_sizes")
  return shapes[0][:2] + (len(shapes),), scale


def read(row: files_source.Row, hdu, channels: int) -> np.ndarray:
  """float32 (H, W, C) of a row, checked finite."""
  try:
    if len(row.files) == 1:
      array, _ = image_files.read_any(row.files[0], hdu=hdu)
      image = image_files.to_bands(array, row.files[0], channels)
    else:
      image = np.concatenate([image_files.to_bands(image_files.read_any(p, hdu=hdu)[0], p, 1)
                              for p in row.files], axis=-1)
  except errors.UserError as e:
    raise _bad(row, e) from None
  finite = np.isfinite(image)
  if not finite.all():
    raise BadFileError(f"{row.where}: {int(image.size - finite.sum())} of {image.size} "
                       "pixels are NaN or infinite; expected finite pixel values.",
                       "non_finite")
  return image


# -- the plan: rows per split, their probes, the stored grid -------------------------------


@dataclasses.dataclass
class Plan:
  source: files_source.Source
  splits: dict[str, list]          # split -> [(row, (H, W, C), scale)]
  shape: tuple[int, int, int]      # What is stored.
  pixel_scale: Optional[float]
  bands: list[str]
  splits_from: str                 # 'folders' | 'split column' | 'seeded'
  note: str = ""                   # The mixed-sizes line, if any.
  moved: int = 0                   # Images mapped onto the stored grid.


# What a row without a pixel scale can be given (said by every error about one).
SCALE_HINT = ("set config.data.source_pixel_scale (arcsec/pixel) for every file, or give "
              "a catalogue a pixel_scale column (arcsec/pixel per row)")


def pixel_scale_of(row: files_source.Row, fixed: Optional[float],
                   from_file: Optional[float]) -> Optional[float]:
  """A row's arcsec/pixel: its pixel_scale cell, else config.data.source_pixel_scale, else
  the file's FITS WCS (None: it has none)."""
  return row.pixel_scale or fixed or from_file


def _scale_key(scale: Optional[float]) -> Optional[float]:
  return None if scale is None else float(f"{scale:.6g}")


def make_plan(manual_dir: str, args: dict, report: base.BuildReport, skip_bad: bool,
              name: str) -> Plan:
  source = files_source.find(manual_dir, label=args["label"], targets=args["targets"],
                             bands=args["bands"], require_labels=args["require_labels"])
  by_split = files_source.splits(source, seed=args["seed"],
                                 validation_fraction=args["validation_fraction"],
                                 test_fraction=args["test_fraction"])
  hdu = args["hdu"]
  given_bands = args["bands"] or source.band_names or []
  channels = len(given_bands) or None
  fixed_scale = args["source_pixel_scale"]

  def probed(row):
    shape, scale = probe(row, hdu, channels)
    is_fits = row.files[0].lower().endswith(image_files.FITS_EXTENSIONS)
    scale = pixel_scale_of(row, fixed_scale, scale)
    if is_fits and scale is None:
      raise BadFileError(f"{row.where}: has no celestial WCS (CD or CDELT keywords) to give "
                         f"its pixel scale; expected one, or {SCALE_HINT}.", "no_wcs")
    return row, shape, _scale_key(scale)

  splits = {split: list(base.guarded(rows, probed, report, skip_bad, BadFileError))
            for split, rows in by_split.items()}
  splits = {k: v for k, v in _consistent(splits, channels, report, skip_bad).items() if v}
  every = [p for probes in splits.values() for p in probes]
  if not every:
    raise errors.UserError(f"{manual_dir}: no usable image; all {len(source.rows)} were "
                           f"skipped {dict(report.skipped)}, e.g. {report.skipped_files[0]}")
  shape, scale, note, moved = _grid(every, name)
  bands = given_bands or (["red", "green", "blue"] if shape[2] == 3 and all(
      r.files[0].lower().endswith(image_files.PICTURE_EXTENSIONS) for r, _, _ in every)
                          else [f"band_{k}" for k in range(shape[2])])
  splits_from = ("seeded" if not source.has_splits else
                 "folders" if source.kind == "folder" else "split column")
  return Plan(source, splits, shape, scale, bands, splits_from, note, moved)


def _consistent(splits: dict, channels: Optional[int], report, skip_bad: bool) -> dict:
  """Every row has the same band count (config.data.bands' when given, else the most
  common), and a pixel scale if any row has one."""
  every = [p for probes in splits.values() for p in probes]
  counts = collections.Counter(shape[2] for _, shape, _ in every)
  want = channels or (counts.most_common(1)[0][0] if counts else 1)
  with_scale = next((row for row, _, scale in every if scale is not None), None)

  def check(probed):
    row, shape, scale = probed
    if shape[2] != want:
      raise BadFileError(f"{row.where}: has {shape[2]} band(s); expected {want} like the "
                         "other files (config.data.bands names them).", "bad_bands")
    if scale is None and with_scale is not None:
      raise BadFileError(f"{row.where}: has no pixel scale, but {with_scale.where} has one "
                         f"(FITS WCS or pixel_scale cell); expected every file to have one, "
                         f"or {SCALE_HINT}.", "no_wcs")
    return probed

  return {split: list(base.guarded(probes, check, report, skip_bad, BadFileError))
          for split, probes in splits.items()}


def _grid(every: list, name: str) -> tuple[tuple[int, int, int], Optional[float], str, int]:
  """(stored shape, pixel scale, note, images to map): the most common (size, scale),
  ties to the larger."""
  groups = collections.Counter((shape, scale) for _, shape, scale in every)
  (shape, scale), _ = max(groups.items(),
                          key=lambda kv: (kv[1], kv[0][0][0] * kv[0][0][1], kv[0][1] or 0))
  if len(groups) == 1:
    return shape, scale, "", 0
  side = max(shape[:2])
  moved = sum(n for (s, sc), n in groups.items() if (s[:2], sc) != ((side, side), scale))
  at = f' at {scale:g}"/px' if scale else ""
  note = (f"{name} has images of {len(groups)} sizes/pixel scales: stored at {side}x{side}"
          f"{at} (the most common size); images mapped onto it by pixel-overlap area "
          "(lensfm.data.grid, fields of view kept)")
  return (side, side, shape[2]), scale, note, moved


# -- the builder ---------------------------------------------------------------------------


class Files(tfds.core.GeneratorBasedBuilder):
  """Your own image files (see the module docstring)."""

  name = "files"
  code_path = epath.Path(__file__)  # As deeplense: TFDS's own lookup needs extras.
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = []  # Any name: `config_for`.
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass your folder or CSV catalogue as manual_dir."
  # Hooks read by lensfm.data.build.
  ANY_CONFIG = staticmethod(config_for)
  ONE_SOURCE_PER_NAME = True
  fingerprint_files = staticmethod(files_source.fingerprint_files)

  def __init__(self, *, config=None, manual_dir: Optional[str] = None,
               builder_args: Optional[dict] = None, skip_bad: bool = False,
               progress: bool = True, **kwargs):
    if not manual_dir:
      raise errors.UserError("files/NAME needs config.data.manual_dir (--manual_dir): your "
                             "folder of images or CSV catalogue.")
    config = config_for(config) if isinstance(config, str) else config
    self._manual_dir = base.abspath(manual_dir)
    self._args = {**DEFAULT_ARGS, **normalize_args(builder_args)}
    self._skip_bad = bool(skip_bad)
    self._progress = progress
    self.report = base.BuildReport()
    self.plan = make_plan(self._manual_dir, self._args, self.report, self._skip_bad,
                          f"files/{config.name}")
    if self.plan.note:
      self.report.notes[self.plan.note] = self.plan.moved
    self._stats = base.PixelStats()
    with _quiet_custom_config():
      super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    source = self.plan.source
    features = {
        "image": tfds.features.Tensor(shape=self.plan.shape, dtype=np.float32),
        "label": (tfds.features.ClassLabel(names=source.class_names)
                  if source.class_names else tfds.features.Scalar(dtype=np.int64)),
        "filename": tfds.features.Text()}
    features.update({t: tfds.features.Scalar(dtype=np.float32) for t in source.targets})
    features.update({e: tfds.features.Text() for e in source.extras})
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "label"), metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split, probes)
            for split, probes in self.plan.splits.items()}

  def _generate_examples(self, split: str, probes):
    probes = tqdm.tqdm(probes, desc=f"files/{self.builder_config.name} {split}",
                       unit="file", disable=not self._progress, mininterval=1.0)
    for key, example in base.guarded(probes, self._example, self.report,
                                         self._skip_bad, BadFileError):
      self.report.wrote(split)
      if split == "train":
        self._stats.add(example["image"])
      yield key, example
    if not self.report.written[split]:
      raise errors.UserError(
          f"files/{self.builder_config.name}: every file of the {split} split was skipped "
          f"{dict(self.report.skipped)}, e.g. {self.report.skipped_files[-1]}")
    self._write_metadata()

  def _example(self, probed):
    row, shape, scale = probed
    image = read(row, self._args["hdu"], shape[2])
    if image.shape != self.plan.shape or scale != self.plan.pixel_scale:
      image = _to_grid(image, scale or 1.0, self.plan.shape[0], self.plan.pixel_scale or 1.0)
    example = {"image": image, "label": row.label, "filename": row.filename,
               **{t: np.float32(v) for t, v in row.targets.items()}, **row.extras}
    return row.where, example

  def build_args(self) -> dict:
    """What decides the content (compared when an existing build is reused)."""
    args = dict(self._args)
    if self.plan.splits_from != "seeded":
      for key in _SPLIT_ARGS:
        del args[key]
    return args

  def _write_metadata(self):
    # Called after each split: the last call, after the last split, wins.
    source = self.plan.source
    self.info.metadata.update({
        "pixel_scale": self.plan.pixel_scale, "class_names": list(source.class_names),
        "bands": list(self.plan.bands), "targets": list(source.targets),
        "extra_columns": dict(source.extras), "pixel_stats": self._stats.result(),
        "grid": {"shape": list(self.plan.shape), "note": self.plan.note},
        "layout": {"kind": source.kind, "splits_from": self.plan.splits_from},
        "build_args": self.build_args(), "manual_dir": self._manual_dir,
        "report": self.report.to_dict()})


@contextlib.contextmanager
def _quiet_custom_config():
  """TFDS warns of every config not in BUILDER_CONFIGS; here any name is one."""
  def keep(record):
    return "Using custom data configuration" not in record.getMessage()
  logger = logging.getLogger("absl")
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


def _to_grid(image: np.ndarray, src_scale: float, size: int, scale: float) -> np.ndarray:
  """One image mapped onto the stored grid (crop or pad with re-drawn sky, area-exact)."""
  return np.asarray(_grid_map(float(src_scale), int(size), float(scale))(image), np.float32)


@functools.lru_cache(maxsize=None)
def _grid_map(src_scale: float, size: int, scale: float):
  """Compiled once per scale pair (and per source shape, by jit)."""
  return jax.jit(lambda image: grid_lib.map_to_grid(
      image, src_scale, size, scale, key=grid_lib.content_key(image)))


Builder = Files
