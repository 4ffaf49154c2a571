"""LensBench's fixed, versioned evaluation sets: simulated once with fixed seeds, cached.

Each set is `<data_dir>/lensbench/<VERSION>/<set>-<size>-<split>.npz` holding the raw
images at the set's own instrument grid (its recipe's pixel count and scale) and every
label key. Splits: 'validation' (for tuning) and 'test' (for reporting); their random
streams are fixed by (VERSION, set, split) and never meet the training streams (which
the simulator draws from config seeds). Files are written atomically (temp + rename), so
an interrupted build never leaves a half set; a later run reuses them.

Sets (balanced over classes):
  model_i, model_ii, model_iii  DeepLense Models I-III (no_sub / cdm / axion);
  model_ii_rotated              Model II scenes turned by U(0, 2 pi) by the simulator
                                (`render.rotate_scene`), not by resampling pixels;
  lensfind                      lensed / non-lensed;
  axion                         Model II axion lenses (log10 axion mass regression);
  superres                      Model II HR images; the LR inputs are made from them by
                                the super-resolution objective (area downsampling).
"""
import functools
import os
import tempfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from lensfm.data import pipeline
from lensfm.sim import recipes as recipes_lib
from lensfm.sim import render as render_lib

VERSION = "v1"
SETS = {  # set -> (recipe, recipe overrides, rotated)
    "model_i": ("model_i", {}, False),
    "model_ii": ("model_ii", {}, False),
    "model_iii": ("model_iii", {}, False),
    "model_ii_rotated": ("model_ii", {}, True),
    "lensfind": ("lensfind", {}, False),
    "axion": ("model_ii", {"classes": ("axion",)}, False),
    "superres": ("model_ii", {"classes": ("no_sub",)}, False),
}
SPLITS = ("validation", "test")
_CHUNK = 64
_BASE_SEED = 20261201


def default_dir() -> str:
  return os.path.join(os.path.expanduser(pipeline.default_data_dir()), "lensbench")


def set_path(directory: str, name: str, size: int, split: str) -> str:
  return os.path.join(directory, VERSION, f"{name}-{size}-{split}.npz")


def stream_key(name: str, split: str) -> jax.Array:
  """Fixed by (VERSION, set, split) alone."""
  return jax.random.key(_BASE_SEED + zlib.crc32(f"{VERSION}/{name}/{split}".encode()) % 2**20)


def recipe_of(name: str):
  recipe_name, overrides, _ = SETS[name]
  return recipes_lib.get(recipe_name, **overrides)


@functools.lru_cache(maxsize=None)
def _chunk_fn(name: str):
  recipe = recipe_of(name)
  rotated = SETS[name][2]
  num_classes = len(recipe.classes)
  class_indices = jnp.asarray([recipe.class_names.index(c) for c in recipe.classes], jnp.int32)

  def chunk(key, start):
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, start + jnp.arange(_CHUNK))
    # Balanced: example i has class i mod num_classes.
    labels = class_indices[(start + jnp.arange(_CHUNK)) % num_classes]

    def one(k, label):
      k_scene, k_angle, k_noise = jax.random.split(k, 3)
      params, lab = recipe.scene(k_scene, label)
      if rotated:
        params = render_lib.rotate_scene(
            params, jax.random.uniform(k_angle, (), maxval=2 * jnp.pi))
      image = recipe.observe(k_noise, recipe.render(params), params)
      return image.astype(jnp.float32), lab

    images, labs = jax.vmap(one)(keys, labels)
    out = {k: jnp.asarray(labs[k]).astype(jnp.int32 if k in ("label", "n_subhalos")
                                           else jnp.float32) for k in recipes_lib.LABEL_KEYS}
    out["image"] = images
    return out

  return jax.jit(chunk)


def simulate_set(name: str, split: str, size: int) -> dict[str, np.ndarray]:
  chunk = _chunk_fn(name)
  key = stream_key(name, split)
  parts = [jax.device_get(chunk(key, np.int32(start))) for start in range(0, size, _CHUNK)]
  return {k: np.concatenate([p[k] for p in parts])[:size] for k in parts[0]}


def _write_atomically(path: str, arrays: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_set(directory: str, name: str, split: str, size: int, log=print) -> dict:
  """The cached set (built first if absent): numpy arrays, 'image' [N, H, W, C] raw."""
  if name not in SETS:
    raise ValueError(f"Unknown LensBench set {name!r}; sets are {sorted(SETS)}.")
  path = set_path(directory, name, size, split)
  if not os.path.exists(path):
    log(f"LensBench: simulating the {name} {split} set ({size} examples, {VERSION}) "
        f"-> {path}")
    _write_atomically(path, simulate_set(name, split, size))
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def pixel_scale(name: str) -> float:
  return recipe_of(name).pixel_scale
