"""What a `files` dataset is made of: the rows of a folder or a CSV catalogue, and splits.

A folder is `DIR/<class>/*` or `DIR/{train,val|validation,test}/<class>/*` (class names,
and their number, from the folders, sorted; label k is the k-th name). Image files
directly in DIR (or in a split folder) with no class folders are unlabelled (label -1).

A catalogue is a CSV file (a header line, then one row per example):
  path            the image file, relative to the catalogue (or absolute); or
  path_<band>     one file per band, e.g. path_g, path_r, path_i (band order: the
                  columns', or config.data.bands');
  label           (config.data.label names another column) a class name or an integer
                  class index; an empty cell is no label (-1). Integers 0..K-1 are the
                  classes themselves; otherwise the sorted distinct names are;
  <targets>       numeric columns named by config.data.targets; empty cells are NaN;
  split           optional: train, validation (or val) or test for every row;
  pixel_scale     optional: the row's arcsec/pixel (positive; an empty cell is none), e.g.
                  for .npy cutouts, which carry no WCS;
  anything else   kept as a string feature per example (ids, RA/Dec, ...), named as the
                  column with characters other than letters, digits and '_' made '_'.
Every problem names the catalogue line (the header is line 1) and what was expected.

Without split folders or a split column, rows are split per label (stratified, -1 being
one group too) by a permutation seeded with `seed`: `round(test_fraction * n)` to test,
`round(validation_fraction * n)` to validation (0.1 and 0.1 by default), the rest train.
Own splits without a validation one (train and test folders) have validation_fraction of
train carved out the same way.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from typing import Optional

import numpy as np

from lensfm import errors
from lensfm.data import image_files
from lensfm.data import source_fingerprint

SPLIT_NAMES = {"train": "train", "test": "test", "val": "validation",
               "validation": "validation"}
RESERVED = ("image", "label", "filename", "mask")
CSV_EXTENSIONS = (".csv",)
PIXEL_SCALE_COLUMN = "pixel_scale"


@dataclasses.dataclass
class Row:
  """One example to be: its file(s), where an error about it points, what it is."""
  files: tuple[str, ...]          # One file (any bands), or one file per band.
  where: str                      # The file, or '<catalogue> line N (<file>)'.
  filename: str                   # As written in the catalogue, or relative to the folder.
  label: int = -1
  split: Optional[str] = None
  targets: dict = dataclasses.field(default_factory=dict)  # name -> float (NaN = none)
  extras: dict = dataclasses.field(default_factory=dict)   # feature name -> str
  pixel_scale: Optional[float] = None  # arcsec/pixel from a pixel_scale column.
  cells: dict = dataclasses.field(default_factory=dict)    # column -> cell, as written


@dataclasses.dataclass
class Source:
  kind: str                       # 'folder' | 'catalogue'
  rows: list[Row]
  class_names: list[str]
  band_names: Optional[list[str]] = None   # From path_<band> columns.
  targets: list[str] = dataclasses.field(default_factory=list)
  extras: dict = dataclasses.field(default_factory=dict)  # feature name -> column
  has_splits: bool = False
  columns: list[str] = dataclasses.field(default_factory=list)  # A catalogue's, in order.
  file_columns: list[str] = dataclasses.field(default_factory=list)  # path or path_<band>.

  def kept_columns(self) -> list[str]:
    """A catalogue's columns other than its file columns, in order (ids, RA/Dec, ...)."""
    return [c for c in self.columns if c not in self.file_columns]


def is_catalogue(path: str) -> bool:
  return os.path.isfile(path) and path.lower().endswith(CSV_EXTENSIONS)


def find(path: str, *, label: Optional[str] = None, targets=(), bands=(),
         require_labels: bool = False) -> Source:
  """The rows of the folder or catalogue at `path` (see the module docstring)."""
  if not os.path.exists(path):
    raise errors.MissingFileError(f"{path}: manual_dir does not exist; expected a folder "
                                  "of images or a CSV catalogue.")
  if os.path.isdir(path):
    if targets or label:
      raise errors.UserError(f"{path} is a folder: its labels are its class folders; "
                             "config.data.label and config.data.targets name catalogue "
                             "(CSV) columns.")
    return folder(path)
  if not is_catalogue(path):
    raise errors.UserError(f"{path}: manual_dir is a file but not a .csv catalogue; expected "
                           "a folder of images or a CSV catalogue.")
  return catalogue(path, label=label, targets=tuple(targets), bands=tuple(bands),
                   require_labels=require_labels)


# -- folders -------------------------------------------------------------------------------


def _subdirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path)
                if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))


def _images_in(path: str) -> list[str]:
  return sorted(os.path.join(path, f) for f in os.listdir(path)
                if not f.startswith(".") and image_files.is_any_image_file(f)
                and os.path.isfile(os.path.join(path, f)))


def folder(root: str) -> Source:
  present = {SPLIT_NAMES[d]: os.path.join(root, d) for d in _subdirs(root)
             if d in SPLIT_NAMES}
  has_splits = "train" in present
  roots = present if has_splits else {None: root}
  classes = sorted({c for r in roots.values() for c in _subdirs(r)})
  rows = []
  for split, split_root in sorted(roots.items(), key=lambda kv: str(kv[0])):
    class_dirs = _subdirs(split_root)
    if not class_dirs:  # Images with no class folders: unlabelled.
      rows += [_folder_row(p, root, -1, split) for p in _images_in(split_root)]
      continue
    for name in class_dirs:
      paths = _images_in(os.path.join(split_root, name))
      if not paths:
        raise errors.MissingFileError(
            f"{os.path.join(split_root, name)}: class folder holds no image files; "
            f"expected files ending in {', '.join(image_files.ANY_EXTENSIONS)}.")
      rows += [_folder_row(p, root, classes.index(name), split) for p in paths]
  if not rows:
    raise errors.MissingFileError(
        f"{root}: holds no image files; expected DIR/<class>/* or "
        f"DIR/{{train,val,test}}/<class>/* with files ending in "
        f"{', '.join(image_files.ANY_EXTENSIONS)}.")
  return Source("folder", rows, classes, has_splits=has_splits)


def _folder_row(path: str, root: str, label: int, split: Optional[str]) -> Row:
  return Row(files=(path,), where=path, filename=os.path.relpath(path, root),
             label=label, split=split)


# -- catalogues ----------------------------------------------------------------------------


def feature_name(column: str) -> str:
  name = re.sub(r"\W", "_", column.strip())
  return "_" + name if not name or name[0].isdigit() else name


def _read_csv(path: str) -> tuple[list[str], list[tuple[int, dict]]]:
  """(columns, [(line, {column: cell})]) of a CSV file with a header line."""
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      columns = [c.strip() for c in (reader.fieldnames or [])]
      rows = []
      for cells in reader:
        if None in cells:
          raise errors.UserError(f"{path} line {reader.line_num}: has more cells than the "
                                 f"header's {len(columns)} columns.")
        rows.append((reader.line_num, {c.strip(): (v or "").strip()
                                       for c, v in cells.items()}))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise errors.UserError(f"{path}: cannot be read as a CSV catalogue ({e}).") from None
  if not columns:
    raise errors.UserError(f"{path}: is empty; expected a header line naming the columns "
                           "(path or path_<band>, label, ...).")
  return columns, rows


def path_columns(columns: list[str], bands=()) -> tuple[list[str], Optional[list[str]]]:
  """(the path column(s), band names from path_<band> columns or None)."""
  if "path" in columns:
    return ["path"], None
  by_band = {c[len("path_"):]: c for c in columns if c.startswith("path_")}
  if bands and by_band:
    return [by_band[b] for b in bands if b in by_band], list(bands)
  return list(by_band.values()), (list(by_band) or None)


def catalogue(path: str, *, label: Optional[str], targets: tuple, bands: tuple,
              require_labels: bool) -> Source:
  columns, cells = _read_csv(path)
  paths, band_names = path_columns(columns, bands)
  if not paths:
    raise errors.UserError(f"{path}: has no 'path' column and no 'path_<band>' columns; "
                           f"its columns are {columns}.")
  if band_names and bands and len(paths) != len(bands):
    missing = [b for b in bands if f"path_{b}" not in columns]
    raise errors.UserError(f"{path}: config.data.bands={','.join(bands)} but there is no "
                           f"column for {missing}; its columns are {columns}.")
  label_column = label or "label"
  if label and label not in columns:
    raise errors.UserError(f"{path}: has no label column {label!r} (config.data.label); "
                           f"its columns are {columns}.{errors.did_you_mean(label, columns)}")
  has_labels = label_column in columns
  for target in targets:
    if target not in columns:
      raise errors.UserError(f"{path}: has no target column {target!r} (config.data.targets);"
                             f" its columns are {columns}."
                             f"{errors.did_you_mean(target, columns)}")
  used = set(paths) | set(targets) | {label_column, "split", PIXEL_SCALE_COLUMN}
  if band_names:
    used |= {c for c in columns if c.startswith("path_")}
  extras = {feature_name(c): c for c in columns if c not in used}
  _check_names(path, [feature_name(t) for t in targets] + list(extras))
  class_names, to_label = _label_coding(
      path, [(n, c[label_column]) for n, c in cells] if has_labels else [])
  base = os.path.dirname(os.path.abspath(path))
  name = os.path.basename(path)
  rows = []
  for line, row in cells:
    where = f"{name} line {line}"
    files = []
    for column in paths:
      if not row[column]:
        raise errors.UserError(f"{where}: the {column} cell is empty; expected an image "
                               "file path (relative to the catalogue).")
      files.append(os.path.join(base, os.path.expanduser(row[column])))
    if require_labels and (not has_labels or not row[label_column]):
      raise errors.UserError(f"{where}: has no label (column {label_column!r}); expected a "
                             "class for every row (config.data.require_labels).")
    rows.append(Row(
        files=tuple(files), where=f"{where} ({row[paths[0]]})",
        filename=";".join(row[c] for c in paths),
        label=to_label(row[label_column]) if has_labels else -1,
        split=_split_of(row, where), targets={
            feature_name(t): _number(row[t], where, t) for t in targets},
        extras={f: row[c] for f, c in extras.items()},
        pixel_scale=_pixel_scale(row, where), cells=row))
  if not rows:
    raise errors.UserError(f"{path}: has a header but no rows.")
  file_columns = [c for c in columns if c in paths or (band_names and c.startswith("path_"))]
  return Source("catalogue", rows, class_names, band_names=band_names,
                targets=[feature_name(t) for t in targets], extras=extras,
                has_splits="split" in columns, columns=columns, file_columns=file_columns)


def _check_names(path: str, names: list[str]) -> None:
  seen = set()
  for name in names:
    if name in RESERVED or name in seen:
      raise errors.UserError(f"{path}: a column becomes the feature {name!r}, which is "
                             f"{'reserved' if name in RESERVED else 'taken twice'}; rename "
                             "the column.")
    seen.add(name)


def _label_coding(path: str, cells: list[tuple[int, str]]):
  """(class names, cell -> label): integer cells are class indices, names are sorted."""
  given = [(line, c) for line, c in cells if c]
  if given and all(re.fullmatch(r"[+-]?\d+", c) for _, c in given):
    values = {line: int(c) for line, c in given}
    bad = [(line, v) for line, v in values.items() if v < -1]
    if bad:
      raise errors.UserError(f"{os.path.basename(path)} line {bad[0][0]}: label {bad[0][1]} "
                             "is negative; expected a class index 0..K-1, -1 or empty for "
                             "no label.")
    count = max(values.values()) + 1
    return [str(k) for k in range(count)], lambda c: int(c) if c else -1
  names = sorted({c for _, c in given})
  return names, lambda c: names.index(c) if c else -1


def _split_of(row: dict, where: str) -> Optional[str]:
  if "split" not in row:
    return None
  split = SPLIT_NAMES.get(row["split"].lower())
  if split is None:
    raise errors.UserError(f"{where}: split {row['split']!r}; expected train, validation "
                           "(or val) or test.")
  return split


def _pixel_scale(row: dict, where: str) -> Optional[float]:
  cell = row.get(PIXEL_SCALE_COLUMN, "")
  value = _number(cell, where, PIXEL_SCALE_COLUMN)
  if math.isnan(value):
    return None
  if not (math.isfinite(value) and value > 0):
    raise errors.UserError(f"{where}: {PIXEL_SCALE_COLUMN} is {cell!r}; expected a positive "
                           "number (arcsec/pixel) or an empty cell (none).")
  return value


def _number(cell: str, where: str, column: str) -> float:
  if not cell:
    return math.nan
  try:
    return float(cell)
  except ValueError:
    raise errors.UserError(f"{where}: {column} is {cell!r}; expected a number or an empty "
                           "cell (no value).") from None


# -- splits and fingerprints ---------------------------------------------------------------


def splits(source: Source, *, seed: int, validation_fraction: float,
           test_fraction: float) -> dict[str, list[Row]]:
  """{split: rows}: the source's own splits, else a seeded stratified split. Own splits
  without a validation one (train + test folders) get it carved from train, stratified,
  so that fine-tuning can select and stop on it."""
  if not (0 <= validation_fraction and 0 <= test_fraction
          and validation_fraction + test_fraction < 1):
    raise errors.UserError(f"validation_fraction={validation_fraction} and test_fraction="
                           f"{test_fraction} must be >= 0 with a sum below 1.")
  if source.has_splits:
    out = {}
    for row in source.rows:
      out.setdefault(row.split, []).append(row)
    if "validation" not in out and "train" in out and validation_fraction > 0:
      carved = _stratified(out.pop("train"), seed, validation_fraction, 0.0)
      out = {**carved, **out}
    return out
  return _stratified(source.rows, seed, validation_fraction, test_fraction)


def _stratified(rows: list[Row], seed: int, validation_fraction: float,
                test_fraction: float) -> dict[str, list[Row]]:
  rng = np.random.default_rng(seed)
  out = {"train": [], "validation": [], "test": []}
  for label in sorted({r.label for r in rows}):  # Fixed order: a stable stream.
    group = [r for r in rows if r.label == label]
    order = rng.permutation(len(group))
    num_test = int(round(test_fraction * len(group)))
    num_val = int(round(validation_fraction * len(group)))
    for rank, index in enumerate(order):
      split = ("test" if rank < num_test else
               "validation" if rank < num_test + num_val else "train")
      out[split].append(group[index])
  return {k: v for k, v in out.items() if v}


def fingerprint_files(path: str) -> dict[str, list[int]]:
  """{path: [size, mtime_ns]} of what a build from `path` reads: every file under a
  folder; a catalogue and the files it names (relative to the catalogue's folder)."""
  if os.path.isdir(path):
    return source_fingerprint.of_directory(path)
  base = os.path.dirname(os.path.abspath(path))
  files = {}
  try:
    columns, cells = _read_csv(path)
  except errors.UserError:
    cells, columns = [], []
  paths = [c for c in columns if c == "path" or c.startswith("path_")]
  for name in [os.path.abspath(path)] + [
      os.path.join(base, os.path.expanduser(row[c])) for _, row in cells for c in paths
      if row[c]]:
    if os.path.isfile(name):
      info = os.stat(name)
      files[os.path.relpath(name, base)] = [info.st_size, info.st_mtime_ns]
  return files
