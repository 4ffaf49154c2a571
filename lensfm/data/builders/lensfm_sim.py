"""TFDS builder `lensfm_sim`: fixed data sets drawn from the lensfm simulator.

One config per recipe (`RECIPES`). The size, the seed and the recipe overrides
are build arguments, stored in the dataset's metadata ('build_args') and
checked when an existing build is reused:
  num_examples:       train examples (required).
  num_test_examples:  test examples (default: num_examples // 10, at least 1).
  seed:               example i of split s is simulated with
                      fold_in(fold_in(PRNGKey(seed), split_id(s)), i), so a
                      build is deterministic for a seed (on one platform;
                      floating point may differ across CPU/GPU/TPU) and does
                      not depend on the chunk size.
  recipe_overrides:   dict passed to `recipes.get` (e.g. {'num_pix': 32}).

Features: image float32 (H, W, C) raw (unnormalised), label ClassLabel with the
recipe's class names, and every other numeric output of `recipe.sample` (e.g.
axion_mass, n_subhalos, sub_mass_fraction, theta_e) as a scalar. A simulated
image with NaN or infinite pixels is an error naming the split and index (or,
with skip_bad, skipped and counted).
"""
from __future__ import annotations

import functools
import json
import os
from typing import Optional

import jax
import jax.numpy as jnp
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from lensfm.data import sim_source
from lensfm.data.builders import base

RECIPES = ("model_i", "model_ii", "model_iii", "model_iv", "randomized",
           "lensfind")
CHUNK = 64  # Examples simulated per jitted call.


def default_num_test(num_examples: int) -> int:
  return max(num_examples // 10, 1)


def get_recipe(name: str, overrides: Optional[dict] = None):
  return sim_source.recipe_by_name(name, overrides)


@functools.lru_cache(maxsize=16)
def chunk_simulator(recipe):
  """Jitted fn(base_key, start) -> CHUNK examples, example i simulated with
  fold_in(base_key, start + i); one compilation per recipe and process."""

  def simulate_chunk(base_key, start):
    indices = start + jnp.arange(CHUNK, dtype=jnp.uint32)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(base_key, indices)
    return sim_source.simulate(recipe, keys)

  return jax.jit(simulate_chunk)


def example_spec(recipe) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes/dtypes of one simulated example (no simulation)."""
  keys = jax.ShapeDtypeStruct((1, 2), np.uint32)
  spec = jax.eval_shape(lambda k: sim_source.simulate(recipe, k), keys)
  return {name: jax.ShapeDtypeStruct(s.shape[1:], s.dtype)
          for name, s in spec.items()}


def feature_for(name: str, spec: jax.ShapeDtypeStruct, recipe):
  if name == "label":
    return tfds.features.ClassLabel(names=list(recipe.class_names))
  if name == "image":
    return tfds.features.Tensor(shape=tuple(spec.shape), dtype=np.float32)
  if spec.shape:
    return tfds.features.Tensor(shape=tuple(spec.shape), dtype=spec.dtype)
  return tfds.features.Scalar(dtype=spec.dtype)


class LensfmSim(tfds.core.GeneratorBasedBuilder):
  """Simulated strong lenses (see the module docstring)."""

  name = "lensfm_sim"
  # TFDS derives this through `importlib_resources`, which its dependencies
  # do not always install; the answer is simply this file.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=r, description=f"lensfm.sim recipe {r!r}.")
      for r in RECIPES]

  def __init__(self, *, num_examples: Optional[int] = None,
               num_test_examples: Optional[int] = None, seed: int = 0,
               recipe_overrides: Optional[dict] = None, skip_bad: bool = False,
               progress: bool = True, **kwargs):
    if recipe_overrides is None:
      # Reading an existing build (e.g. tfds.data_source with this class
      # registered): its features depend on the overrides it was built with.
      recipe_overrides = self._stored_build_args(kwargs).get(
          "recipe_overrides")
    self._num_examples = num_examples
    self._num_test = num_test_examples
    self._seed = int(seed)
    self._overrides = dict(recipe_overrides or {})
    self._skip_bad = bool(skip_bad)
    self._progress = progress
    self.report = base.BuildReport()
    self._recipe = None
    super().__init__(**kwargs)

  @classmethod
  def _stored_build_args(cls, kwargs) -> dict:
    config = kwargs.get("config")
    config = getattr(config, "name", config)
    if not config:
      return {}
    data_dir = kwargs.get("data_dir") or os.environ.get(
        "TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))
    path = os.path.join(os.path.expanduser(os.fspath(data_dir)), cls.name,
                        config, str(cls.VERSION), "metadata.json")
    if not os.path.isfile(path):
      return {}
    with open(path) as f:
      return json.load(f).get("build_args", {})

  @property
  def recipe(self):
    if self._recipe is None:
      self._recipe = get_recipe(self.builder_config.name, self._overrides)
    return self._recipe

  def _info(self) -> tfds.core.DatasetInfo:
    spec = example_spec(self.recipe)
    features = {name: feature_for(name, s, self.recipe)
                for name, s in spec.items()}
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(),
    )

  def build_args(self) -> dict:
    """What decides the content (compared when an existing build is reused)."""
    num_test = (self._num_test if self._num_test is not None
                else default_num_test(self._num_examples or 0))
    return {"num_examples": self._num_examples, "num_test_examples": num_test,
            "seed": self._seed,
            # JSON round trip: the stored value compares equal to a fresh one.
            "recipe_overrides": json.loads(json.dumps(self._overrides))}

  def _split_generators(self, dl_manager):
    del dl_manager
    if not self._num_examples or self._num_examples <= 0:
      raise ValueError("lensfm_sim needs num_examples > 0 (--num_examples); "
                       f"got {self._num_examples}.")
    args = self.build_args()
    self._stats = base.PixelStats()
    self._simulate_chunk = chunk_simulator(self.recipe)
    splits = {"train": args["num_examples"]}
    if args["num_test_examples"]:
      splits["test"] = args["num_test_examples"]
    return {split: self._generate_examples(split, n)
            for split, n in splits.items()}

  def _chunks(self, split: str, num: int):
    """Yields (index, example) in order, simulating CHUNK at a time."""
    base_key = jax.random.fold_in(jax.random.PRNGKey(self._seed),
                                  sim_source.split_id(split))
    for start in range(0, num, CHUNK):
      out = jax.device_get(self._simulate_chunk(base_key, np.uint32(start)))
      for offset in range(min(CHUNK, num - start)):
        yield start + offset, {k: v[offset] for k, v in out.items()}

  def _generate_examples(self, split: str, num: int):
    import tqdm  # pylint: disable=g-import-not-at-top
    items = tqdm.tqdm(self._chunks(split, num), total=num,
                      desc=f"{self.name}/{self.builder_config.name} {split}",
                      unit="example", disable=not self._progress,
                      mininterval=1.0)
    for key, example in base.guarded(
        items, lambda item: self._example(split, item), self.report,
        self._skip_bad):
      self.report.wrote(split)
      if split == "train":
        self._stats.add(example["image"])
      yield key, example
    self.info.metadata.update({
        "pixel_stats": self._stats.result(),
        "build_args": self.build_args(),
        "recipe": self.recipe.name,
        "pixel_scale": self.recipe.pixel_scale,
        "report": self.report.to_dict(),
    })

  def _example(self, split: str, item):
    index, example = item
    image = np.asarray(example["image"], np.float32)
    base.check_finite(image, f"{self.name}/{self.builder_config.name} "
                      f"{split} example {index}")
    example = {k: np.asarray(v) for k, v in example.items()}
    example["image"] = image
    return index, example
