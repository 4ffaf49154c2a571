"""TFDS builder `lensfm_sim`: fixed data sets drawn from the lensfm simulator.

One config per recipe (`RECIPES`). The size, the seed and the recipe overrides
are build arguments, stored in the dataset's metadata ('build_args') and
checked when an existing build is reused:
  num_examples:       train examples (required).
  num_test_examples:  test examples (default: num_examples // 10, at least 1).
  seed:               example i of split s is simulated with
                      fold_in(fold_in(PRNGKey(seed), split_id(s)), i), so a
                      build is deterministic for a seed (on one platform;
                      floating point may differ across CPU/GPU/TPU). On CPU
                      images are rendered in groups that skip the substructure
                      none of them has: equal to `recipe.sample`'s to float32
                      rounding (their last bits may depend on the group).
  recipe_overrides:   dict passed to `recipes.get` (e.g. {'num_pix': 32}).

Features: image (H, W, C) raw (unnormalised), stored as raw bytes: float32, or uint16
for Model I's Poisson counts (integers far below 65535, so exact at half the bytes; a
count it cannot hold is an error, never rounded); readers get float32 either way (the
grain pipeline casts). Label ClassLabel with the
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
import tqdm

from lensfm.data import sim_source
from lensfm.data.builders import base

RECIPES = ("model_i", "model_ii", "model_iii", "model_iv", "randomized",
           "lensfind")
CHUNK = 256  # Examples simulated per jitted call (fewer for smaller builds).
# One record per group (random access reads one record), uncompressed (compression buys
# little on float32 images); readers detect the compression from the file.
ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"


def chunk_size(num: int) -> int:
  """CHUNK, or the power of two covering `num` for small builds (tests, tiny sets)."""
  return min(CHUNK, 1 << max(num - 1, 0).bit_length())


def default_num_test(num_examples: int) -> int:
  return max(num_examples // 10, 1)


def get_recipe(name: str, overrides: Optional[dict] = None):
  return sim_source.recipe_by_name(name, overrides)


def split_key_args(seed: int, split: str) -> tuple[np.int64, np.uint32]:
  """The arguments from which `checked_chunk_simulator` derives a split's base key
  fold_in(PRNGKey(seed), split_id(split)): plain numbers, so no eager op compiles."""
  return np.int64(seed), np.uint32(sim_source.split_id(split))


@functools.lru_cache(maxsize=16)
def checked_chunk_simulator(recipe, size: int = CHUNK):
  """Jitted fn(seed, split_id, start) -> (chunk_simulator's examples, checks) with base key
  fold_in(PRNGKey(seed), split_id) (`split_key_args`): checks hold, per
  example, 'finite' (every pixel finite) and the per-channel 'sum' and 'sum_sq' of its
  pixels (float32, non-finite images zeroed), so the host never passes over the pixels."""
  simulate = chunk_simulator(recipe, size)

  def simulate_and_check(seed, split, start):
    # Derived here rather than eagerly: each eager random op is a compilation of its own.
    base_key = jax.random.fold_in(jax.random.PRNGKey(seed), split)
    out = simulate(base_key, start)
    image = out["image"]
    finite = jnp.isfinite(image).all(axis=(1, 2, 3))
    image = jnp.where(finite[:, None, None, None], image, 0.0)
    limit = np.iinfo(np.uint16).max
    checks = {"finite": finite, "sum": image.sum(axis=(1, 2)),
              "sum_sq": jnp.square(image).sum(axis=(1, 2)),
              "uint16_exact": ((image == jnp.round(image)) & (image >= 0)
                               & (image <= limit)).all(axis=(1, 2, 3))}
    return out, checks

  return jax.jit(simulate_and_check)


@functools.lru_cache(maxsize=16)
def chunk_simulator(recipe, size: int = CHUNK):
  """Jitted fn(base_key, start) -> `size` examples, example i simulated with
  fold_in(base_key, start + i); one compilation per recipe, size and process."""

  def simulate_chunk(base_key, start):
    indices = start + jnp.arange(size, dtype=jnp.uint32)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(base_key, indices)
    # On a host, groups of examples skip the substructure they lack (the vortex dominates).
    return sim_source.simulate(recipe, keys, skip_absent=jax.default_backend() == "cpu")

  return jax.jit(simulate_chunk)


def example_spec(recipe, size: int = 1) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes/dtypes of one simulated example (no simulation). Traced through
  the `size` chunk simulator, so a build's first chunk reuses this trace."""
  base_key = jax.ShapeDtypeStruct((2,), np.uint32)  # A raw key: no eager op compiles.
  spec = chunk_simulator(recipe, size).eval_shape(base_key, np.uint32(0))
  return {name: jax.ShapeDtypeStruct(s.shape[1:], s.dtype)
          for name, s in spec.items()}


def stored_image_dtype(recipe) -> type:
  """uint16 for recipes whose images are integer counts (Model I with its Poisson noise),
  float32 otherwise."""
  return np.uint16 if recipe.name == "model_i" and recipe.noise else np.float32


def feature_for(name: str, spec: jax.ShapeDtypeStruct, recipe):
  if name == "label":
    return tfds.features.ClassLabel(names=list(recipe.class_names))
  if name == "image":
    return tfds.features.Tensor(shape=tuple(spec.shape), dtype=stored_image_dtype(recipe),
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
  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Images stored as raw float32 bytes; records in key order.",
                   "1.2.0": "Uncompressed records; Model I counts stored as uint16; on CPU, "
                            "images rendered skipping absent substructure (equal to the "
                            "simulator's to float32 rounding)."}
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
    path = os.fspath(template.sharded_filepath(shard_index=0, num_shards=1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer = array_record_module.ArrayRecordWriter(path, ARRAY_RECORD_OPTIONS)
    labels, size = [], [0]

    def serialize_and_write(chunk):
      for record in serializer(chunk):
        writer.write(record)
        size[0] += len(record)

    bar = tqdm.tqdm(total=num, desc=f"{self.name}/{self.builder_config.name} {split}",
                    unit="example", disable=not self._progress, mininterval=1.0)
    # Serialising and writing run on a thread, one chunk behind, while the next simulates.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      pending = None
      for start, chunk, checks in self._checked_chunks(split, num):
        chunk = self._checked(split, start, chunk, checks)
        labels.append(chunk["label"].astype(np.int32))
        if pending is not None:
          pending.result()
        pending = pool.submit(serialize_and_write, chunk)
        bar.update(len(chunk["label"]))
      if pending is not None:
        pending.result()
    bar.close()
    writer.close()
    labels = np.concatenate(labels) if labels else np.zeros((0,), np.int32)
    self.record_labels[split] = labels
    return tfds.core.SplitInfo(name=split, shard_lengths=[len(labels)],
                               num_bytes=size[0], filename_template=template)

  def _checked(self, split: str, start: int, chunk: dict, checks: dict) -> dict:
    """The chunk's good examples (a non-finite image raises, or is skipped and
    counted with skip_bad); counts them and adds train images to the stats."""
    good = checks["finite"]
    self._check_storable(split, start, checks["uint16_exact"] | ~good)
    if not good.all():
      for offset in np.flatnonzero(~good):
        try:
          base.check_finite(chunk["image"][offset], f"{self.name}/{self.builder_config.name} "
                            f"{split} example {start + offset}")
        except base.BadInputError as error:
          if not self._skip_bad:
            raise error.with_skip_hint() from error
          self.report.skip(error)
      chunk = {k: v[good] for k, v in chunk.items()}
    self.report.written[split] += int(good.sum())
    chunk["image"] = self._stored(chunk["image"])
    if split == "train" and good.any():
      pixels = int(good.sum()) * int(np.prod(chunk["image"].shape[1:-1]))
      self._stats.add_sums(checks["sum"][good], checks["sum_sq"][good], pixels)
    return chunk

  def _check_storable(self, split: str, start: int, exact: np.ndarray) -> None:
    """exact [n]: whether uint16 holds image start + i exactly; with uint16 storage a value
    it cannot hold is an error, never rounded."""
    if stored_image_dtype(self.recipe) != np.float32 and not exact.all():
      raise ValueError(f"{self.name}/{self.builder_config.name} {split} example "
                       f"{start + int(np.flatnonzero(~exact)[0])} has values that are not "
                       f"integers in [0, 65535], which its uint16 storage cannot hold exactly.")

  def _stored(self, images: np.ndarray) -> np.ndarray:
    return images.astype(stored_image_dtype(self.recipe), copy=False)

  def _update_metadata(self):
    self.info.metadata.update({
        "pixel_stats": self._stats.result(),
        "build_args": self.build_args(),
        "recipe": self.recipe.name,
        "pixel_scale": self.recipe.pixel_scale,
        "report": self.report.to_dict(),
    })

  def _checked_chunks(self, split: str, num: int):
    """Yields (start, {name: array [n, ...]}, checks) in order (`checked_chunk_simulator`);
    the next chunk is dispatched before this one is returned, so it simulates meanwhile."""
    seed, split_number = split_key_args(self._seed, split)
    size = self._chunk
    simulate = checked_chunk_simulator(self.recipe, size)
    pending = simulate(seed, split_number, np.uint32(0)) if num else None
    for start in range(0, num, size):
      out = pending
      if start + size < num:
        pending = simulate(seed, split_number, np.uint32(start + size))
      n = min(size, num - start)
      out, checks = jax.tree.map(lambda v: np.asarray(v)[:n], out)
      yield start, out, checks

  def _chunks(self, split: str, num: int):
    """Yields (index, example) in order."""
    for start, out, checks in self._checked_chunks(split, num):
      self._check_storable(split, start, checks["uint16_exact"] | ~checks["finite"])
      if checks["finite"].all():  # Non-finite images stay float, for `_example` to name.
        out["image"] = self._stored(out["image"])
      for offset in range(len(out["image"])):
        yield start + offset, {k: v[offset] for k, v in out.items()}

  def _generate_examples(self, split: str, num: int):
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


def _varint(value: int) -> bytes:
  """Protobuf base-128 varint of an int64 (negative ones as 10-byte two's complement)."""
  value &= (1 << 64) - 1
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _header(tag: int, length: int) -> bytes:
  """Tag and length of a length-delimited protobuf field (wire type 2)."""
  return bytes([tag << 3 | 2]) + _varint(length)


class ChunkSerializer:
  """Serialises a chunk of examples to the tf.train.Example records that TFDS's
  own ExampleSerializer writes for these features (bytes-encoded tensors, integer
  and float scalars), in the protobuf wire format directly: each record is one join of
  cached field framings and its values' bytes (the tensors' rows are not copied before)."""

  _LIST_TAGS = {"bytes": 1, "float": 2, "int": 3}  # Feature.{bytes,float,int64}_list

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
    self._framings = {}

  def _framing(self, name: str, kind: str, value_length: int) -> bytes:
    """Everything of feature `name`'s map entry before its value's bytes: entry{1: key,
    2: Feature{list_tag: List{1: value}}} (a scalar list's one packed value included)."""
    cached = self._framings.get((name, value_length))
    if cached is None:
      key = _header(1, len(name)) + name.encode()
      in_list = _header(1, value_length)
      in_feature = _header(self._LIST_TAGS[kind], len(in_list) + value_length) + in_list
      feature_length = len(in_feature) + value_length
      entry = key + _header(2, feature_length) + in_feature
      cached = _header(1, len(entry) + value_length) + entry
      self._framings[(name, value_length)] = cached
    return cached

  def __call__(self, chunk: dict[str, np.ndarray]) -> list[bytes]:
    n = len(next(iter(chunk.values())))
    columns = [(name, kind, self._values(kind, chunk[name], n))
               for name, kind in self._kinds.items()]
    records = []
    for i in range(n):
      parts = []
      for name, kind, values in columns:
        value = values[i]
        parts += (self._framing(name, kind, len(value)), value)
      body = b"".join(parts)
      records.append(_header(1, len(body)) + body)  # Example{1: Features{1: entries}}
    return records

  @staticmethod
  def _values(kind: str, values: np.ndarray, n: int) -> list:
    """Each example's value bytes: the tensor's raw row, a little-endian float32, or an
    int64 varint (a one-element packed list)."""
    if kind == "bytes":
      rows = np.ascontiguousarray(values).reshape(n, -1).view(np.uint8)
      return [row.data for row in rows]  # Views: joined straight into the record.
    if kind == "float":
      packed = np.asarray(values, "<f4").reshape(n).tobytes()
      return [packed[4 * i:4 * i + 4] for i in range(n)]
    return [_varint(v) for v in np.asarray(values).astype(np.int64).reshape(n).tolist()]


Builder = LensfmSim
