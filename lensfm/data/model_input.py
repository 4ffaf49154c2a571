"""One path from raw images to a model's batches: onto its grid, normalised, padded, masked.

Every task reaches a model through here. Streams (`make_input`: the simulator, built
datasets) apply `grid.make_mapper` and `Normalization.transform` inside their own jitted
batch functions; arrays a task holds (files it read, LensBench's fixed sets, a labelled
pool) become batches with `array_batches`, which applies the same two functions.
`normalization_stats` is the one rule for which statistics 'standardize' uses, whatever
the source, so every task normalises a checkpoint's images alike.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Mapping, Optional

import jax
import numpy as np
import tensorflow_datasets as tfds

from lensfm.data import grid as grid_lib
from lensfm.data import pipeline
from lensfm.data import sim_source
from lensfm.data import transforms
from lensfm import errors
from lensfm import utils

SIM_SOURCES = ("sim", "sim_pool", "sim_mixture")


@dataclasses.dataclass(frozen=True)
class Grid:
  """The pixels a model sees: size x size at pixel_scale arcsec/pixel, `channels` bands."""
  size: int
  pixel_scale: float
  channels: int = 1

  @classmethod
  def of(cls, data_config) -> "Grid":
    size, scale = grid_lib.model_grid(data_config)
    return cls(size, scale, int(data_config.get("channels", 1)))

  def scaled(self, factor: int) -> "Grid":
    """The same field of view with `factor` times fewer pixels per side (an LR grid)."""
    return Grid(self.size // factor, self.pixel_scale * factor, self.channels)


@dataclasses.dataclass(frozen=True)
class Normalization:
  """How a checkpoint's images are normalised: a `transforms.NORMALIZATIONS` method and,
  for 'standardize', its per-channel statistics (as a hashable tuple)."""
  method: str
  stats: Optional[tuple] = None

  @classmethod
  def of(cls, data_config, stats: Optional[Mapping] = None) -> "Normalization":
    """The normalisation of `data_config`; `stats` replace the computed statistics."""
    method = data_config.get("normalize", transforms.DEFAULT_NORMALIZE)
    stats = stats or normalization_stats(data_config)
    frozen = None if not stats else tuple((k, tuple(float(x) for x in np.ravel(stats[k])))
                                          for k in ("mean", "std"))
    return cls(method, frozen)

  def stats_dict(self) -> Optional[dict]:
    return None if self.stats is None else {k: list(v) for k, v in self.stats}

  def transform(self):
    """fn(key, image) -> normalised image (no augmentation)."""
    return transforms.make_transform(self.method, (), self.stats_dict())

  def normalize_like(self, values, image):
    """`values` normalised by the map that normalises `image` (an LR image by its HR's)."""
    return transforms.normalize_like(values, image, self.method, self.stats_dict())

  def denormalize(self, values, image):
    """Values in normalised units back in the units of `image` (the image on the grid)."""
    return transforms.denormalize(values, image, self.method, self.stats_dict())


@dataclasses.dataclass(frozen=True)
class DataFacts:
  """What a dataset says about itself, so a config need not repeat it."""
  channels: int
  bands: tuple[str, ...] = ()
  class_names: tuple[str, ...] = ()  # Empty: the data name no classes.
  targets: tuple[str, ...] = ()      # Numeric per-example values besides the label.


def describe(data_config) -> DataFacts:
  """The channels, bands, classes and targets of config.data's data: the simulator
  recipe's, or the built dataset's (built first from manual_dir if needed)."""
  if data_config.get("source", None) in SIM_SOURCES:
    recipe = sim_source.get_recipe(data_config)
    return DataFacts(int(recipe.image_shape[-1]), (), tuple(recipe.class_names),
                     tuple(k for k in recipe.label_keys if k != "label"))
  pipeline.build_if_needed(data_config)
  info = pipeline.built_info(data_config)
  metadata = dict(info.metadata or {}) if info.metadata else {}
  label = info.features["label"] if "label" in info.features else None
  label_names = label.names if isinstance(label, tfds.features.ClassLabel) else ()
  names = tuple(metadata.get("class_names", None) or label_names)
  numeric = [k for k in pipeline.numeric_features(info.features) if k not in ("image", "label")]
  return DataFacts(int(info.features["image"].shape[-1]), tuple(metadata.get("bands", ())),
                   names, tuple(metadata.get("targets", None) or numeric))


def _class_forms(name: str) -> set[str]:
  """'Non-Lensed' -> {'nonlensed', 'nonlens', 'nonlense'}: the spellings under which
  folder names and a checkpoint's class names are compared when not written alike."""
  c = "".join(ch for ch in str(name).lower() if ch.isalnum())
  return {c} | {c[:-len(s)] for s in ("ed", "es", "s") if c.endswith(s) and len(c) > len(s) + 2}


def match_classes(model_names, data_names, class_map: str = "") -> Optional[np.ndarray]:
  """[data class index] -> the model's class index, for data that name their classes
  differently or in another order than a trained model; None when they agree or the data
  name none. `class_map` ('data=model,...') says it explicitly; else names are matched as
  written, then by `_class_forms` (exactly one model class must share a form). Anything
  unmatched is one error naming both lists."""
  model_names, data_names = tuple(model_names), tuple(data_names or ())
  if not data_names or data_names == model_names:
    return None
  explicit = dict(item.split("=", 1) for item in class_map.split(",") if "=" in item)
  bad = [m for m in explicit.values() if m not in model_names]
  if bad:
    raise errors.UserError(f"class_map={class_map!r}: {bad} are not the model's classes "
                           f"{list(model_names)}.")
  mapping = []
  for name in data_names:
    alike = [m for m in model_names if _class_forms(m) & _class_forms(name)]
    model = explicit.get(name) or (name if name in model_names else
                                   alike[0] if len(alike) == 1 else None)
    if model is None:
      raise errors.UserError(
          f"The data's classes {list(data_names)} do not match the model's "
          f"{list(model_names)} ({name!r} has no counterpart); say which is which with "
          f"--config.class_map='{name}=<one of the model's classes>,...'.")
    mapping.append(model_names.index(model))
  if len(set(mapping)) != len(mapping):
    raise errors.UserError(f"The data's classes {list(data_names)} map onto the model's "
                           f"{list(model_names)} twice; give --config.class_map.")
  return np.asarray(mapping, np.int32)


def normalization_stats(data_config) -> Optional[dict]:
  """The statistics 'standardize' uses for `data_config` (None for the other methods):
  config.data.norm_stats when given, else the simulator's or the built dataset's."""
  if data_config.get("normalize", transforms.DEFAULT_NORMALIZE) != "standardize":
    return None
  given = data_config.get("norm_stats", None)
  if given:
    return utils.as_dict(given)
  if data_config.get("source", None) in SIM_SOURCES:
    return sim_source.normalization_stats(data_config, sim_source.get_recipe(data_config))
  try:
    return pipeline.built_normalization_stats(data_config)
  except (FileNotFoundError, ValueError) as e:
    raise errors.UserError(
        f"The images are normalised with 'standardize' using the statistics of dataset "
        f"{data_config.get('name')!r}, which cannot be read here ({e}). Give them as "
        "config.data.norm_stats={'mean': [...], 'std': [...]}.") from None


@functools.lru_cache(maxsize=64)
def _prepare_fn(src_shape: tuple, src_scale: float, grid: Grid, normalization: Normalization,
                sharding, keep_on_grid: bool):
  """Jitted images -> (normalised on the grid[, on the grid before normalising])."""
  mapper = grid_lib.make_mapper(src_shape, src_scale, grid.size, grid.pixel_scale)
  transform = normalization.transform()

  def prepare(images):
    if mapper is not None:
      images = jax.vmap(mapper)(images)
    # Normalisation takes no randomness: one key serves every example.
    keys = jax.random.split(jax.random.key(0), images.shape[0])
    normalised = jax.vmap(transform)(keys, images)
    return (normalised, images) if keep_on_grid else normalised

  return jax.jit(prepare, out_shardings=(sharding, sharding) if keep_on_grid else sharding)


def check_channels(shape, grid: Grid, what: str) -> None:
  if len(shape) != 3 or int(shape[-1]) != grid.channels:
    raise errors.UserError(f"{what}: images of shape {tuple(shape)} (H, W, C), but the model "
                           f"takes {grid.channels} channel(s).")


def array_batches(arrays: Mapping[str, np.ndarray], *, src_scale: float, grid: Grid,
                  normalization: Normalization, batch_size: int, sharding,
                  keep_on_grid: bool = False, what: str = "input") -> Iterator[dict]:
  """Padded, sharded batches of host arrays ('image' raw [N, H, W, C] at `src_scale`
  arcsec/pixel, any other per-example keys), 'image' mapped onto `grid` and normalised,
  'mask' False on padding; with `keep_on_grid` also 'image_on_grid' (before normalising)."""
  images = arrays["image"]
  check_channels(images.shape[1:], grid, what)
  prepare = _prepare_fn(tuple(images.shape[1:]), float(src_scale), grid, normalization,
                        sharding, keep_on_grid)
  n = len(images)
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    batch = {}
    for key, values in arrays.items():
      dtype = np.float32 if key == "image" else values.dtype
      part = np.zeros((batch_size,) + values.shape[1:], dtype)
      part[:stop - start] = values[start:stop]
      batch[key] = jax.device_put(part, sharding)
    batch["mask"] = jax.device_put(np.arange(batch_size) < stop - start, sharding)
    prepared = prepare(batch["image"])
    if keep_on_grid:
      batch["image"], batch["image_on_grid"] = prepared
    else:
      batch["image"] = prepared
    yield batch
