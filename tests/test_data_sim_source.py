"""lensfm.data.sim_source: endless on-device simulated batches (8 CPU devices)."""
import json

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from lensfm.data import grid
from lensfm.data import make_input
from lensfm.data import sim_source

NUM_PIX = 16
BATCH = 16


@pytest.fixture(scope="module")
def sharding():
  # The trainer's layout: batch over ('data', 'fsdp').
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  return NamedSharding(mesh, P(("data", "fsdp")))


def _config(**overrides):
  config = dict(source="sim", recipe="model_ii",
                recipe_overrides={"num_pix": NUM_PIX}, image_size=NUM_PIX,
                channels=1, normalize="minmax", augment="")
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _make(sharding, seed=0, split="train", **overrides):
  return make_input(_config(**overrides), global_batch_size=BATCH,
                    sharding=sharding, seed=seed, split=split)


def _host(batch):
  return jax.tree.map(np.asarray, batch)


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batches_are_global_sharded_and_typed(sharding):
  data = _make(sharding)
  batch = next(data)
  assert batch["image"].shape == (BATCH, NUM_PIX, NUM_PIX, 1)
  assert batch["image"].dtype == np.float32
  assert batch["label"].shape == (BATCH,) and batch["label"].dtype == np.int32
  for key in ("axion_mass", "n_subhalos", "sub_mass_fraction", "theta_e",
              "mask"):
    assert batch[key].shape == (BATCH,)
  for value in batch.values():
    assert value.sharding.is_equivalent_to(sharding, value.ndim)
    # Each of the 8 devices holds its own 2 examples.
    assert {s.data.shape[0] for s in value.addressable_shards} == {2}
  image = np.asarray(batch["image"])
  assert np.all(np.isfinite(image))
  assert image.min() == 0.0 and image.max() == 1.0  # Per-image minmax.
  assert set(np.asarray(batch["label"]).tolist()) <= {0, 1, 2}
  assert np.asarray(batch["mask"]).all()


def test_same_seed_same_batches_other_seed_or_split_differ(sharding):
  a_input, b_input = _make(sharding), _make(sharding)
  a = [_host(next(a_input)) for _ in range(2)]
  b = [_host(next(b_input)) for _ in range(2)]
  for x, y in zip(a, b):
    _assert_same(x, y)
  assert not np.array_equal(a[0]["image"], a[1]["image"])  # Steps differ.
  other_seed = _host(next(_make(sharding, seed=1)))
  assert not np.array_equal(other_seed["image"], a[0]["image"])
  test_split = _host(next(_make(sharding, split="test")))
  assert not np.array_equal(test_split["image"], a[0]["image"])


def test_state_resumes_exactly_and_compiles_once(sharding):
  augment = "rot90,flip,noise,scale"
  data = _make(sharding, seed=3, augment=augment)
  next(data)
  state = json.loads(json.dumps(data.get_state()))  # As a checkpoint holds it.
  assert state == {"step": 1}
  expected = [_host(next(data)) for _ in range(3)]
  resumed = _make(sharding, seed=3, augment=augment)
  resumed.set_state(state)
  for batch in expected:
    _assert_same(_host(next(resumed)), batch)
  assert data.compilations() == 1 and resumed.compilations() == 1
  plain = _host(_make(sharding, seed=3).batch_at(1))
  np.testing.assert_array_equal(plain["label"], expected[0]["label"])
  assert not np.array_equal(plain["image"], expected[0]["image"])  # Augmented.


def test_splits_have_fixed_ids():
  assert [sim_source.split_id(s) for s in ("train", "validation", "test")] == [
      0, 1, 2]
  assert sim_source.split_id("val") == 1
  assert sim_source.split_id("holdout") not in (0, 1, 2)


def test_recipe_is_mapped_onto_the_model_grid(sharding):
  """A 16 px recipe at 0.101"/px for a 24 px model at 0.05"/px: the batch is the grid map
  of the recipe's raw images (upsampled and padded with re-drawn sky)."""
  raw = _host(next(_make(sharding, normalize="none", split="test")))
  mapped = _host(next(_make(sharding, normalize="none", split="test", image_size=24,
                            pixel_scale=0.05)))
  assert mapped["image"].shape == (BATCH, 24, 24, 1)
  expected = np.asarray(grid.map_images(raw["image"], 0.101, 24, 0.05))
  np.testing.assert_allclose(mapped["image"], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(mapped["label"], raw["label"])


def test_channel_mismatch_names_both(sharding):
  with pytest.raises(ValueError, match=r"\(16, 16, 1\).*channels=3"):
    _make(sharding, channels=3)


def test_unknown_recipe_and_augmentation_are_errors(sharding):
  with pytest.raises(ValueError, match="recipe"):
    _make(sharding, recipe="model_x")
  with pytest.raises(ValueError, match="unknown augmentations"):
    _make(sharding, augment="rot90,cutmix")
