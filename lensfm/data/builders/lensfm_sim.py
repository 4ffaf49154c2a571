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

Features: image float32 (H, W, C) raw (unnormalised), stored as raw bytes (exact,
and serialised with one copy instead of a per-pixel float list), label ClassLabel with the
recipe's class names, and every other numeric output of `recipe.sample` (e.g.
axion_mass, n_subhalos, sub_mass_fraction, theta_e) as a scalar. A simulated
image with NaN or infinite pixels is an error naming the split and index (or,
with skip_bad, skipped and counted).

Speed: chunks are simulated ahead (the next one is dispatched before the current one is
serialised, so simulation and writing overlap) and records are written in key order
(no shuffling pass: readers shuffle).
"""
from __future__ import annotations

import concurrent.futures
import functools
import json
import os
from typing import Optional

from array_record.python import array_record_module

import jax
import jax.numpy as jnp
from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from lensfm.data import sim_source
from lensfm.data.builders import base

RECIPES = ("model_i", "model_ii", "model_iii", "model_iv", "randomized",
           "lensfind")
CHUNK = 256  # Examples simulated per jitted call (fewer for smaller builds).


def chunk_size(num: int) -> int:
  """CHUNK, or the power of two covering `num` for small builds (tests, tiny sets)."""
  return min(CHUNK, 1 << max(num - 1, 0).bit_length())


def default_num_test(num_examples: int) -> int:
  return max(num_examples // 10, 1)


def get_recipe(name: str, overrides: Optional[dict] = None):
  return sim_source.recipe_by_name(name, overrides)


@functools.lru_cache(maxsize=16)
def chunk_simulator(recipe, size: int = CHUNK):
  """Jitted fn(base_key, start) -> `size` examples, example i simulated with
  fold_in(base_key, start + i); one compilation per recipe, size and process."""

  def simulate_chunk(base_key, start):
    indices = start + jnp.arange(size, dtype=jnp.uint32)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(base_key, indices)
    return sim_source.simulate(recipe, keys)

  return jax.jit(simulate_chunk)


def example_spec(recipe, size: int = 1) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes/dtypes of one simulated example (no simulation). Traced through
  the `size` chunk simulator, so a build's first chunk reuses this trace."""
  base_key = jax.random.fold_in(jax.random.PRNGKey(0), 0)
  spec = chunk_simulator(recipe, size).eval_shape(base_key, np.uint32(0))
  return {name: jax.ShapeDtypeStruct(s.shape[1:], s.dtype)
          for name, s in spec.items()}


def feature_for(name: str, spec: jax.ShapeDtypeStruct, recipe):
  if name == "label":
    return tfds.features.ClassLabel(names=list(recipe.class_names))
  if name == "image":
    return tfds.features.Tensor(shape=tuple(spec.shape), dtype=np.float32,
                                encoding=tfds.features.Encoding.BYTES)
  if spec.shape:
    return tfds.features.Tensor(shape=tuple(spec.shape), dtype=spec.dtype)
  return tfds.features.Scalar(dtype=spec.dtype)


class LensfmSim(tfds.core.GeneratorBasedBuilder):
  """Simulated strong lenses (see the module docstring)."""

  name = "lensfm_sim"
  # TFDS derives this through `importlib_resources`, which its dependencies
  # do not always install; the answer is simply this file.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Images stored as raw float32 bytes; records in key order."}
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
    self.record_labels = {}  # {split: labels in record order}, for the label index.
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
    spec = example_spec(self.recipe, self._chunk_size())
    features = {name: feature_for(name, s, self.recipe)
                for name, s in spec.items()}
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
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

  def _split_sizes(self) -> dict[str, int]:
    if not self._num_examples or self._num_examples <= 0:
      raise ValueError("lensfm_sim needs num_examples > 0 (--num_examples); "
                       f"got {self._num_examples}.")
    args = self.build_args()
    splits = {"train": args["num_examples"]}
    if args["num_test_examples"]:
      splits["test"] = args["num_test_examples"]
    self._stats = base.PixelStats()
    self._chunk = self._chunk_size()
    return splits

  def _chunk_size(self) -> int:
    """One chunk size (one compilation) for all splits of this build."""
    args = self.build_args()
    return chunk_size(max(args["num_examples"] or 1, args["num_test_examples"] or 1))

  def _split_generators(self, dl_manager):
    """TFDS's generic path (per-example encoding); builds use `_generate_splits`."""
    del dl_manager
    return {split: self._generate_examples(split, n)
            for split, n in self._split_sizes().items()}

  def _generate_splits(self, dl_manager, download_config):
    """Writes each split's ArrayRecord shards directly: a chunk of examples is
    checked and serialised at once (`ChunkSerializer`, the records TFDS itself
    would write) by a writer thread while the next chunk is simulated."""
    del dl_manager
    if download_config.max_examples_per_split is not None:
      raise ValueError("lensfm_sim sets its size with num_examples, not "
                       "max_examples_per_split.")
    serializer = ChunkSerializer(self.info.features)
    split_infos = []
    for split, num in self._split_sizes().items():
      template = self._get_filename_template(split_name=split)
      split_infos.append(self._write_split(split, num, template, serializer))
    self._update_metadata()
    return split_infos

  def _write_split(self, split, num, template, serializer):
    import tqdm  # pylint: disable=g-import-not-at-top
    path = os.fspath(template.sharded_filepath(shard_index=0, num_shards=1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
    labels, size = [], [0]

    def write(records):
      for record in records:
        writer.write(record)
        size[0] += len(record)

    bar = tqdm.tqdm(total=num, desc=f"{self.name}/{self.builder_config.name} {split}",
                    unit="example", disable=not self._progress, mininterval=1.0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      pending = None
      for start, chunk in self._chunk_arrays(split, num):
        chunk = self._checked(split, start, chunk)
        labels.append(chunk["label"].astype(np.int32))
        records = serializer(chunk)  # Serialised here, written while the next chunk runs.
        if pending is not None:
          pending.result()
        pending = pool.submit(write, records)
        bar.update(len(next(iter(chunk.values()))) if chunk else 0)
      if pending is not None:
        pending.result()
    bar.close()
    writer.close()
    labels = np.concatenate(labels) if labels else np.zeros((0,), np.int32)
    self.record_labels[split] = labels
    return tfds.core.SplitInfo(name=split, shard_lengths=[len(labels)],
                               num_bytes=size[0], filename_template=template)

  def _checked(self, split: str, start: int, chunk: dict) -> dict:
    """The chunk's good examples (a non-finite image raises, or is skipped and
    counted with skip_bad); counts them and adds train images to the stats."""
    images = chunk["image"]
    good = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    if not good.all():
      for offset in np.flatnonzero(~good):
        try:
          base.check_finite(images[offset], f"{self.name}/{self.builder_config.name} "
                            f"{split} example {start + offset}")
        except base.BadInputError as error:
          if not self._skip_bad:
            raise error.with_skip_hint() from error
          self.report.skip(error)
      chunk = {k: v[good] for k, v in chunk.items()}
    self.report.written[split] += int(good.sum())
    if split == "train" and len(chunk["image"]):
      self._stats.add_batch(chunk["image"])
    return chunk

  def _update_metadata(self):
    self.info.metadata.update({
        "pixel_stats": self._stats.result(),
        "build_args": self.build_args(),
        "recipe": self.recipe.name,
        "pixel_scale": self.recipe.pixel_scale,
        "report": self.report.to_dict(),
    })

  def _chunk_arrays(self, split: str, num: int):
    """Yields (start, {name: array [n, ...]}) in order; the next chunk is
    dispatched before this one is returned, so it simulates meanwhile."""
    base_key = jax.random.fold_in(jax.random.PRNGKey(self._seed),
                                  sim_source.split_id(split))
    size = self._chunk
    simulate = chunk_simulator(self.recipe, size)
    pending = simulate(base_key, np.uint32(0)) if num else None
    for start in range(0, num, size):
      out = pending
      if start + size < num:
        pending = simulate(base_key, np.uint32(start + size))
      n = min(size, num - start)
      out = {k: np.asarray(v)[:n] for k, v in jax.device_get(out).items()}
      out["image"] = np.ascontiguousarray(out["image"], np.float32)
      yield start, out

  def _chunks(self, split: str, num: int):
    """Yields (index, example) in order."""
    for start, out in self._chunk_arrays(split, num):
      for offset in range(len(out["image"])):
        yield start + offset, {k: v[offset] for k, v in out.items()}

  def _generate_examples(self, split: str, num: int):
    import tqdm  # pylint: disable=g-import-not-at-top
    items = tqdm.tqdm(self._chunks(split, num), total=num,
                      desc=f"{self.name}/{self.builder_config.name} {split}",
                      unit="example", disable=not self._progress,
                      mininterval=1.0)
    labels = []
    for key, example in base.guarded(
        items, lambda item: self._example(split, item), self.report,
        self._skip_bad):
      self.report.wrote(split)
      labels.append(int(example["label"]))
      if split == "train":
        self._stats.add(example["image"])
      yield key, example
    self.record_labels[split] = np.asarray(labels, np.int32)
    self._update_metadata()

  def _example(self, split: str, item):
    index, example = item
    base.check_finite(example["image"], f"{self.name}/{self.builder_config.name} "
                      f"{split} example {index}")
    return index, example


class ChunkSerializer:
  """Serialises a chunk of examples to the tf.train.Example records that TFDS's
  own ExampleSerializer writes for these features (bytes-encoded tensors, integer
  and float scalars), without its per-example generic encoding."""

  def __init__(self, features: tfds.features.FeaturesDict):
    self._kinds = {}
    for name, info in features.get_serialized_info().items():
      if info.shape:
        raise ValueError(f"ChunkSerializer: feature {name!r} has shape {info.shape}; "
                         "only scalars and bytes-encoded tensors are supported.")
      dtype = np.dtype(info.np_dtype)
      if dtype.kind in "OSU":
        self._kinds[name] = "bytes"
      elif np.issubdtype(dtype, np.floating):
        self._kinds[name] = "float"
      elif np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        self._kinds[name] = "int"
      else:
        raise ValueError(f"ChunkSerializer: unsupported dtype {dtype} of {name!r}.")

  def __call__(self, chunk: dict[str, np.ndarray]) -> list[bytes]:
    n = len(next(iter(chunk.values())))
    columns = {}
    for name, kind in self._kinds.items():
      values = chunk[name]
      if kind == "bytes":
        flat = np.ascontiguousarray(values).reshape(n, -1)
        columns[name] = [row.tobytes() for row in flat]
      elif kind == "float":
        columns[name] = np.asarray(values, np.float32).reshape(n).tolist()
      else:
        columns[name] = np.asarray(values).astype(np.int64).reshape(n).tolist()
    records = []
    for i in range(n):
      example = tf_example_pb2.Example()
      feature = example.features.feature
      for name, kind in self._kinds.items():
        if kind == "bytes":
          feature[name].bytes_list.value.append(columns[name][i])
        elif kind == "float":
          feature[name].float_list.value.append(columns[name][i])
        else:
          feature[name].int64_list.value.append(columns[name][i])
      records.append(example.SerializeToString())
    return records
