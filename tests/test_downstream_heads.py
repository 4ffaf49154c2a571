"""Downstream objectives and adaptation modes on synthetic batches (no simulator), plus
init_from checks and exact, reproducible label subsets."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm import config_args
from lensfm import data as data_lib
from lensfm.data import pipeline
from lensfm.data import sim_pool
from lensfm.tasks import finetune
from lensfm.train import contract
from lensfm.train import precision
from lensfm.objectives import regress
from lensfm.objectives import superres
from lensfm.train import checkpoint as ckpt_lib
from lensfm.train import sharding
from lensfm.train import trainer as trainer_lib
from lensfm import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# One device: these tests are about what is trained, not how it is sharded
# (tests/test_train_step.py covers sharding), and single-device steps compile faster.
ONE_DEVICE = jax.devices()[:1]


def downstream_config(name="finetune_classify.py", arg="", **overrides):
  c = config_args.load(os.path.join(ROOT, "configs", f"{name}:runlocal{',' + arg if arg else ''}"))
  c.batch_size = 16
  c.evals = {}
  for k, v in overrides.items():
    c[k] = v
  return c


def synthetic_batch(trainer, seed=0, n=16, size=32, **labels):
  rng = np.random.default_rng(seed)
  batch = {"image": rng.random((n, size, size, 1), np.float32),
           "label": rng.integers(0, 3, n).astype(np.int32),
           "mask": np.ones(n, bool), **labels}
  return {k: jax.device_put(v, trainer.data_sharding) for k, v in batch.items()}


def flat(tree):
  return {utils.path_to_str(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def make_trainer(config):
  return trainer_lib.Trainer(config, "/tmp/unused", devices=ONE_DEVICE)


def train(config, steps=3):
  trainer = make_trainer(config)
  state = trainer.init_state()
  before = flat(state["params"])
  step = trainer.compile_step()
  for i in range(steps):
    state, metrics = step(state, synthetic_batch(trainer, seed=i))
  trainer.final_state = state
  return trainer, before, flat(state["params"]), metrics


def test_linear_probe_leaves_encoder_bit_for_bit_unchanged():
  trainer, before, after, metrics = train(downstream_config(arg="mode=linear"))
  assert trainer.config.optim.freeze == "^encoder/"
  assert trainer.objective.encoder_frozen(trainer.abstract_state["params"]["encoder"])
  encoder = [k for k in before if k.startswith("encoder/")]
  assert len(encoder) > 10
  for k in encoder:
    np.testing.assert_array_equal(after[k], before[k], err_msg=k)
  assert not np.array_equal(after["head/out/kernel"], before["head/out/kernel"])
  assert np.isfinite(float(metrics["loss"])) and 0 <= float(metrics["accuracy"]) <= 1
  # The probe standardises features (MAE's protocol); the running statistics are the
  # exact average of the three batches' statistics (the encoder did not change).
  extra = jax.device_get(trainer.final_state["extra"])
  assert float(extra["feature_count"]) == 3
  features = jax.jit(trainer.objective.features)(trainer.final_state["params"], jnp.concatenate(
      [synthetic_batch(trainer, seed=i)["image"] for i in range(3)]))
  batch_means = np.asarray(features).reshape(3, 16, -1).mean(1)
  np.testing.assert_allclose(extra["feature_mean"], batch_means.mean(0), rtol=1e-4, atol=1e-5)


def test_full_finetune_updates_encoder_with_layer_decay():
  trainer, before, after, _ = train(downstream_config())
  assert trainer.config.optim.layer_decay == 0.75
  assert not trainer.objective.encoder_frozen(trainer.abstract_state["params"]["encoder"])
  assert not np.array_equal(after["encoder/patch_embed/kernel"], before["encoder/patch_embed/kernel"])
  # The classification loss starts at log(3): the head is zero-initialised.
  assert not before["head/out/kernel"].any() and not before["head/out/bias"].any()


def test_regression_masks_examples_the_target_does_not_apply_to():
  c = downstream_config("finetune_regress.py")
  # Batch-standardised features would couple the examples through the batch statistics;
  # what is tested here is the target mask of the loss terms.
  c.objective.feature_norm = "none"
  trainer = make_trainer(c)
  objective = trainer.objective
  loss_fn = jax.jit(lambda p, b: objective.loss(p, {}, b, None, 0))
  assert objective.stats["log10_axion_mass"] == pytest.approx((-23., 2 / np.sqrt(12)))
  params = trainer.init_state()["params"]
  mass = np.where(np.arange(16) % 2 == 0, 10.**-22.5, 0.).astype(np.float32)
  mask = np.arange(16) < 12
  batch = synthetic_batch(trainer, axion_mass=mass, mask=mask)
  loss, (metrics, _) = loss_fn(params, batch)
  # Zero-initialised head: predictions are the prior mean -23; applicable examples are
  # the 6 unpadded axions at -22.5, so the MAE is 0.5 dex.
  assert float(metrics["mae_log10_axion_mass"]) == pytest.approx(0.5, rel=1e-5)
  changed = dict(batch)
  images = np.asarray(batch["image"]).copy()
  images[(mass == 0) | ~mask] = 0.  # Non-axion and padded examples: new images.
  changed["image"] = jax.device_put(images, trainer.data_sharding)
  params = jax.tree.map(lambda x: x + 0.01, params)  # A head that depends on the image.
  loss_a, _ = loss_fn(params, batch)
  loss_b, _ = loss_fn(params, changed)
  assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-6)
  out = jax.jit(objective.eval_outputs)(params, {}, batch)
  np.testing.assert_array_equal(np.asarray(out["valid_log10_axion_mass"]), (mass > 0) & mask)
  with pytest.raises(ValueError, match="needs the batch key 'theta_e'"):
    regress.read_target({"image": batch["image"]}, "theta_e")


def test_superres_starts_as_bicubic():
  c = downstream_config("superres.py")
  trainer = make_trainer(c)
  state = trainer.init_state()
  batch = synthetic_batch(trainer)
  out = jax.jit(trainer.objective.eval_outputs)(state["params"], {}, batch)
  np.testing.assert_allclose(out["psnr"], out["psnr_bicubic"], rtol=1e-5)
  # Shapes only (no compilation): the pictures and the loss with its metrics.
  pictures = jax.eval_shape(trainer.objective.pictures, state["params"], {}, batch)
  assert {k: v.shape for k, v in pictures.items()} == {k: (16, 32, 32, 1) for k in
                                                       ("LR", "bicubic", "SR", "HR")}
  loss, (metrics, _) = jax.eval_shape(lambda p, b: trainer.objective.loss(p, {}, b, None, 0),
                                      state["params"], batch)
  assert loss.shape == () and set(metrics) == {"psnr", "psnr_bicubic"}
  # Pixel shuffle puts channel (i * f + j) at sub-pixel (i, j).
  x = jnp.arange(4.).reshape(1, 1, 1, 4)
  np.testing.assert_array_equal(superres.pixel_shuffle(x, 2)[0, ..., 0], [[0, 1], [2, 3]])


def test_resnet_baseline_builds_through_the_same_config():
  c = downstream_config(arg="mode=resnet")
  assert c.model.name == "resnet" and not c.init_from
  trainer = make_trainer(c)  # Shapes only: model, head, optimizer and shardings.
  names = flat(jax.tree.map(lambda s: np.zeros(()), trainer.abstract_state["params"]))
  assert any(k.startswith("encoder/stages") for k in names) and "head/out/kernel" in names
  loss, (metrics, _) = jax.eval_shape(
      lambda p, e, b: trainer.objective.loss(p, e, b, None, 0),
      trainer.abstract_state["params"], trainer.abstract_state["extra"],
      trainer_lib.abstract_batch(c))
  assert loss.shape == () and "accuracy" in metrics


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A pretraining checkpoint (MAE, the runlocal ViT) written without training."""
  c = config_args.load(os.path.join(ROOT, "configs", "mae_vit_b.py:runlocal"))
  c.data.image_size = 32
  c.batch_size = 16
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  trainer = trainer_lib.Trainer(c, workdir, devices=ONE_DEVICE)
  state = trainer.init_state()
  ckpt = ckpt_lib.Checkpointer(workdir)
  ckpt.save(1, state, {"step": 1}, c.to_dict())
  ckpt.close()
  return workdir, jax.device_get(state["params"]["encoder"])


def test_init_from_loads_the_encoder(pretrained):
  path, encoder = pretrained
  c = downstream_config(init_from=path)
  contract.resolve(path).check_fits(c)
  params = make_trainer(c).init_state()["params"]
  got, want = flat(params["encoder"]), flat(encoder)
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("field,value,message", [
    ("patch_size", 4, "model.patch_size: checkpoint 8 vs config 4"),
    ("width", 32, "model.width: checkpoint 64 vs config 32"),
    ("name", "resnet", "model.name: checkpoint 'vit' vs config 'resnet'"),
])
def test_mismatched_backbone_fails_naming_the_difference(pretrained, field, value, message):
  c = downstream_config(init_from=pretrained[0])
  c.model[field] = value
  with pytest.raises(ValueError, match="different backbone") as error:
    contract.resolve(c.init_from).check_fits(c)
  assert message in str(error.value)


def test_missing_checkpoint_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    contract.start_from(downstream_config(init_from=str(tmp_path / "nowhere")))
  with pytest.raises(FileNotFoundError, match="No checkpoint found"):
    contract.start_from(downstream_config(init_from=str(tmp_path)))


@pytest.mark.parametrize("have,want", [(1, 3), (3, 1), (3, 5)])
def test_input_bands_adapt_by_the_documented_rule(have, want):
  """The first convolution's filters, averaged over the old bands and replicated (scaled
  by have / want), give an image whose bands are equal the activations it had before."""
  c = downstream_config()
  model = precision.get_model(c.model)
  image = np.random.default_rng(0).random((2, 32, 32, 1), np.float32)
  params = model.init(jax.random.key(0), np.repeat(image, have, -1))["params"]
  adapted = contract.adapt_input_bands(params, have, want)
  kernel = adapted["patch_embed"]["kernel"]
  assert kernel.shape[-2] == want
  before = model.apply({"params": params}, np.repeat(image, have, -1))["pooled"]
  after = model.apply({"params": adapted}, np.repeat(image, want, -1))["pooled"]
  np.testing.assert_allclose(after, before, rtol=2e-4, atol=2e-5)


def test_a_one_band_checkpoint_starts_a_three_band_run(pretrained):
  c = downstream_config(init_from=pretrained[0])
  c.data.channels = 3
  contract.start_from(c).check_fits(c)
  params = make_trainer(c).init_state()["params"]["encoder"]
  want = pretrained[1]["patch_embed"]["kernel"]
  np.testing.assert_allclose(params["patch_embed"]["kernel"],
                             np.repeat(want / 3, 3, axis=-2), rtol=1e-6)


def test_init_from_with_another_normalisation_fails_clearly(pretrained):
  c = downstream_config(init_from=pretrained[0])
  c.data.normalize = "minmax"
  with pytest.raises(ValueError, match="normalize='zscore' images, but this run has "
                     "config.data.normalize='minmax'"):
    contract.start_from(c).check_fits(c)


def fake_pool(n_per_class=4, classes=3, size=8):
  labels = np.repeat(np.arange(classes), n_per_class).astype(np.int32)
  images = (labels[:, None, None, None] * 100 + np.arange(len(labels))[:, None, None, None]
            + np.zeros((1, size, size, 1))).astype(np.float32)
  return {"image": images, "label": labels}


def test_pool_input_cycles_the_pool_reproducibly():
  mesh = sharding.make_mesh((("data", -1), ("fsdp", 1)), ONE_DEVICE)
  pool = fake_pool()
  make = lambda seed: sim_pool.PoolInput(pool, global_batch_size=8, sharding=sharding.batch_sharding(
      mesh), seed=seed, normalize="none")
  source = make(0)
  # Each image is constant: pixel value = 100 * label + pool index.
  seen = [np.asarray(next(source)["image"])[:, 0, 0, 0] for _ in range(3)]
  epoch = np.concatenate(seen)[:12]  # The first 12 positions are one permutation of the pool.
  assert sorted(epoch.tolist()) == sorted(pool["image"][:, 0, 0, 0].tolist())
  batch = next(source)  # Labels travel with their images.
  np.testing.assert_array_equal(np.asarray(batch["label"]),
                                (np.asarray(batch["image"])[:, 0, 0, 0] // 100).astype(int))
  state = source.get_state()
  again = make(0)
  again.set_state(state)
  np.testing.assert_array_equal(np.asarray(next(again)["image"]), np.asarray(next(source)["image"]))
  other = make(1)
  assert not np.array_equal(np.asarray(next(other)["image"]), seen[0])


def test_labels_per_class_is_exact_and_reproducible():
  data = config_args.load(os.path.join(ROOT, "configs", "finetune_classify.py:runlocal")).data
  a = sim_pool.draw_pool(data, 3, seed=0)
  b = sim_pool.draw_pool(data, 3, seed=0)
  c = sim_pool.draw_pool(data, 3, seed=1)
  np.testing.assert_array_equal(np.bincount(a["label"], minlength=3), [3, 3, 3])
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert not np.array_equal(a["image"], c["image"])
  assert a["image"].shape == (9, 32, 32, 1)
  with pytest.raises(ValueError, match="labels_per_class=0"):
    sim_pool.draw_pool(data, 0, seed=0)
  # TFDS datasets subset by record index (lensfm.data.pipeline): exact per class too.
  labels = np.repeat([0, 1, 2], [50, 20, 30])
  picked = pipeline.labels_subset(labels, 10, seed=3)
  np.testing.assert_array_equal(np.bincount(labels[picked]), [10, 10, 10])
  np.testing.assert_array_equal(picked, pipeline.labels_subset(labels, 10, seed=3))


def test_regression_flags_values_outside_the_training_range():
  c = downstream_config("finetune_regress.py")
  c.objective.targets = ("log10_axion_mass", "theta_e")
  c.objective.target_stats = {"theta_e": [1., 0.2]}
  c.objective.target_ranges = {"theta_e": [0.5, 1.5]}
  objective = regress.Objective(c, precision.get_model(c.model))
  assert objective.ranges == {"log10_axion_mass": (-24., -22.), "theta_e": (0.5, 1.5)}
  flags = objective.output_flags({"log10_axion_mass": np.array([-23., -21.1, -22.]),
                                  "theta_e": np.array([1., 1., 2.])})
  assert flags == ["", "log10_axion_mass=-21.1 outside the training range [-24, -22]",
                   "theta_e=2 outside the training range [0.5, 1.5]"]


def test_labels_per_class_routes_to_the_pool_and_finetune_resolves_regression_stats():
  c = downstream_config("finetune_regress.py")
  c.data.labels_per_class = 5
  # make_input serves labels_per_class on the simulator from the pool, for any task.
  assert data_lib.source_name(c.data) == "sim_pool"
  prepared = finetune.prepare_config(c)
  assert c.data.source == "sim" and data_lib.source_name(prepared.data) == "sim_pool"
  assert prepared.objective.target_stats["log10_axion_mass"] == pytest.approx(
      [-23., 2 / np.sqrt(12)])
  assert prepared.objective.target_ranges.to_dict() == {"log10_axion_mass": [-24., -22.]}
