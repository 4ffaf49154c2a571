"""Builds the lensfm TFDS datasets (ArrayRecord, no TensorFlow), safely.

Command line (a progress bar per split; the summary names the output path):

  # The released DeepLense files (configs model_i, model_ii, model_iii,
  # common_test; see lensfm/data/builders/deeplense.py for the layouts):
  python -m lensfm.data.build deeplense/model_ii --manual_dir=DIR --data_dir=DIR

  # Your own folder or CSV catalogue, under a name of yours (builders/files.py):
  python -m lensfm.data.build files/NAME --manual_dir=PATH --data_dir=DIR \
    [--builder_args='{"label": "class", "targets": "z", "bands": "g,r,i"}']

  # A fixed simulated set (configs: one per recipe, see builders/lensfm_sim.py):
  python -m lensfm.data.build lensfm_sim/model_ii --num_examples=N --data_dir=DIR

  Options: --seed (seeded splits / simulation), --test_fraction (deeplense,
  when the files have no train/test directories), --num_test_examples and
  --recipe_overrides='{"num_pix": 32}' (lensfm_sim), --skip_bad (skip and count
  bad files instead of failing), --overwrite (replace an existing build),
  --no_progress. --data_dir defaults to $TFDS_DATA_DIR or ~/tensorflow_datasets.

From Python (e.g. an evaluation that builds its data on first use):

  result = ensure_built('deeplense/model_ii', data_dir, manual_dir=DIR)
  result.path  # <data_dir>/deeplense/model_ii/1.0.0, readable with
               # tfds.data_source('deeplense/model_ii', data_dir=data_dir)

Safety: a dataset is built in a temporary directory inside data_dir and moved
into place only when complete, so a failed or killed build never leaves a
partial dataset where a good one is expected (a killed build leaves only a
`.incomplete.*` directory, removed by the next build of the same dataset).
With --overwrite the old build stays in place until the new one is complete.
An existing build is reused if its stored build arguments match the requested
ones (arguments not given are not compared); otherwise it is an error unless
overwrite=True. Each build records its source's fingerprint (builder, version,
arguments; for deeplense every file under manual_dir with its size and
modification time, see source_fingerprint.py): a build asked for with a
manual_dir whose files differ (or a build that records none) is rebuilt, the
old one staying in place until the new one is complete; a manual_dir that does
not exist is an error even when a build exists. If several processes build the same dataset at once, the first
to finish wins and the others reuse its result.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import io
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Optional

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

from lensfm import compilation_cache
from lensfm import errors
from lensfm.data import builders
from lensfm.data import source_fingerprint
from lensfm.data.builders import base
from lensfm.data.builders import files as files_builder
from lensfm.data.builders import lensfm_sim

INCOMPLETE_PREFIX = ".incomplete."
# Labels of a split in record order, so labels_per_class subsets need not read images.
LABEL_INDEX_FILE = "lensfm_labels-{split}.npy"
_READ_CHUNK = 1024


@dataclasses.dataclass
class BuildResult:
  """What `ensure_built` did."""
  name: str
  path: str                    # <data_dir>/<dataset>/<config>/<version>
  built: bool                  # False if an existing build was reused.
  num_examples: dict[str, int]  # Per split.
  report: dict[str, Any]       # Written / skipped counts (see builders.base).
  seconds: float
  rebuilt_because: str = ""    # Why an existing build was replaced (its source changed).

  def summary(self) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(self.num_examples.items()))
    lines = [f"{'Built' if self.built else 'Reused'} {self.name}: {counts} "
             f"examples at {self.path} ({self.seconds:.1f} s)."]
    if self.rebuilt_because:
      lines.append(f"Rebuilt: the previous build's source differs: {self.rebuilt_because}.")
    skipped = self.report.get("skipped_total", 0)
    if skipped:
      lines.append(f"Skipped {skipped} bad files "
                   f"{self.report.get('skipped', {})}; first ones:")
      lines += [f"  {f}" for f in self.report.get("skipped_files", [])]
    for note, count in self.report.get("notes", {}).items():
      lines.append(f"Note: {note}: {count}")
    return "\n".join(lines)


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR",
                        os.path.join("~", "tensorflow_datasets"))


def parse_name(name: str) -> tuple[str, str]:
  """'deeplense/model_ii' -> ('deeplense', 'model_ii'), checked."""
  dataset, _, config = name.partition("/")
  builder = builders.builder_class(dataset)
  any_config = getattr(builder, "ANY_CONFIG", None)
  if any_config is not None:  # files/NAME: any NAME the builder accepts.
    any_config(config)
    return dataset, config
  configs = [c.name for c in builder.BUILDER_CONFIGS]
  if config not in configs:
    raise ValueError(f"Unknown config {config!r} in {name!r}; {dataset} has "
                     f"{configs}.")
  return dataset, config


def dataset_path(data_dir: str, name: str) -> str:
  """Where `name` lives (or will live) under data_dir."""
  dataset, config = parse_name(name)
  version = str(builders.builder_class(dataset).VERSION)
  return os.path.join(base.abspath(data_dir), dataset, config, version)


def is_built(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "dataset_info.json"))


def read_metadata(path: str) -> dict[str, Any]:
  """The lensfm metadata (pixel_stats, build_args, report) of a build."""
  file = os.path.join(path, "metadata.json")
  if not os.path.isfile(file):
    return {}
  with open(file) as f:
    return json.load(f)


def requested_args(dataset: str, *, num_examples, num_test_examples, seed,
                   test_fraction, recipe_overrides,
                   builder_args: Optional[dict] = None) -> dict[str, Any]:
  """Content-deciding arguments to compare with a stored build (None = any)."""
  if dataset == "files":
    return files_builder.normalize_args({**({"seed": seed} if seed is not None else {}),
                                         **(builder_args or {})})
  if dataset == "deeplense":
    return {"seed": seed, "test_fraction": test_fraction}
  if num_test_examples is None and num_examples is not None:
    num_test_examples = lensfm_sim.default_num_test(num_examples)
  return {"num_examples": num_examples, "num_test_examples": num_test_examples,
          "seed": seed,
          "recipe_overrides": (json.loads(json.dumps(recipe_overrides))
                               if recipe_overrides is not None else None)}


def mismatched_args(stored: dict, requested: dict) -> dict[str, tuple]:
  """{arg: (stored, requested)} for the given args that differ."""
  return {k: (stored[k], v) for k, v in requested.items()
          if v is not None and k in stored and stored[k] != v}


@contextlib.contextmanager
def _tfds_progress_bars(enable: bool):
  """Our own per-split bars replace TFDS's (which know no totals)."""
  was = tqdm_utils._active  # pylint: disable=protected-access
  tfds.display_progress_bar(enable)
  try:
    yield
  finally:
    tfds.display_progress_bar(was)


def _remove_stale_incomplete(data_dir: str, dataset: str, config: str) -> None:
  """Removes temporary directories of killed builds of this dataset."""
  pattern = os.path.join(data_dir, f"{INCOMPLETE_PREFIX}{dataset}.{config}.*")
  for stale in glob.glob(pattern):
    # A directory younger than a day may belong to a build still running in
    # another process; leave it.
    if time.time() - os.path.getmtime(stale) > 24 * 3600:
      shutil.rmtree(stale, ignore_errors=True)


def _publish(built: str, final: str, overwrite: bool) -> bool:
  """Moves a complete build into place; False if another build got there."""
  os.makedirs(os.path.dirname(final), exist_ok=True)
  old = None
  if os.path.exists(final):
    if not overwrite:
      return False
    old = final + f".old.{os.getpid()}"
    os.rename(final, old)
  try:
    os.rename(built, final)
  except OSError:
    if old is not None:  # Put the old build back rather than leave nothing.
      os.rename(old, final)
      raise
    return False  # Someone else published first (same content by design).
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
  return True


def _copy_default_config_marker(tmp_root: str, data_dir: str,
                                dataset: str) -> None:
  """TFDS keeps `<dataset>/.config/metadata.json` (the default config name)."""
  source = os.path.join(tmp_root, dataset, ".config")
  target = os.path.join(data_dir, dataset, ".config")
  if os.path.isdir(source) and not os.path.exists(target):
    shutil.copytree(source, target, dirs_exist_ok=True)


def read_labels(source) -> np.ndarray:
  """All labels of a split, read in batched chunks."""
  labels = []
  for start in range(0, len(source), _READ_CHUNK):
    keys = list(range(start, min(start + _READ_CHUNK, len(source))))
    labels += [int(r["label"]) for r in source.__getitems__(keys)]
  return np.asarray(labels, np.int32)


def write_label_index(path: str, known: Optional[dict] = None) -> None:
  """Writes the labels of every split in record order (`LABEL_INDEX_FILE`),
  so labels_per_class subsets need not read every image. `known`: {split:
  labels in record order} that the builder kept (no re-reading), if any."""
  builder = tfds.builder_from_directory(path)
  for split, info in builder.info.splits.items():
    labels = (known or {}).get(split)
    if labels is None or len(labels) != info.num_examples:
      labels = read_labels(builder.as_data_source(split=split))
    np.save(os.path.join(path, LABEL_INDEX_FILE.format(split=split)), labels)


def _split_sizes(path: str) -> dict[str, int]:
  info = tfds.builder_from_directory(path).info
  return {name: int(split.num_examples) for name, split in info.splits.items()}


def ensure_built(name: str, data_dir: Optional[str] = None,
                 manual_dir: Optional[str] = None, *,
                 num_examples: Optional[int] = None,
                 num_test_examples: Optional[int] = None,
                 seed: Optional[int] = None,
                 test_fraction: Optional[float] = None,
                 recipe_overrides: Optional[dict] = None,
                 skip_bad: bool = False, overwrite: bool = False,
                 progress: bool = True,
                 builder_args: Optional[dict] = None) -> BuildResult:
  """Builds `name` ('deeplense/<config>' or 'lensfm_sim/<recipe>') unless an
  equivalent build exists; see the module docstring.

  Args:
    name: dataset/config.
    data_dir: root of the TFDS datasets (default $TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    manual_dir: deeplense: the directory of .npy files.
    num_examples, num_test_examples, recipe_overrides: lensfm_sim sizes and
      recipe options.
    seed: seeded split (deeplense) or simulation seed (lensfm_sim); default 0.
    test_fraction: deeplense seeded split; default 0.1.
    skip_bad: skip (and count) bad files instead of raising BadInputError.
    overwrite: rebuild even if a build exists (it stays until the new one is
      complete).
    progress: show progress bars.
    builder_args: files: label, targets, bands, hdu, source_pixel_scale, ...
      (builders/files.py, DEFAULT_ARGS).

  Returns:
    A BuildResult (path, whether it was built, examples per split, report).

  Raises:
    BadInputError: bad input files or directories (the message names them).
    ValueError: unknown name, or an existing build made with other arguments.
  """
  start = time.time()
  dataset, config = parse_name(name)
  data_dir = base.abspath(data_dir or default_data_dir())
  final = dataset_path(data_dir, name)
  requested = requested_args(
      dataset, num_examples=num_examples, num_test_examples=num_test_examples,
      seed=seed, test_fraction=test_fraction, recipe_overrides=recipe_overrides,
      builder_args=builder_args)

  source = _source(dataset, manual_dir, requested)
  rebuilt_because = ""
  if is_built(final) and not overwrite:
    stale = _stale(final, source)
    if not stale:
      return _reuse(name, final, requested, start)
    _check_one_source(dataset, name, final, source)
    rebuilt_because = "; ".join(stale)
    overwrite = True  # The old build stays until the new one is complete.

  os.makedirs(data_dir, exist_ok=True)
  _remove_stale_incomplete(data_dir, dataset, config)
  tmp_root = tempfile.mkdtemp(prefix=f"{INCOMPLETE_PREFIX}{dataset}.{config}.",
                              dir=data_dir)
  try:
    kwargs = {"skip_bad": skip_bad, "progress": progress,
              "seed": 0 if seed is None else seed}
    if dataset == "deeplense":
      kwargs.update(manual_dir=manual_dir, test_fraction=(
          0.1 if test_fraction is None else test_fraction))
    elif dataset == "files":  # Its arguments, seed included, are `requested`.
      kwargs = {"skip_bad": skip_bad, "progress": progress, "manual_dir": manual_dir,
                "builder_args": requested}
    else:
      kwargs.update(num_examples=num_examples,
                    num_test_examples=num_test_examples,
                    recipe_overrides=recipe_overrides)
    builder = builders.builder_class(dataset)(
        config=config, data_dir=tmp_root, file_format="array_record", **kwargs)
    # TFDS's own messages name the temporary directory: keep them quiet.
    with _tfds_progress_bars(False), contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    built_path = os.fspath(builder.data_path)
    write_label_index(built_path, getattr(builder, "record_labels", None))
    source["args"] = builder.build_args() if hasattr(builder, "build_args") else source["args"]
    source_fingerprint.write(built_path, source)
    report = builder.report.to_dict()
    _copy_default_config_marker(tmp_root, data_dir, dataset)
    if not _publish(built_path, final, overwrite):
      return _reuse(name, final, requested, start)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  return BuildResult(name=name, path=final, built=True,
                     num_examples=_split_sizes(final), report=report,
                     seconds=time.time() - start, rebuilt_because=rebuilt_because)


def _source(dataset: str, manual_dir: Optional[str], requested: dict) -> dict:
  """The fingerprint of what is asked for; a manual_dir that is gone is an error."""
  fingerprint_files = getattr(builders.builder_class(dataset), "fingerprint_files", None)
  if fingerprint_files is not None:  # files: a folder or a catalogue file.
    if manual_dir and not os.path.exists(os.path.expanduser(manual_dir)):
      raise errors.MissingFileError(f"{manual_dir}: manual_dir does not exist; expected "
                                    "a folder of images or a CSV catalogue.")
    fingerprint = source_fingerprint.make(
        dataset, str(builders.builder_class(dataset).VERSION), requested, None)
    if manual_dir:
      fingerprint["manual_dir"] = base.abspath(manual_dir)
      fingerprint["files"] = fingerprint_files(base.abspath(manual_dir))
    return fingerprint
  if manual_dir and not os.path.isdir(manual_dir):
    raise base.BadInputError(manual_dir, "manual_dir does not exist",
                             "the directory holding the source files",
                             reason="missing_dir")
  files_from = base.abspath(manual_dir) if dataset == "deeplense" and manual_dir else None
  return source_fingerprint.make(dataset, str(builders.builder_class(dataset).VERSION),
                                 requested, files_from)


def _check_one_source(dataset: str, name: str, path: str, source: dict) -> None:
  """A files/NAME build made from another PATH is not replaced by this one: one NAME,
  one source (a moved copy with the same files is reused, never gets here)."""
  if not getattr(builders.builder_class(dataset), "ONE_SOURCE_PER_NAME", False):
    return
  stored = (source_fingerprint.read(path) or {}).get("manual_dir")
  if stored and stored != source.get("manual_dir"):
    raise errors.UserError(
        f"{name} at {path} was built from {stored}, not from {source.get('manual_dir')} "
        f"(and their files differ). Give this source its own name, e.g. "
        f"--config.data.name={name.split('/')[0]}/"
        f"{files_builder.suggest_name(source.get('manual_dir', ''))}, or rebuild with "
        "--overwrite.")


def builds_from_files(name: str) -> bool:
  """Whether `name` is built on first use from config.data.manual_dir."""
  return name.partition("/")[0] in ("deeplense", "files")


def ensure_built_from_config(data_config, progress: bool = True) -> BuildResult:
  """`ensure_built` for config.data (name, data_dir, manual_dir, skip_bad and, for
  files/NAME, the builder arguments it sets: builders/files.py CONFIG_FIELDS)."""
  name = data_config.get("name", "")
  builder_args = (files_builder.args_from_config(data_config)
                  if name.startswith("files/") else None)
  return ensure_built(name, data_config.get("data_dir", None) or None,
                      data_config.get("manual_dir", None), progress=progress,
                      skip_bad=bool(data_config.get("skip_bad", False)),
                      builder_args=builder_args)


def _stale(path: str, source: dict) -> list[str]:
  """Why the build at `path` is not of `source` ([]: reuse it). Without a manual_dir
  there are no files to compare: the build is taken as it is."""
  if "files" not in source:
    return []
  stored = source_fingerprint.read(path)
  if stored is not None:  # Arguments are compared by _reuse (not given = any).
    stored = {**stored, "args": source["args"]}
  return source_fingerprint.differences(stored, source)


def _reuse(name: str, path: str, requested: dict, start: float) -> BuildResult:
  metadata = read_metadata(path)
  differ = mismatched_args(metadata.get("build_args", {}), requested)
  if differ:
    details = ", ".join(f"{k}={s!r} (asked {r!r})"
                        for k, (s, r) in differ.items())
    raise ValueError(
        f"{name} at {path} was built with {details}. Use another data_dir, "
        "or overwrite=True (--overwrite) to rebuild it.")
  return BuildResult(name=name, path=path, built=False,
                     num_examples=_split_sizes(path),
                     report=metadata.get("report", {}),
                     seconds=time.time() - start)


def _parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m lensfm.data.build",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", help="deeplense/<config>, files/<name> or lensfm_sim/<recipe>")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--manual_dir", default=None,
                      help="deeplense: directory of the .npy files; files: folder or CSV")
  parser.add_argument("--num_examples", type=int, default=None,
                      help="lensfm_sim: train examples")
  parser.add_argument("--num_test_examples", type=int, default=None,
                      help="lensfm_sim: test examples (default N // 10)")
  parser.add_argument("--seed", type=int, default=None)
  parser.add_argument("--test_fraction", type=float, default=None,
                      help="deeplense without train/test dirs (default 0.1)")
  parser.add_argument("--recipe_overrides", type=json.loads, default=None,
                      help='lensfm_sim: JSON, e.g. \'{"num_pix": 32}\'')
  parser.add_argument("--builder_args", type=json.loads, default=None,
                      help='files: JSON, e.g. \'{"label": "class", "bands": "g,r,i"}\'')
  parser.add_argument("--skip_bad", action="store_true")
  parser.add_argument("--overwrite", action="store_true")
  parser.add_argument("--no_progress", action="store_true")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = _parse_args(argv)
  compilation_cache.enable()  # The simulator compiles once per machine, not per build.
  try:
    result = ensure_built(
        args.name, args.data_dir, args.manual_dir,
        num_examples=args.num_examples,
        num_test_examples=args.num_test_examples, seed=args.seed,
        test_fraction=args.test_fraction,
        recipe_overrides=args.recipe_overrides, skip_bad=args.skip_bad,
        overwrite=args.overwrite, progress=not args.no_progress,
        builder_args=args.builder_args)
  except (ValueError, FileNotFoundError) as e:  # BadInputError included.
    print(f"error: {e}", file=sys.stderr)
    print("No dataset was written or changed.", file=sys.stderr)
    return 1
  print(result.summary())
  return 0


def exit_now(code: int) -> None:
  """Ends the command without the interpreter's teardown (freeing JAX's compiled programs
  and every module one by one), which costs a build command a noticeable share of its
  time; everything is written and closed by then, and the output streams are flushed."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


if __name__ == "__main__":
  exit_now(main())
