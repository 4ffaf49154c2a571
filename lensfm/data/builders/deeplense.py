"""TFDS builder `deeplense`: the released DeepLense simulations, from local files.

Nothing is downloaded: the builder reads what the user has (the "manual
directory"; the public DeepLenseSim code made them, see arXiv:1909.07346,
2008.12731 and 2112.12121).

Configs (label k means the same physics in every config):
  model_i, model_ii, model_iii: `<manual_dir>/<class>/<class>_sim_<id>.npy`,
      classes no_sub (label 0), cdm (1), axion (2). no_sub/cdm files hold a 2-D
      array (150x150 for Model I, whose pixels are integer photon counts; 64x64
      for II/III); axion files hold a pickled object array [image, mass_eV]
      (`np.load(..., allow_pickle=True)`; pickles can run code: only build from
      files you trust). An axion file holding a plain image is accepted with
      axion_mass 0 and counted in the report ('axion_mass_missing').
  common_test: the common evaluation set `<manual_dir>/{train,val}/{no,sphere,
      vort}/*.npy`, each (1, 150, 150); no (label 0), sphere (1), vort (2);
      axion_mass is 0 (the files do not carry it).
Images may be stored as (H, W), (1, H, W) or (H, W, 1); they are written as
float32 (H, W, 1), unnormalised (the input pipeline normalises).

Splits: if `manual_dir` has a `train/` directory (next to `test/`, `val/` or
`validation/`) holding the class directories, those are the splits ('train',
'test', 'validation'). Otherwise every class directory is split, per class
(stratified) by a permutation seeded with `seed`, into 'train' and 'test' with
`round(test_fraction * n)` test files.

Features: image float32 (H, W, 1); label ClassLabel; axion_mass float32 (eV,
0 unless axion); filename (path relative to manual_dir).

Bad input raises `BadInputError` naming the file and what was expected: a
missing manual_dir or class directory, a class directory with no .npy file, an
unreadable or truncated .npy, a wrong shape or dtype, NaN or infinite pixels, a
bad axion mass. With `skip_bad=True` bad FILES are skipped, counted and listed
in the report (missing/empty directories are always errors).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from lensfm.data.builders import base

NPY_MAGIC = b"\x93NUMPY"
# Directory names of the user's own splits -> TFDS split names.
USER_SPLIT_DIRS = {"train": "train", "test": "test", "val": "validation",
                   "validation": "validation"}


@dataclasses.dataclass(eq=False)
class DeepLenseConfig(tfds.core.BuilderConfig):
  """A released DeepLense layout."""
  image_size: int = 64
  pixel_scale: float = 0.101  # arcsec / pixel of the released files
  class_dirs: tuple[str, ...] = ("no_sub", "cdm", "axion")
  axion_dir: Optional[str] = "axion"  # Its files are pickled [image, mass].
  counts: bool = False  # Model I stores integer photon counts.


CONFIGS = [
    DeepLenseConfig(name="model_i", image_size=150, pixel_scale=0.05, counts=True,
                    description="Model I: 150x150, Gaussian PSF, Poisson "
                    "counts."),
    DeepLenseConfig(name="model_ii", image_size=64, pixel_scale=0.101,
                    description="Model II: 64x64, Euclid-like (0.101\"/px)."),
    DeepLenseConfig(name="model_iii", image_size=64, pixel_scale=0.08,
                    description="Model III: 64x64, HST-like (WFC3 F160W, 0.08\"/px)."),
    DeepLenseConfig(name="common_test", image_size=150, pixel_scale=0.05,
                    class_dirs=("no", "sphere", "vort"), axion_dir=None,
                    description="The common test set: train|val/{no,sphere,"
                    "vort}/*.npy, (1, 150, 150), min-max normalised."),
]


# -- reading one file --------------------------------------------------------------


def load_npy(path: str, allow_pickle: bool):
  """np.load with errors that name the file; checks the magic string first
  so that a non-.npy file is never unpickled."""
  try:
    with open(path, "rb") as f:
      magic = f.read(len(NPY_MAGIC))
  except OSError as e:
    raise base.BadInputError(path, f"cannot be read ({e})", "a readable file",
                             reason="unreadable") from e
  if magic != NPY_MAGIC:
    raise base.BadInputError(path, "is not a .npy file (bad magic string)",
                             "a file written by np.save", reason="unreadable")
  try:
    return np.load(path, allow_pickle=allow_pickle)
  except Exception as e:  # pylint: disable=broad-except
    # Truncated arrays raise ValueError, truncated pickles UnpicklingError or
    # EOFError; all mean the same to the user.
    raise base.BadInputError(
        path, f"cannot be loaded, truncated or corrupt ({type(e).__name__}: "
        f"{e})", "a complete .npy file", reason="unreadable") from e


def to_image(array, path: str, size: int, counts: bool) -> np.ndarray:
  """Checks an image array and returns it as float32 (size, size, 1)."""
  expected = (f"a real numeric array of shape ({size}, {size}), (1, {size}, "
              f"{size}) or ({size}, {size}, 1)")
  array = np.asarray(array)
  if array.dtype == object or not (np.issubdtype(array.dtype, np.integer) or
                                   np.issubdtype(array.dtype, np.floating)):
    raise base.BadInputError(path, f"has dtype {array.dtype}", expected +
                             (" (integer counts for Model I)" if counts else ""),
                             reason="bad_dtype")
  if array.shape in ((size, size), (1, size, size), (size, size, 1)):
    image = array.reshape(size, size, 1)
  else:
    raise base.BadInputError(path, f"has shape {array.shape}", expected,
                             reason="bad_shape")
  image = image.astype(np.float32)
  base.check_finite(image, path)
  return image


def to_axion_mass(value, path: str) -> float:
  try:
    mass = float(np.asarray(value, dtype=np.float64).reshape(()))
  except (TypeError, ValueError) as e:
    raise base.BadInputError(path, f"axion mass {value!r} is not a number",
                             "[image, mass_eV] with a positive finite mass",
                             reason="bad_mass") from e
  if not np.isfinite(mass) or mass <= 0:
    raise base.BadInputError(path, f"axion mass is {mass}",
                             "a positive finite mass in eV", reason="bad_mass")
  return mass


def read_example(path: str, config: DeepLenseConfig, is_axion: bool,
                 report: base.BuildReport) -> tuple[np.ndarray, float]:
  """-> (image float32 (H, W, 1), axion_mass eV)."""
  array = load_npy(path, allow_pickle=is_axion)
  if is_axion and array.dtype == object:
    if array.shape != (2,):
      raise base.BadInputError(
          path, f"is an object array of shape {array.shape}",
          "an object array [image, axion_mass_eV] of shape (2,)",
          reason="bad_shape")
    return (to_image(array[0], path, config.image_size, config.counts),
            to_axion_mass(array[1], path))
  image = to_image(array, path, config.image_size, config.counts)
  if is_axion:
    report.note("axion_mass_missing")
  return image, 0.0


# -- finding files -----------------------------------------------------------------


def _subdirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path)
                if os.path.isdir(os.path.join(path, d)))


def class_files(root: str, config: DeepLenseConfig) -> dict[str, list[str]]:
  """{class_dir: sorted .npy paths} under `root`; missing/empty is an error."""
  files = {}
  for class_dir in config.class_dirs:
    path = os.path.join(root, class_dir)
    if not os.path.isdir(path):
      raise base.BadInputError(
          path, "class directory is missing",
          f"one directory per class {list(config.class_dirs)} under {root} "
          f"(found {_subdirs(root)})", reason="missing_class")
    npys = sorted(os.path.join(path, f) for f in os.listdir(path)
                  if f.endswith(".npy"))
    if not npys:
      raise base.BadInputError(path, "class directory has no .npy files",
                               "<class>/<class>_sim_<id>.npy files",
                               reason="empty_class")
    files[class_dir] = npys
  return files


def find_splits(manual_dir: Optional[str], config: DeepLenseConfig, *,
                seed: int, test_fraction: float
                ) -> tuple[str, dict[str, list[tuple[str, int]]]]:
  """-> (layout, {split: [(path, label)]}); layout 'user_splits' or 'seeded'."""
  if not manual_dir:
    raise base.BadInputError("manual_dir", "is not set",
                             "the directory holding the DeepLense .npy files "
                             "(--manual_dir)", reason="missing_dir")
  if not os.path.isdir(manual_dir):
    raise base.BadInputError(manual_dir, "manual_dir does not exist",
                             "the directory holding the DeepLense .npy files",
                             reason="missing_dir")
  present = {USER_SPLIT_DIRS[d]: os.path.join(manual_dir, d)
             for d in _subdirs(manual_dir) if d in USER_SPLIT_DIRS}
  if "train" in present and not set(config.class_dirs) <= set(
      _subdirs(manual_dir)):
    splits = {}
    for split, root in sorted(present.items()):
      files = class_files(root, config)
      splits[split] = [(p, config.class_dirs.index(c))
                       for c, paths in files.items() for p in paths]
    return "user_splits", splits
  if config.name == "common_test":
    raise base.BadInputError(manual_dir, "has no train/ directory",
                             "train/ and val/ holding no/, sphere/, vort/",
                             reason="missing_class")
  return "seeded", seeded_split(class_files(manual_dir, config), config,
                                seed=seed, test_fraction=test_fraction)


def seeded_split(files: dict[str, list[str]], config: DeepLenseConfig, *,
                 seed: int, test_fraction: float
                 ) -> dict[str, list[tuple[str, int]]]:
  """Stratified train/test split of sorted file lists, seeded."""
  if not 0.0 <= test_fraction < 1.0:
    raise ValueError(f"test_fraction={test_fraction} must be in [0, 1).")
  rng = np.random.default_rng(seed)
  splits = {"train": [], "test": []}
  for class_dir in config.class_dirs:  # Fixed order: the rng stream is stable.
    paths = files[class_dir]
    label = config.class_dirs.index(class_dir)
    order = rng.permutation(len(paths))
    num_test = int(round(test_fraction * len(paths)))
    for rank, index in enumerate(order):
      splits["test" if rank < num_test else "train"].append(
          (paths[index], label))
  if not splits["test"]:
    del splits["test"]
  return splits


# -- the builder -------------------------------------------------------------------


class Deeplense(tfds.core.GeneratorBasedBuilder):
  """The released DeepLense simulations (see the module docstring)."""

  name = "deeplense"
  # TFDS derives this through `importlib_resources`, which its dependencies
  # do not always install; the answer is simply this file.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = CONFIGS
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass the directory of the unpacked DeepLense files as manual_dir "
      "(`python -m lensfm.data.build deeplense/model_ii --manual_dir=DIR`).")

  def __init__(self, *, manual_dir: Optional[str] = None, seed: int = 0,
               test_fraction: float = 0.1, skip_bad: bool = False,
               progress: bool = True, **kwargs):
    self._manual_dir = base.abspath(manual_dir) if manual_dir else None
    self._seed = int(seed)
    self._test_fraction = float(test_fraction)
    self._skip_bad = bool(skip_bad)
    self._progress = progress
    self.report = base.BuildReport()
    self._layout = None
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 1),
                                          dtype=np.float32),
            "label": tfds.features.ClassLabel(
                names=list(self.builder_config.class_dirs)),
            "axion_mass": tfds.features.Scalar(dtype=np.float32),
            "filename": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/ML4SCI/DeepLense",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    self._layout, splits = find_splits(
        self._manual_dir, self.builder_config, seed=self._seed,
        test_fraction=self._test_fraction)
    self._stats = base.PixelStats()
    return {split: self._generate_examples(split, files)
            for split, files in splits.items()}

  def _generate_examples(self, split: str, files):
    config = self.builder_config
    files = tqdm.tqdm(files, desc=f"{self.name}/{config.name} {split}",
                      unit="file", disable=not self._progress,
                      mininterval=1.0)
    for key, example in base.guarded(files, self._example, self.report,
                                     self._skip_bad):
      self.report.wrote(split)
      if split == "train":
        self._stats.add(example["image"])
      yield key, example
    self._write_metadata()

  def _example(self, path_and_label: tuple[str, int]):
    path, label = path_and_label
    config = self.builder_config
    is_axion = config.class_dirs[label] == config.axion_dir
    image, mass = read_example(path, config, is_axion, self.report)
    relative = os.path.relpath(path, self._manual_dir)
    return relative, {"image": image, "label": label,
                      "axion_mass": np.float32(mass), "filename": relative}

  def build_args(self) -> dict:
    """What decides the content (compared when an existing build is reused)."""
    args = {"layout": self._layout}
    if self._layout == "seeded":
      args.update(seed=self._seed, test_fraction=self._test_fraction)
    return args

  def _write_metadata(self):
    # Called after each split: the last call, after the last split, wins.
    self.info.metadata.update({
        "pixel_stats": self._stats.result(),
        "pixel_scale": self.builder_config.pixel_scale,
        "build_args": self.build_args(),
        "manual_dir": self._manual_dir,
        "report": self.report.to_dict(),
    })


Builder = Deeplense
