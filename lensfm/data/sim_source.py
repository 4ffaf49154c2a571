"""Endless simulated batches made on device: `config.data.source = 'sim'`.

Each batch is simulated, augmented and normalised inside ONE jitted function
whose output is laid out with the batch sharding, so nothing crosses the host
and, with jax's partitionable threefry (the default since jax 0.5), every
device computes only its own examples: the per-example keys are constrained to
the batch sharding and the simulator is vmapped over them.

Randomness: the batch at position `step` of split `split` uses
    key = fold_in(fold_in(PRNGKey(seed), split_id(split)), step)
so 'train', 'validation' and 'test' are different streams, equal seeds give
equal batches, and the whole iterator state is {'step': step}. Example i of a
batch depends on (seed, split, step, i, global batch size) only, not on the
number of devices or processes.

`config.data` fields read here (with `get`, so optional ones may be absent):
  source:           'sim'.
  recipe:           simulator recipe name (`lensfm.sim.catalog.get`), e.g.
                    'model_ii', 'model_iv', 'randomized', 'lensfind', 'realistic_euclid'.
  recipe_overrides: dict passed to `catalog.get` (e.g. {'num_pix': 32}),
                    optional.
  image_size, pixel_scale: the model's grid (pixels, arcsec/pixel). The
                    recipe's images (its num_pix at its instrument's pixel
                    scale, `recipe.pixel_scale`) are mapped onto it on device
                    (`grid.map_to_grid`: crop/pad to the field of view with
                    re-drawn sky, area-average or interpolate), before the
                    augmentations and the normalisation.
  channels:         must equal the recipe's bands (a ValueError names both).
  normalize:        'zscore' (default) | 'minmax' | 'asinh' | 'standardize' | 'none' (see
                    `transforms`). 'standardize' uses per-channel statistics of
                    `STATS_EXAMPLES` simulated images drawn with a fixed key
                    (the same for every seed), or `norm_stats` if given.
  norm_stats:       optional {'mean': [C], 'std': [C]} for 'standardize'.
  augment:          comma-separated names from `transforms.AUGMENTATIONS`
                    ('' or absent = none), applied on device, to 'train' only
                    (evaluation streams are never augmented).
  prefetch:         ignored: jax's asynchronous dispatch already queues the next
                    batch on the device behind the running train step.

Batches: the recipe's outputs ('image' float32 [B, H, W, C] normalised,
'label' int32 [B] and the recipe's label keys), plus 'mask' bool [B] (all True;
present so that every source yields the same keys as padded eval batches).
"""
from __future__ import annotations

import functools
import warnings
import zlib
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lensfm.data import grid as grid_lib
from lensfm.data import transforms
from lensfm import errors
from lensfm import utils
from lensfm.sim import catalog
from lensfm.sim import render as render_lib

# Fixed ids so that the streams of the usual splits never change; other split
# names get a stable hash.
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "eval": "test"}
STATS_EXAMPLES = 512
_STATS_SEED = 2**31 - 1  # Fixed: statistics must not change with the run seed.
_STATS_CHUNK = 64


def split_id(split: str) -> int:
  """Stable integer for a split name ('train' 0, 'validation' 1, 'test' 2)."""
  split = SPLIT_ALIASES.get(split, split)
  if split in SPLIT_IDS:
    return SPLIT_IDS[split]
  return 3 + zlib.crc32(split.encode()) % (2**31 - 3)


@functools.lru_cache(maxsize=32)
def _cached_recipe(name: str, overrides_key):
  recipe = catalog.get(name, **dict(overrides_key))
  # Equal (name, overrides) share compiled functions (see _batch_function).
  recipe._lensfm_cache_key = (name, overrides_key)  # pylint: disable=protected-access
  return recipe


def recipe_by_name(name: str, overrides: Optional[Mapping] = None):
  """`catalog.get(name, **overrides)`, one object per distinct call."""
  overrides = utils.as_dict(overrides)
  return _cached_recipe(name, tuple(sorted(
      (k, _hashable(v)) for k, v in overrides.items())))


def get_recipe(data_config):
  """The recipe named by `config.data.recipe` with its overrides."""
  name = data_config.get("recipe", None)
  if not name:
    raise errors.UserError("config.data.recipe must name a simulator recipe when "
                           "config.data.source='sim'.")
  return recipe_by_name(name, data_config.get("recipe_overrides", None))


def recipe_class_names(data_config) -> Optional[tuple[str, ...]]:
  """The simulator recipe's class names when the data are simulated, else None."""
  if data_config.get("source", None) not in ("sim", "sim_pool"):
    return None
  recipe = catalog.RECIPES.get(data_config.get("recipe", None))
  return tuple(recipe.class_names) if recipe is not None else None


def check_image_shape(shape, data_config, what: str) -> None:
  """Raises a ValueError naming both if the source's channels (shape (H, W, C)) differ
  from config.data.channels. Any H, W is fine: images are mapped onto the model grid."""
  grid_lib.model_grid(data_config)  # image_size must be set.
  channels = data_config.get("channels", 1)
  if len(shape) != 3 or int(shape[-1]) != int(channels):
    raise errors.UserError(
        f"{what} makes images of shape {tuple(shape)} (H, W, C), but "
        f"config.data.channels={channels}. Change config.data.channels or the source.")


def grid_key(recipe, data_config) -> Optional[tuple]:
  """(source shape, source scale, size, scale) of the recipe -> model grid map, or None
  when the recipe already renders on the model grid."""
  size, scale = grid_lib.model_grid(data_config)
  if not grid_lib.needs_mapping(recipe.image_shape, recipe.pixel_scale, size, scale):
    return None
  return (tuple(recipe.image_shape), float(recipe.pixel_scale), size, scale)


def grid_mapper(key: Optional[tuple]):
  return None if key is None else grid_lib.make_mapper(*key)


def simulate(recipe, keys: jax.Array, skip_absent: bool = False) -> dict[str, jax.Array]:
  """One example per key: vmap of `recipe.sample(key, 1)`, batch axis first.

  Per-example keys make each example independent of how the batch is split
  over devices (and let the compiler keep each device's examples local).
  skip_absent: the same examples, rendered in groups that skip the substructure none of
  a group has (`render.render_skipping_absent`; for hosts, not for sharded batches).
  """
  if not skip_absent:
    out = jax.vmap(lambda k: recipe.sample(k, 1))(keys)
    return jax.tree.map(lambda x: x[:, 0], out)
  params, labels, noise_keys = jax.vmap(lambda k: recipe.sample_scenes(k, 1))(keys)
  first = lambda tree: jax.tree.map(lambda x: x[:, 0], tree)
  clean = render_lib.render_skipping_absent(recipe.render, first(params))
  out = jax.vmap(recipe.observe_batch)(noise_keys, clean[:, None], params, labels)
  return first(out)


@functools.lru_cache(maxsize=8)
def simulated_statistics(recipe, num_examples: int = STATS_EXAMPLES,
                         grid: Optional[tuple] = None) -> dict:
  """Per-channel mean/std of raw simulated images (fixed key, chunked), after the map
  onto the model grid `grid` (a `grid_key`) if given."""
  mapper = grid_mapper(grid)

  def images_of(k):
    images = simulate(recipe, jax.random.split(k, _STATS_CHUNK))["image"]
    return images if mapper is None else jax.vmap(mapper)(images)

  sample_chunk = jax.jit(images_of)
  base = jax.random.PRNGKey(_STATS_SEED)
  total, total_sq, count = 0.0, 0.0, 0
  for chunk in range(-(-num_examples // _STATS_CHUNK)):
    images = np.asarray(sample_chunk(jax.random.fold_in(base, chunk)),
                        np.float64)
    total = total + images.sum(axis=(0, 1, 2))
    total_sq = total_sq + (images ** 2).sum(axis=(0, 1, 2))
    count += images.shape[0] * images.shape[1] * images.shape[2]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
  return {"mean": mean.tolist(), "std": std.tolist()}


def normalization_stats(data_config, recipe) -> Optional[dict]:
  """Statistics for 'standardize' (None for the other normalisations)."""
  if data_config.get("normalize", transforms.DEFAULT_NORMALIZE) != "standardize":
    return None
  given = data_config.get("norm_stats", None)
  if given:
    return utils.as_dict(given)
  return simulated_statistics(recipe, STATS_EXAMPLES, grid_key(recipe, data_config))


def _hashable(value):
  """A hashable, order-independent form of nested config values."""
  if isinstance(value, Mapping):
    return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  return value


@functools.lru_cache(maxsize=32)
def _batch_function(recipe_key, recipe, global_batch_size: int, sharding,
                    transform_key, grid: Optional[tuple] = None):
  """The jitted fn(base_key, step) -> batch, shared by every SimInput with
  the same recipe, batch size, sharding and transforms (e.g. other seeds), so
  each combination compiles once per process."""
  del recipe_key  # Only part of the cache key (the recipe object is not).
  normalize, augment, stats = transform_key
  transform = transforms.make_transform(
      normalize, augment, None if stats is None else dict(stats))
  mapper = grid_mapper(grid)

  def batch_at(base_key, step):
    key = jax.random.fold_in(base_key, step)
    sim_key, transform_key_ = jax.random.split(key)
    out = dict(simulate(recipe, transforms.sharded_example_keys(
        sim_key, global_batch_size, sharding)))
    if mapper is not None:
      out["image"] = jax.vmap(mapper)(out["image"])
    out["image"] = jax.vmap(transform)(
        transforms.sharded_example_keys(transform_key_, global_batch_size,
                                        sharding), out["image"])
    out["mask"] = jnp.ones((global_batch_size,), jnp.bool_)
    return out

  return jax.jit(batch_at, out_shardings=sharding)


def _recipe_cache_key(recipe):
  return getattr(recipe, "_lensfm_cache_key", ("id", id(recipe)))


class StepIndexedInput:
  """An `Input` whose batch is a pure function of its position: the state is the step.

  Subclasses define `batch_at(step)` and set `self._step = 0`.
  """

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, jax.Array]:
    batch = self.batch_at(self._step)
    self._step += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._step = int(state["step"])

  def close(self) -> None:
    """Nothing to release: batches are made on demand."""


class SimInput(StepIndexedInput):
  """Endless on-device simulated batches; see the module docstring."""

  def __init__(self, recipe, *, global_batch_size: int,
               sharding: jax.sharding.NamedSharding, seed: int, split: str,
               normalize: str = transforms.DEFAULT_NORMALIZE, augment=(),
               stats: Optional[Mapping] = None, grid: Optional[tuple] = None):
    self.recipe = recipe
    self.global_batch_size = int(global_batch_size)
    self.sharding = sharding
    self.seed = int(seed)
    self.split = split
    self._step = 0
    self._base_key = jax.random.fold_in(jax.random.PRNGKey(self.seed),
                                        split_id(split))
    transform_key = (normalize, transforms.parse_augment(augment),
                     None if stats is None else _hashable(stats))
    # One compilation: the key and step are traced arguments.
    self._make_batch = _batch_function(
        _recipe_cache_key(recipe), recipe, self.global_batch_size, sharding,
        transform_key, grid)

  def batch_at(self, step: int) -> dict[str, jax.Array]:
    """The batch at position `step` (does not move the iterator)."""
    return self._make_batch(self._base_key, np.uint32(step))

  def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of a batch, without simulating."""
    return jax.eval_shape(self._make_batch, self._base_key, np.uint32(0))

  def compilations(self) -> int:
    """How many times the batch function was compiled (should stay 1)."""
    return self._make_batch._cache_size()  # pylint: disable=protected-access


def make(data_config, *, global_batch_size: int,
         sharding: jax.sharding.NamedSharding, seed: int,
         split: str = "train", single_pass: bool = False) -> SimInput:
  """Builds the on-device simulated input (see the module docstring); endless whatever
  `single_pass` (evaluations take a fixed number of batches), unaugmented then."""
  recipe = get_recipe(data_config)
  check_image_shape(recipe.image_shape, data_config,
                    f"Simulator recipe {recipe.name!r}")
  if not jax.config.jax_threefry_partitionable:
    # Still correct, but every process would compute the whole batch.
    warnings.warn("jax_threefry_partitionable is off: each process will "
                  "simulate the full global batch, not only its shard.")
  normalize = data_config.get("normalize", transforms.DEFAULT_NORMALIZE)
  augment = transforms.parse_augment(data_config.get("augment", ""))
  if split_id(split) != SPLIT_IDS["train"] or single_pass:
    augment = ()  # Evaluation data are never augmented.
  stats = normalization_stats(data_config, recipe)
  return SimInput(recipe, global_batch_size=global_batch_size,
                  sharding=sharding, seed=seed, split=split,
                  normalize=normalize, augment=augment, stats=stats,
                  grid=grid_key(recipe, data_config))
