"""lensfm.data.pipeline: grain over tfds.data_source -> global sharded batches."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from lensfm.data import build
from lensfm.data import grid
from lensfm.data import make_input
from lensfm.data import model_input
from lensfm.data import pipeline

BATCH = 8
PER_CLASS = 10  # 30 records: 24 train, 6 test.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline")
  rng = np.random.default_rng(0)
  for label, name in enumerate(("no_sub", "cdm", "axion")):
    os.makedirs(root / "raw" / name)
    for i in range(PER_CLASS):
      image = rng.random((64, 64)) * (label + 1)
      path = str(root / "raw" / name / f"{name}_sim_{i}.npy")
      if name == "axion":
        np.save(path, np.array([image, 1e-23 * (i + 1)], dtype=object))
      else:
        np.save(path, image)
  build.ensure_built("deeplense/model_ii", str(root / "data"),
                     str(root / "raw"), test_fraction=0.2, progress=False)
  return str(root / "data")


@pytest.fixture(scope="module")
def sharding():
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  return NamedSharding(mesh, P(("data", "fsdp")))


def _config(data_dir, **overrides):
  config = dict(source="tfds", name="deeplense/model_ii", data_dir=data_dir,
                image_size=64, channels=1, normalize="minmax", augment="",
                prefetch=2, num_workers=0)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _make(data_dir, sharding, seed=0, split="train", **overrides):
  return make_input(_config(data_dir, **overrides), global_batch_size=BATCH,
                    sharding=sharding, seed=seed, split=split)


def _host(batch):
  return jax.tree.map(np.asarray, batch)


def _take(data, n):
  return [_host(next(data)) for _ in range(n)]


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _fingerprints(batches):
  """Identifies records by their raw image bytes (host batches)."""
  return [b["image"][i].tobytes() for b in batches
          for i in range(len(b["image"])) if b["mask"][i]]


def test_global_sharded_batches(data_dir, sharding):
  data = _make(data_dir, sharding)
  batch = next(data)
  assert set(batch) == {"image", "label", "axion_mass", "mask"}
  assert batch["image"].shape == (BATCH, 64, 64, 1)
  assert batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  for value in batch.values():
    assert value.sharding.is_equivalent_to(sharding, value.ndim)
  image = np.asarray(batch["image"])
  np.testing.assert_allclose(image.min(axis=(1, 2, 3)), 0.0, atol=1e-6)
  np.testing.assert_allclose(image.max(axis=(1, 2, 3)), 1.0, atol=1e-6)
  labels, masses = np.asarray(batch["label"]), np.asarray(batch["axion_mass"])
  assert np.all((masses > 0) == (labels == 2))
  data.close()


def test_same_seed_same_batches_other_seed_differs(data_dir, sharding):
  a, b = _make(data_dir, sharding), _make(data_dir, sharding)
  batches_a, batches_b = _take(a, 4), _take(b, 4)
  for x, y in zip(batches_a, batches_b):
    _assert_same(x, y)
  other = _take(_make(data_dir, sharding, seed=1), 1)[0]
  assert not np.array_equal(other["image"], batches_a[0]["image"])


def test_processes_read_disjoint_slices_covering_the_split(data_dir):
  config = _config(data_dir)
  seen = []
  for process in range(2):
    batches = pipeline.host_batches(config, global_batch_size=BATCH, seed=0,
                                    process_index=process, process_count=2)
    epoch = [batches[i] for i in range(3)]  # 12 records / 4 per batch.
    assert all(b["image"].shape == (BATCH // 2, 64, 64, 1) for b in epoch)
    prints = _fingerprints(epoch)
    assert len(set(prints)) == 12
    seen.append(set(prints))
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == 24


def test_epochs_reshuffle_and_cover_everything(data_dir):
  batches = pipeline.host_batches(_config(data_dir), global_batch_size=BATCH,
                                  seed=0)
  first = _fingerprints([batches[i] for i in range(3)])
  second = _fingerprints([batches[i] for i in range(3, 6)])
  assert set(first) == set(second) and len(set(first)) == 24
  assert first != second


def test_resume_exactly_with_prefetch_and_augmentation(data_dir, sharding):
  overrides = dict(augment="rot90,flip,noise,blur", prefetch=3)
  data = _make(data_dir, sharding, seed=4, **overrides)
  _take(data, 2)
  state = json.loads(json.dumps(data.get_state()))
  expected = _take(data, 5)  # Crosses an epoch (3 batches per epoch).
  data.close()
  resumed = _make(data_dir, sharding, seed=4, **overrides)
  _take(resumed, 1)  # Its thread has read ahead; set_state must undo that.
  resumed.set_state(state)
  for batch in expected:
    _assert_same(_host(next(resumed)), batch)
  resumed.close()


def test_eval_split_single_pass_padded_with_mask(data_dir, sharding):
  data = _make(data_dir, sharding, split="test", augment="rot90,flip")
  assert data.num_batches == 1 and data.num_examples == 6
  batches = list(data)
  assert len(batches) == 1
  mask = np.asarray(batches[0]["mask"])
  assert mask.tolist() == [True] * 6 + [False] * 2
  assert np.all(np.asarray(batches[0]["image"])[~mask] == 0)
  with pytest.raises(StopIteration):
    next(data)
  data.reset()
  again = next(data)
  _assert_same(_host(again), _host(batches[0]))  # Not augmented: same pass.
  # Two processes yield the same number of batches, 3 real records each.
  for process in range(2):
    batches = pipeline.host_batches(_config(data_dir), global_batch_size=BATCH,
                                    seed=0, split="validation",
                                    process_index=process, process_count=2)
    assert len(batches) == 1 and batches[0]["mask"].sum() == 3


def test_labels_per_class_subset(data_dir):
  config = _config(data_dir, labels_per_class=2)
  batches = pipeline.host_batches(config, global_batch_size=BATCH, seed=0)
  draws = [batches[i] for i in range(3)]
  prints = _fingerprints(draws)
  labels = np.concatenate([b["label"] for b in draws])
  by_record = dict(zip(prints, labels))
  assert len(by_record) == 6
  assert sorted(by_record.values()) == [0, 0, 1, 1, 2, 2]
  other = pipeline.host_batches(_config(data_dir, labels_per_class=2,
                                        labels_seed=9),
                                global_batch_size=BATCH, seed=0)
  assert set(_fingerprints([other[i] for i in range(3)])) != set(by_record)


def test_balanced_indices_draw_every_class_equally():
  labels = np.array([0] * 7 + [1] * 2 + [-1])
  indices = np.arange(100, 110)
  chosen = pipeline.balanced_indices(indices, labels)
  counts = {c: int(np.isin(chosen, indices[labels == c]).sum()) for c in (0, 1, -1)}
  assert counts == {0: 7, 1: 7, -1: 1}
  assert set(chosen) == set(indices)


def test_standardize_uses_stored_statistics(data_dir, sharding):
  stats = build.read_metadata(os.path.join(
      data_dir, "deeplense", "model_ii", "1.0.0"))["pixel_stats"]
  raw = pipeline.host_batches(_config(data_dir), global_batch_size=BATCH,
                              seed=0)[0]
  batch = next(_make(data_dir, sharding, normalize="standardize"))
  np.testing.assert_allclose(
      np.asarray(batch["image"]),
      (raw["image"] - stats["mean"][0]) / stats["std"][0], rtol=1e-5,
      atol=1e-5)


def test_other_grids_are_mapped_like_every_other_input_path(data_dir, sharding):
  """64x64 records at Model II's 0.101"/px read by a 32 px model at 0.08"/px: the batch is
  the grid map of the raw records, the same function (and re-drawn sky) as predict and the
  simulator use for the same image."""
  raw = pipeline.host_batches(_config(data_dir), global_batch_size=BATCH, seed=0,
                              split="test")[0]
  source = _make(data_dir, sharding, split="test", image_size=32, pixel_scale=0.08,
                 normalize="none")
  batch = _host(next(source))
  assert batch["image"].shape == (BATCH, 32, 32, 1)
  mapped = np.asarray(grid.map_images(raw["image"], 0.101, 32, 0.08))
  real = raw["mask"]
  np.testing.assert_allclose(batch["image"][real], mapped[real], rtol=1e-5, atol=1e-6)
  files = _host(next(model_input.array_batches(
      {"image": raw["image"]}, src_scale=0.101, grid=model_input.Grid(32, 0.08, 1),
      normalization=model_input.Normalization("none"), batch_size=BATCH,
      sharding=sharding)))["image"]
  np.testing.assert_allclose(files[real], mapped[real], rtol=1e-5, atol=1e-6)
  assert pipeline.dataset_pixel_scale(
      tfds_info(data_dir), "deeplense/model_ii", _config(data_dir)) == 0.101


def tfds_info(data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder_from_directory(
      pipeline.find_dataset_dir("deeplense/model_ii", data_dir)).info


def test_clear_errors(data_dir, sharding):
  with pytest.raises(ValueError, match=r"\(64, 64, 1\).*channels=3"):
    _make(data_dir, sharding, channels=3)
  with pytest.raises(FileNotFoundError, match="lensfm.data.build"):
    _make(data_dir, sharding, name="deeplense/model_iii")
  with pytest.raises(ValueError, match="not in the dataset"):
    _make(data_dir, sharding, split="holdout")


def test_worker_processes_give_the_same_batches(data_dir, sharding):
  threads = _take(_make(data_dir, sharding, num_workers=0), 2)
  workers = _make(data_dir, sharding, num_workers=1)
  for x, y in zip(threads, _take(workers, 2)):
    _assert_same(x, y)
  state = workers.get_state()
  expected = _take(workers, 2)
  workers.set_state(state)
  for batch in expected:
    _assert_same(_host(next(workers)), batch)
  workers.close()


def test_explicit_axes_mesh_gets_its_own_sharding(data_dir):
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Explicit,))
  explicit = NamedSharding(mesh, P("data"))
  batch = next(_make(data_dir, explicit, augment="rot90"))
  assert batch["image"].sharding == explicit


def test_builds_deeplense_on_first_use_from_manual_dir(data_dir, tmp_path,
                                                      sharding):
  raw = os.path.join(data_dir, os.pardir, "raw")
  config = _config(str(tmp_path / "fresh"), manual_dir=raw)
  batch = next(make_input(config, global_batch_size=BATCH, sharding=sharding,
                          seed=0))
  assert batch["image"].shape == (BATCH, 64, 64, 1)
