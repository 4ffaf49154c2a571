"""A fixed, seeded pool of labelled simulated examples: `labels_per_class` for the simulator.

The simulator is an endless source, so "N labels per class" has to be made: the pool
is the first N examples of each enabled class in a fixed stream of simulated examples
(example i simulated with fold_in(pool_key, i), pool_key from (labels_seed, 'train')),
drawn once when the run starts. It is therefore exact (N per class), reproducible
(the same seed gives the same pool, whatever the batch size or device count) and the
same pool for every adaptation mode compared in a label-efficiency study.

Training then cycles over the pool: batch `step` takes positions step*B ... step*B+B-1
of an endless sequence of seeded permutations of the pool (a fresh permutation each
epoch) and applies the config's augmentations and normalisation on device with fresh
keys, as the 'sim' source does. The whole iterator state is {'step': step}.

This is the data source 'sim_pool' (`lensfm.data.make_input` turns source='sim'
+ labels_per_class into it). Splits other than 'train' are the plain simulator streams:
evaluation always uses fresh examples.

config.data fields read here, besides those of the 'sim' source:
  labels_per_class: N > 0, examples kept per class.
  labels_seed: seed of the pool (None: the run seed).
"""
from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lensfm.data import sim_source
from lensfm.data import transforms
from lensfm import errors
from lensfm import utils

SOURCE_NAME = "sim_pool"
POOL_CHUNK = 256
# The pool's stream is separate from every training step's stream (which fold in
# small step numbers), so pool examples are not also seen as "unlabelled" batches.
_POOL_STREAM = 2**31 - 2
# Give up if a class is this many times rarer than a uniform draw would make it.
_MAX_OVERDRAW = 20
# The fields read here (the rest of config.data is the simulator's, see sim_source).
DEFAULTS = dict(labels_per_class=0, labels_seed=None, normalize=transforms.DEFAULT_NORMALIZE,
                augment="")


def enabled_class_indices(recipe) -> list[int]:
  return [recipe.class_names.index(c) for c in recipe.classes]


def pool_key(seed: int) -> jax.Array:
  base = jax.random.fold_in(jax.random.PRNGKey(seed), sim_source.split_id("train"))
  return jax.random.fold_in(base, _POOL_STREAM)


@functools.lru_cache(maxsize=8)
def chunk_simulator(recipe):
  """Jitted fn(key, start) -> POOL_CHUNK examples, example i simulated with
  fold_in(key, start + i): compiled once per recipe object in a process, whatever the
  seed (`sim_source.get_recipe` returns one object per distinct recipe config)."""

  def chunk(key, start):
    keys = jax.vmap(jax.random.fold_in, (None, 0))(
        key, start + jnp.arange(POOL_CHUNK, dtype=jnp.uint32))
    return sim_source.simulate(recipe, keys)

  return jax.jit(chunk)


# Pools drawn in this process, so that the modes of a label-efficiency study (which
# all use the same pool) simulate it once: {(recipe, per_class, seed): pool}.
_POOLS: dict = {}
_MAX_CACHED_POOLS = 4


def draw_pool(data_config, per_class: int, seed: int) -> dict[str, np.ndarray]:
  """The first `per_class` examples of each enabled class of the pool stream (numpy,
  raw recipe units, in stream order)."""
  per_class = int(per_class)
  if per_class <= 0:
    raise errors.UserError(f"config.data.labels_per_class={per_class}; expected a positive "
                           "integer (or 0 / unset for every label).")
  recipe = sim_source.get_recipe(data_config)
  sim_source.check_image_shape(recipe.image_shape, data_config,
                               f"Simulator recipe {recipe.name!r}")
  key = (recipe, per_class, int(seed))
  if key not in _POOLS:
    if len(_POOLS) >= _MAX_CACHED_POOLS:
      _POOLS.pop(next(iter(_POOLS)))
    _POOLS[key] = _simulate_pool(recipe, per_class, int(seed))
  return {k: v.copy() for k, v in _POOLS[key].items()}


def _simulate_pool(recipe, per_class: int, seed: int) -> dict[str, np.ndarray]:
  classes = enabled_class_indices(recipe)
  key = pool_key(seed)
  chunk = chunk_simulator(recipe)
  kept = {c: [] for c in classes}
  parts = []
  limit = _MAX_OVERDRAW * per_class * len(classes)
  start = 0
  while any(len(v) < per_class for v in kept.values()):
    if start >= limit:
      short = {recipe.class_names[c]: len(v) for c, v in kept.items() if len(v) < per_class}
      raise ValueError(f"After {start} simulated examples, classes {short} have fewer than "
                       f"labels_per_class={per_class} examples.")
    out = jax.device_get(chunk(key, np.uint32(start)))
    for i, label in enumerate(np.asarray(out["label"])):
      if int(label) in kept and len(kept[int(label)]) < per_class:
        kept[int(label)].append(len(parts) * POOL_CHUNK + i)
    parts.append(out)
    start += POOL_CHUNK
  order = np.sort(np.concatenate([np.asarray(v, np.int64) for v in kept.values()]))
  return {k: np.concatenate([p[k] for p in parts])[order] for k in parts[0]}


class PoolInput(sim_source.StepIndexedInput):
  """Endless shuffled, augmented batches from a fixed pool; see the module docstring."""

  def __init__(self, pool: Mapping[str, np.ndarray], *, global_batch_size: int,
               sharding: jax.sharding.NamedSharding, seed: int,
               normalize: str = transforms.DEFAULT_NORMALIZE, augment=(), stats=None,
               grid=None):
    self.global_batch_size = int(global_batch_size)
    self.sharding = sharding
    self.size = len(pool["label"])
    replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    # The pool is an argument of the jitted batch function, not a constant baked into it.
    self._pool = jax.device_put({k: np.asarray(v) for k, v in pool.items()}, replicated)
    base = jax.random.fold_in(jax.random.PRNGKey(int(seed)), sim_source.split_id("train"))
    self._shuffle_key, self._augment_key = jax.random.split(base)
    self._transform = transforms.make_transform(normalize, augment, stats)
    self._mapper = sim_source.grid_mapper(grid)  # The pool is raw: mapped per batch.
    self._make_batch = jax.jit(self._batch_at, out_shardings=sharding)
    self._step = 0

  def pool_indices(self, step) -> jax.Array:
    """Pool indices of batch `step`: consecutive positions of per-epoch permutations."""
    positions = (jnp.asarray(step, jnp.int32) * self.global_batch_size
                 + jnp.arange(self.global_batch_size, dtype=jnp.int32))
    epochs, offsets = positions // self.size, positions % self.size

    def index(epoch, offset):
      perm = jax.random.permutation(jax.random.fold_in(self._shuffle_key, epoch), self.size)
      return perm[offset]

    return jax.vmap(index)(epochs, offsets)

  def _batch_at(self, pool, step):
    idx = transforms.constrain_to(self.pool_indices(step), self.sharding)
    out = {k: jnp.take(v, idx, axis=0) for k, v in pool.items()}
    keys = transforms.sharded_example_keys(jax.random.fold_in(self._augment_key, step),
                                           self.global_batch_size, self.sharding)
    if self._mapper is not None:
      out["image"] = jax.vmap(self._mapper)(out["image"])
    out["image"] = jax.vmap(self._transform)(keys, out["image"])
    out["mask"] = jnp.ones((self.global_batch_size,), jnp.bool_)
    return out

  def batch_at(self, step: int) -> dict[str, jax.Array]:
    return self._make_batch(self._pool, np.uint32(step))


def make(data_config, *, global_batch_size: int, sharding: jax.sharding.NamedSharding,
         seed: int, split: str = "train", single_pass: bool = False):
  """The 'sim_pool' source: the pool for 'train', the plain simulator otherwise
  (`single_pass`: see `lensfm.data.make_input`)."""
  plain = sim_config(data_config)
  if sim_source.SPLIT_ALIASES.get(split, split) != "train":
    return sim_source.make(plain, global_batch_size=global_batch_size, sharding=sharding,
                           seed=seed, split=split, single_pass=single_pass)
  fields = utils.with_defaults(data_config, DEFAULTS)
  labels_seed = fields.labels_seed
  pool = draw_pool(plain, fields.labels_per_class or 0,
                   seed if labels_seed is None else int(labels_seed))
  recipe = sim_source.get_recipe(plain)
  return PoolInput(pool, global_batch_size=global_batch_size, sharding=sharding, seed=seed,
                   normalize=fields.normalize, augment=transforms.parse_augment(fields.augment),
                   stats=sim_source.normalization_stats(plain, recipe),
                   grid=sim_source.grid_key(recipe, plain))


def sim_config(data_config):
  """The same data config with source 'sim' (what the simulator itself reads)."""
  d = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
  d["source"] = "sim"
  return ml_collections.ConfigDict(d)
