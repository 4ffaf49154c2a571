"""Batches from a built TFDS dataset (ArrayRecord) with grain: `source='tfds'`.

Host side (numpy, grain):
  * the split is read with `tfds.builder_from_directory(...).as_data_source`
    (random access, no TensorFlow);
  * each process reads only its slice of the records, strided
    (records p, p + P, p + 2P, ... for process p of P = jax.process_count()),
    and makes batches of global_batch_size / P;
  * 'train' (the split name before any '[...]' slice is 'train'): a seeded
    global shuffle of the process's records (grain `shuffle`: a different
    permutation every epoch, no shuffle buffer) repeated forever, unless
    `single_pass` (evaluations: every split, 'train' included, is read once);
  * any other split: one pass in record order. The last batch is padded to
    full size with zero examples and 'mask' False, so shapes stay static and
    every process yields the same number of batches (`num_batches`); metrics
    must weigh examples by 'mask'. Afterwards `next` raises StopIteration
    (`reset()` starts the pass again);
  * `num_workers` grain worker processes (0: threads in this process) and a
    background thread that keeps `prefetch` batches ready, already copied to
    the devices as global arrays (`jax.make_array_from_process_local_data`),
    so the train step does not wait for the host.
Device side: one jitted function (out_shardings = the batch sharding) applies
the augmentations ('train' only) and the normalisation, with per-example keys
from fold_in(fold_in(PRNGKey(seed), split_id(split)), step), as `sim_source`
does; `transforms` holds the (shared) code.

State: {'grain': <grain iterator state>, 'step': batches consumed}. It is the
state after the last batch returned by `next` (not after what the background
thread read ahead), so `set_state` continues bit-for-bit where that was.

`config.data` fields read here:
  source:           'tfds'.
  name:             '<dataset>/<config>', e.g. 'deeplense/model_ii',
                    'lensfm_sim/model_ii' (built with `lensfm.data.build`).
  data_dir:         TFDS root (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
  manual_dir:       optional, deeplense and files only: the released .npy files,
                    or your folder / CSV catalogue (files/NAME; its fields:
                    builders/files.py); the dataset is built from them on first
                    use (`lensfm.data.build.ensure_built`) and reused afterwards.
  image_size, pixel_scale: the model's grid. The dataset's images (any size,
                    at its pixel scale, see `dataset_pixel_scale`) are mapped
                    onto it on device, before augmentation and normalisation.
  channels:         must equal the dataset's channels (a ValueError names both).
  source_pixel_scale: optional arcsec/pixel of the dataset's images, for
                    datasets whose metadata has none (it wins over the
                    metadata when set).
  normalize:        'zscore' (default) | 'minmax' | 'asinh' | 'standardize' (per-channel
                    train-split statistics stored at build time, or
                    `norm_stats`) | 'none'.
  norm_stats:       optional {'mean': [C], 'std': [C]} overriding the stored
                    statistics.
  augment:          comma-separated `transforms.AUGMENTATIONS` ('train' only).
  prefetch:         batches kept ready on the devices (default 2).
  num_workers:      grain worker processes (default 0).
  labels_per_class: optional int: 'train' keeps only this many records per
                    class, chosen by a permutation seeded with `labels_seed`
                    (default: the run seed), before the per-process slicing.
                    A class with fewer records keeps all (with a warning).
  labels_seed:      optional int, see labels_per_class.
  balanced:         optional bool: 'train' repeats every class's records up to the
                    largest class's count, so rare classes (lenses among thousands of
                    galaxies) are drawn as often as common ones.
  shuffle_buffer:   not used: grain shuffles by index over the whole split
                    (a full permutation per epoch), so no buffer is needed.
  The shuffle and augmentation seed is the `seed` argument (config.seed).
Split names: 'train', 'test', 'validation' (or a TFDS slice such as
'train[:90%]'); 'test' falls back to 'validation' and back if the dataset has
only the other; 'val' means 'validation'.

Batches: 'image' float32 [B, H, W, C], 'label' int32 [B], every other numeric
feature (e.g. 'axion_mass' float32), and 'mask' bool [B]. Strings (filename)
are dropped.
"""
from __future__ import annotations

import os
import queue
import threading
import warnings
from typing import Any, Mapping, Optional

from absl import flags
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from lensfm.data import build
from lensfm.data.builders import deeplense as deeplense_builder
from lensfm.data.builders import lensfm_sim as lensfm_sim_builder
from lensfm.data import grid as grid_lib
from lensfm.data import sim_source
from lensfm.data import transforms
from lensfm import errors
from lensfm import utils

_SPLIT_FALLBACKS = {"test": ("validation",), "validation": ("test",),
                    "val": ("validation", "test"), "eval": ("test",
                                                            "validation")}


# -- the dataset on disk -----------------------------------------------------------


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR",
                        os.path.join("~", "tensorflow_datasets"))


def find_dataset_dir(name: str, data_dir: Optional[str]) -> str:
  """<data_dir>/<dataset>/<config>/<newest version>, or a clear error."""
  data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
  if name.count("/") != 1:
    raise errors.UserError(f"config.data.name={name!r}; expected '<dataset>/<config>'"
                           ", e.g. 'deeplense/model_ii'.")
  config_dir = os.path.join(data_dir, name)
  versions = []
  if os.path.isdir(config_dir):
    versions = [v for v in os.listdir(config_dir)
                if os.path.isfile(os.path.join(config_dir, v,
                                               "dataset_info.json"))]
  if not versions:
    raise FileNotFoundError(
        f"No built dataset {name!r} under {data_dir} (looked for "
        f"{config_dir}/<version>/dataset_info.json). Build it with "
        f"`python -m lensfm.data.build {name} --data_dir={data_dir} ...`.")
  newest = max(versions, key=lambda v: tuple(int(x) for x in v.split(".")
                                             if x.isdigit()))
  return os.path.join(config_dir, newest)


def base_split(split: str) -> str:
  """'train[:90%]' -> 'train'."""
  return split.split("[", 1)[0]


def resolve_split(split: str, available) -> str:
  """The split to read: `split` itself, or a documented fallback."""
  name = base_split(split)
  if name in available:
    return split
  for fallback in _SPLIT_FALLBACKS.get(name, ()):
    if fallback in available:
      return fallback + split[len(name):]
  raise ValueError(f"Split {split!r} is not in the dataset; it has "
                   f"{sorted(available)}.")


def numeric_features(features) -> dict[str, np.dtype]:
  """{name: dtype in batches} of the features that can become jax arrays."""
  out = {}
  for name, feature in features.items():
    dtype = np.dtype(getattr(feature, "np_dtype", object))
    if dtype.kind in "fiub":
      out[name] = {"f": np.float32, "i": np.int32, "u": np.int32,
                   "b": np.bool_}[dtype.kind]
  out["label"] = np.int32
  out["image"] = np.float32
  return out


def dataset_pixel_scale(info, name: str, data_config) -> float:
  """Arcsec/pixel of a built dataset: config.data.source_pixel_scale if set, else its
  metadata's 'pixel_scale', else what its builder config declares (builds made before
  the metadata held it), else a ValueError saying what to set."""
  given = data_config.get("source_pixel_scale", None)
  if given:
    return float(given)
  metadata = dict(info.metadata or {}) if info.metadata else {}
  if metadata.get("pixel_scale"):
    return float(metadata["pixel_scale"])
  dataset, _, config = name.partition("/")
  if dataset == "deeplense":
    for c in deeplense_builder.CONFIGS:
      if c.name == config:
        return float(c.pixel_scale)
  if dataset == "lensfm_sim":
    overrides = dict(metadata.get("build_args", {}).get("recipe_overrides", {}) or {})
    return lensfm_sim_builder.get_recipe(config, overrides).pixel_scale
  column = (" or give its catalogue a pixel_scale column (arcsec/pixel per row)"
            if dataset == "files" else "")
  raise errors.UserError(f"Dataset {name!r} does not say its pixel scale (no 'pixel_scale' in "
                         "its metadata.json); set config.data.source_pixel_scale "
                         f"(arcsec/pixel){column}.")


def check_dataset_image_shape(features, data_config, name: str) -> tuple:
  shape = tuple(features["image"].shape)
  if len(shape) != 3:
    raise ValueError(f"Dataset {name!r} has images of shape {shape}; expected "
                     "(H, W, C).")
  sim_source.check_image_shape(shape, data_config, f"Dataset {name!r}")
  return shape


# -- which records this process reads ---------------------------------------------


def split_labels(dataset_dir: str, split: str, source) -> np.ndarray:
  """Labels per record: the index written at build time, else a scan."""
  path = os.path.join(dataset_dir, build.LABEL_INDEX_FILE.format(split=split))
  if os.path.isfile(path):
    labels = np.load(path)
    if len(labels) == len(source):
      return labels
  return build.read_labels(source)


def labels_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Sorted record indices: `per_class` per class, chosen by a seeded
  permutation within each class."""
  rng = np.random.default_rng(seed)
  chosen = []
  for label in np.unique(labels[labels >= 0]):  # -1: unlabelled, never a class.
    members = np.flatnonzero(labels == label)
    if len(members) < per_class:
      warnings.warn(f"labels_per_class={per_class}, but class {label} has only "
                    f"{len(members)} records; keeping them all.")
    chosen.append(members[rng.permutation(len(members))[:per_class]])
  return np.sort(np.concatenate(chosen))


def balanced_indices(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """`indices` with every class's records repeated up to the largest class's count (the
  last repeat cut short in record order; unlabelled -1 records kept once), so that every
  class is drawn equally often in an epoch: balanced sampling for rare classes."""
  classes = np.unique(labels[labels >= 0])
  if len(classes) < 2:
    return indices
  most = max(int((labels == c).sum()) for c in classes)
  parts = [np.resize(indices[labels == c], most) for c in classes]
  return np.sort(np.concatenate(parts + [indices[labels < 0]]), kind="stable")


def process_indices(indices: np.ndarray, process_index: int,
                    process_count: int) -> np.ndarray:
  """This process's records: strided, so every process gets a fair share."""
  return indices[process_index::process_count]


def eval_num_batches(num_records: int, local_batch: int,
                     process_count: int) -> int:
  """Batches every process yields in one pass (the busiest process decides)."""
  most = -(-num_records // process_count)
  return max(-(-most // local_batch), 1 if num_records else 0)


class ProcessSource:
  """grain random-access source: this process's records as numeric dicts,
  padded up to `length` with zero examples whose 'mask' is False."""

  def __init__(self, source, indices: np.ndarray, dtypes: Mapping,
               shapes: Mapping, length: Optional[int] = None):
    self._source = source
    self._indices = np.asarray(indices, np.int64)
    self._dtypes = dict(dtypes)
    self._shapes = dict(shapes)
    self._length = len(self._indices) if length is None else int(length)

  def __len__(self) -> int:
    return self._length

  def _convert(self, record) -> dict[str, np.ndarray]:
    out = {k: np.asarray(record[k], dtype) for k, dtype in self._dtypes.items()}
    out["mask"] = np.bool_(True)
    return out

  def _padding(self) -> dict[str, np.ndarray]:
    out = {k: np.zeros(self._shapes[k], dtype)
           for k, dtype in self._dtypes.items()}
    out["mask"] = np.bool_(False)
    return out

  def __getitem__(self, index: int):
    return self._getitems([index])[0]

  def _getitems(self, indices):
    indices = [int(i) for i in indices]
    real = [int(self._indices[i]) for i in indices if i < len(self._indices)]
    records = iter(self._source.__getitems__(real) if real else [])
    return [self._convert(next(records)) if i < len(self._indices)
            else self._padding() for i in indices]

  def __repr__(self) -> str:
    return f"ProcessSource({len(self._indices)} records, length {self._length})"


# -- the Input ---------------------------------------------------------------------


def _ensure_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; programs that never ran
  `absl.app.run` (pytest, argparse mains, notebooks) must mark them parsed
  (with their defaults) first."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class _End:
  """Marks the end of a single-pass split in the prefetch queue."""


class GrainInput:
  """Global, sharded batches from a grain dataset; see the module docstring."""

  def __init__(self, batches: grain.MapDataset, *,
               sharding: jax.sharding.NamedSharding, prepare, prefetch: int = 2,
               num_workers: int = 0, num_batches: Optional[int] = None,
               num_examples: int = 0):
    self.sharding = sharding
    # Host data enter the devices on an Auto-axes twin of the mesh (the same
    # devices and layout), so the jitted `prepare` can mix them with its own
    # arrays; its out_shardings gives the batches the caller's `sharding`.
    self._host_sharding = transforms.auto_axes_twin(sharding)
    self.num_batches = num_batches  # None: endless.
    self.num_examples = num_examples  # Real examples of the split (global).
    self._prepare = prepare
    self._prefetch = max(int(prefetch), 1)
    dataset = batches.to_iter_dataset(grain.ReadOptions(
        num_threads=self._prefetch, prefetch_buffer_size=self._prefetch))
    if num_workers:
      _ensure_absl_flags_parsed()
      dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=int(num_workers)))
    self._iterator = iter(dataset)
    self._step = 0
    self._state = self._initial_state = {
        "grain": self._iterator.get_state(), "step": 0}
    self._queue: Optional[queue.Queue] = None
    self._stop: Optional[threading.Event] = None
    self._thread: Optional[threading.Thread] = None

  # Background thread: read, then copy to the devices, `prefetch` ahead.
  def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
    def put(item) -> bool:
      while not stop.is_set():
        try:
          out.put(item, timeout=0.1)
          return True
        except queue.Full:
          continue
      return False

    try:
      while not stop.is_set():
        try:
          local = next(self._iterator)
        except StopIteration:
          put(_End())
          return
        state = self._iterator.get_state()
        arrays = {k: jax.make_array_from_process_local_data(
            self._host_sharding, v) for k, v in local.items()}
        if not put((arrays, state)):
          return
    except BaseException as error:  # pylint: disable=broad-except
      put(error)  # Re-raised by `next` in the consumer thread.

  def _start(self) -> None:
    self._queue = queue.Queue(maxsize=self._prefetch)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._produce,
                                    args=(self._queue, self._stop),
                                    name="lensfm-input-prefetch", daemon=True)
    self._thread.start()

  def close(self) -> None:
    """Stops the background thread and grain's worker processes; the input
    cannot be used afterwards."""
    self._stop_producer()
    close_grain = getattr(self._iterator, "close", None)
    if close_grain is not None:
      close_grain()

  def _stop_producer(self) -> None:
    """Stops the background thread (`next` starts a new one)."""
    if self._thread is None:
      return
    self._stop.set()
    while self._thread.is_alive():
      try:  # Unblock a producer waiting on a full queue.
        self._queue.get_nowait()
      except queue.Empty:
        pass
      self._thread.join(timeout=0.05)
    self._thread = self._queue = self._stop = None

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, jax.Array]:
    if self._thread is None:
      self._start()
    item = self._queue.get()
    if isinstance(item, _End):
      self._queue.put(item)  # Stay exhausted.
      raise StopIteration
    if isinstance(item, BaseException):
      self._stop_producer()
      raise item
    arrays, state = item
    batch = self._prepare(arrays, np.uint32(self._step))
    self._step += 1
    self._state = {"grain": state, "step": self._step}
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"grain": self._state["grain"], "step": self._state["step"]}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._stop_producer()
    self._iterator.set_state(state["grain"])
    self._step = int(state["step"])
    self._state = {"grain": state["grain"], "step": self._step}

  def reset(self) -> None:
    """Back to the first batch (e.g. for another pass over an eval split)."""
    self.set_state(self._initial_state)


def make_prepare(*, sharding, seed: int, split: str, normalize: str, augment,
                 stats, mapper=None):
  """Jitted (batch, step) -> batch: the map onto the model grid (`mapper`, per
  example), then augmentations + normalisation, on device."""
  transform = transforms.make_transform(normalize, augment, stats)
  base_key = jax.random.fold_in(jax.random.PRNGKey(seed),
                                sim_source.split_id(base_split(split)))

  def prepare(batch, step):
    key = jax.random.fold_in(base_key, step)
    keys = transforms.sharded_example_keys(key, batch["image"].shape[0],
                                           sharding)
    batch = dict(batch)
    if mapper is not None:
      batch["image"] = jax.vmap(mapper)(batch["image"])
    batch["image"] = jax.vmap(transform)(keys, batch["image"])
    return batch

  return jax.jit(prepare, out_shardings=sharding)


def stored_normalization_stats(data_config, info, area_ratio: float = 1.0) -> Optional[dict]:
  """'standardize' statistics stored at build time (native grid), scaled by the pixel-area
  ratio of the map onto the model grid (flux per pixel scales with the area); the rule
  for every source is `model_input.normalization_stats`."""
  if data_config.get("normalize", transforms.DEFAULT_NORMALIZE) != "standardize":
    return None
  given = data_config.get("norm_stats", None)
  if given:
    return utils.as_dict(given)
  stats = dict(info.metadata or {}).get("pixel_stats") if info.metadata else None
  if not stats:
    raise ValueError("normalize='standardize' needs pixel statistics, but the "
                     "dataset has none in metadata.json; rebuild it with "
                     "lensfm.data.build or set config.data.norm_stats.")
  return {k: [float(v) * area_ratio for v in stats[k]] for k in ("mean", "std")}


def built_info(data_config) -> tfds.core.DatasetInfo:
  """The DatasetInfo of config.data's built dataset."""
  dataset_dir = find_dataset_dir(data_config.name, data_config.get("data_dir", None))
  return tfds.builder_from_directory(dataset_dir).info


def built_normalization_stats(data_config) -> Optional[dict]:
  """`stored_normalization_stats` of config.data's built dataset, read from disk."""
  info = built_info(data_config)
  src_scale = dataset_pixel_scale(info, data_config.name, data_config)
  _, dst_scale = grid_lib.model_grid(data_config)
  return stored_normalization_stats(data_config, info, grid_lib.area_ratio(src_scale, dst_scale))


def build_if_needed(data_config, show: bool = True) -> None:
  """Builds a deeplense or files dataset from config.data.manual_dir on first use.

  Every process may call this: each builds into its own temporary directory
  and the first to finish publishes (see lensfm.data.build); later runs reuse.
  """
  name, manual_dir = data_config.get("name", ""), data_config.get(
      "manual_dir", "")
  if not manual_dir or not build.builds_from_files(name):
    return
  result = build.ensure_built_from_config(data_config, progress=show)
  if result.built and show:
    print(result.summary(), flush=True)


def make(data_config, *, global_batch_size: int,
         sharding: jax.sharding.NamedSharding, seed: int, split: str = "train",
         process_index: Optional[int] = None,
         process_count: Optional[int] = None, single_pass: bool = False) -> GrainInput:
  """Builds the grain input (see the module docstring).

  `process_index` / `process_count` default to jax's; tests pass them to
  look at one process's host batches (`host_batches`).
  """
  process_index = (jax.process_index() if process_index is None
                   else process_index)
  process_count = (jax.process_count() if process_count is None
                   else process_count)
  plan = _plan(data_config, global_batch_size=global_batch_size, seed=seed,
               split=split, process_index=process_index,
               process_count=process_count, single_pass=single_pass)
  training = base_split(split) == "train" and not single_pass
  prepare = make_prepare(
      sharding=sharding, seed=seed, split=split,
      normalize=data_config.get("normalize", transforms.DEFAULT_NORMALIZE),
      augment=(transforms.parse_augment(data_config.get("augment", ""))
               if training else ()),
      stats=stored_normalization_stats(data_config, plan["info"], plan["area_ratio"]),
      mapper=plan["mapper"])
  return GrainInput(plan["batches"], sharding=sharding, prepare=prepare,
                    prefetch=data_config.get("prefetch", 2),
                    num_workers=data_config.get("num_workers", 0),
                    num_batches=plan["num_batches"],
                    num_examples=plan["num_examples"])


def host_batches(data_config, *, global_batch_size: int, seed: int,
                 split: str = "train", process_index: int = 0,
                 process_count: int = 1, single_pass: bool = False) -> grain.MapDataset:
  """One process's host batches (numpy, before normalisation): what `make`
  feeds to the devices. For tests and inspection."""
  return _plan(data_config, global_batch_size=global_batch_size, seed=seed,
               split=split, process_index=process_index,
               process_count=process_count, single_pass=single_pass)["batches"]


def _plan(data_config, *, global_batch_size: int, seed: int, split: str,
          process_index: int, process_count: int,
          single_pass: bool = False) -> dict[str, Any]:
  """Opens the dataset and lays out this process's grain MapDataset."""
  if global_batch_size % process_count:
    raise ValueError(f"Global batch size {global_batch_size} must be divisible "
                     f"by the number of processes ({process_count}).")
  local_batch = global_batch_size // process_count
  name = data_config.get("name", None)
  if not name:
    raise errors.UserError("config.data.name must name a built dataset when "
                           "config.data.source='tfds'.")
  build_if_needed(data_config, show=process_index == 0)
  dataset_dir = find_dataset_dir(name, data_config.get("data_dir", None))
  builder = tfds.builder_from_directory(dataset_dir)
  features = builder.info.features
  image_shape = check_dataset_image_shape(features, data_config, name)
  split = resolve_split(split, builder.info.splits.keys())
  source = builder.as_data_source(split=split)
  training = base_split(split) == "train" and not single_pass

  indices = np.arange(len(source))
  per_class = data_config.get("labels_per_class", None)
  balanced = training and data_config.get("balanced", False)
  if (per_class or balanced) and training:
    labels = split_labels(dataset_dir, split, source)
  if per_class and training:
    indices = labels_subset(labels, int(per_class),
                            int(data_config.get("labels_seed", seed)))
  if balanced:
    indices = balanced_indices(indices, labels[indices])
  local = process_indices(indices, process_index, process_count)
  if training and len(local) < 1:
    raise ValueError(f"Process {process_index} of {process_count} has no "
                     f"records of {name} {split} ({len(indices)} in all).")

  dtypes = numeric_features(features)
  shapes = {k: (image_shape if k == "image" else
                tuple(getattr(features[k], "shape", ()) or ())) for k in dtypes}
  if training:
    records = ProcessSource(source, local, dtypes, shapes)
    dataset = grain.MapDataset.source(records).shuffle(seed=seed % 2**32)
    dataset = dataset.repeat().batch(local_batch, drop_remainder=True)
    num_batches = None
  else:
    num_batches = eval_num_batches(len(indices), local_batch, process_count)
    records = ProcessSource(source, local, dtypes, shapes,
                            length=num_batches * local_batch)
    dataset = grain.MapDataset.source(records).batch(local_batch)
  src_scale = dataset_pixel_scale(builder.info, name, data_config)
  dst_size, dst_scale = grid_lib.model_grid(data_config)
  return {"batches": dataset, "info": builder.info, "num_batches": num_batches,
          "num_examples": len(indices), "pixel_scale": src_scale,
          "mapper": grid_lib.make_mapper(image_shape, src_scale, dst_size, dst_scale),
          "area_ratio": grid_lib.area_ratio(src_scale, dst_scale)}
