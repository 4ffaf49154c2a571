"""Lensing-aware views keep the arcs; kNN voting, the collapse indicator and the kNN
evaluator hook."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm import config_args
from lensfm.evaluators import knn
from lensfm.objectives import metrics
from lensfm.objectives import views
from lensfm.tasks import pretrain
from lensfm.train import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# XLA's CPU backend optimisations cost most of the compile time of these small
# functions and buy nothing here.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def compile_fast(fn, *args):
  return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


def ring_image(size=64, radius=8., width=1.):
  """An Einstein ring of `radius` px (Model II's ~0.8" at 0.101"/px) about the centre."""
  yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.
  r = np.hypot(yy, xx)
  return np.exp(-0.5 * ((r - radius) / width)**2).astype(np.float32)[..., None]


def test_centred_crops_keep_the_ring_and_views_differ():
  image = jnp.asarray(ring_image())[None]  # [1, 64, 64, 1]
  config = views.parse_views({"augment": ""}, 64)  # Crops only.
  for crop in (config.global_crop, config.local_crop):
    make = functools.partial(views.make_views, images=image, view_config=config, crop=crop,
                             num_views=32)
    out = compile_fast(make, jax.random.key(0))(jax.random.key(0))
    assert out.shape == (1, 32, crop.size, crop.size, 1)
    out = np.asarray(out[0, ..., 0])
    border = np.concatenate([out[:, 0], out[:, -1], out[:, :, 0], out[:, :, -1]], axis=1)
    # No ring light reaches the edge of any crop: the whole ring is inside every view.
    assert border.max() < 0.05 * out.max(), (crop, border.max())
    assert len({float(v.sum()) for v in out}) == 32  # Scales and offsets differ per view.
  # A crop of the whole image with no jitter is the image itself.
  np.testing.assert_allclose(
      views.crop_and_resize(image[0], jnp.float32(1.), jnp.zeros(2), 64), image[0], atol=1e-6)


def test_augmented_views_are_per_example_and_reproducible():
  config = views.parse_views(None, 32)  # Defaults: all the lensing-safe augmentations.
  assert config.augment == ("rotate", "flip", "shift", "blur", "noise", "scale")
  images = jnp.stack([jnp.asarray(ring_image(32, 6.))] * 4)
  make = compile_fast(lambda k, x: views.make_views(k, x, config, config.global_crop, 2),
                      jax.random.key(0), images)
  a, b = make(jax.random.key(0), images), make(jax.random.key(0), images)
  assert a.shape == (4, 2, 32, 32, 1)
  np.testing.assert_array_equal(a, b)  # Same key, same views.
  # Identical images get different views (per-example keys), and so do the two views.
  assert not np.allclose(a[0, 0], a[1, 0]) and not np.allclose(a[0, 0], a[0, 1])
  assert np.isfinite(np.asarray(a)).all()
  assert views.flatten_views(a).shape == (8, 32, 32, 1)
  np.testing.assert_array_equal(views.flatten_views(a)[1], a[0, 1])  # Example-major.


def test_bad_view_configs_fail_by_name():
  with pytest.raises(ValueError, match="unknown fields \\['crops'\\]"):
    views.parse_views({"crops": 2}, 32)
  with pytest.raises(ValueError, match="global_crop_scale=\\(0.5, 1.5\\)"):
    views.parse_views({"global_crop_scale": (0.5, 1.5)}, 32)
  with pytest.raises(ValueError, match="unknown augmentations \\['zoom'\\]"):
    views.parse_views({"augment": "rotate,zoom"}, 32)
  with pytest.raises(ValueError, match="crop_jitter=0.5"):
    views.parse_views({"crop_jitter": 0.5}, 32)


def test_knn_predict_matches_hand_computed_votes():
  train = np.array([[1., 0.], [0.9, 0.1], [0., 1.], [-1., 0.]], np.float32)
  labels = np.array([0, 1, 1, 2])
  test = np.array([[1., 0.05]], np.float32)
  probs = metrics.knn_predict(train, labels, test, k=2, temperature=0.1, num_classes=3)
  # The 2 nearest by cosine are train[0] (label 0) and train[1] (label 1).
  unit = lambda v: v / np.linalg.norm(v)
  w0 = np.exp(unit(test[0]) @ unit(train[0]) / 0.1)
  w1 = np.exp(unit(test[0]) @ unit(train[1]) / 0.1)
  np.testing.assert_allclose(probs[0], [w0 / (w0 + w1), w1 / (w0 + w1), 0.], rtol=1e-6)
  # k larger than the bank uses the whole bank; probabilities sum to 1.
  probs = metrics.knn_predict(train, labels, test, k=50, temperature=0.1, num_classes=3)
  assert probs.shape == (1, 3) and probs.sum() == pytest.approx(1.) and probs[0, 2] > 0
  with pytest.raises(ValueError, match="num_classes=2"):
    metrics.knn_predict(train, labels, test, num_classes=2)


def test_embedding_std_is_zero_when_collapsed_and_about_one_over_sqrt_d_when_spread():
  collapsed = np.tile(np.arange(1., 9.), (256, 1))
  assert float(metrics.embedding_std(collapsed)) == pytest.approx(0., abs=1e-6)
  spread = np.random.default_rng(0).normal(size=(4096, 64))
  assert float(metrics.embedding_std(spread)) == pytest.approx(1. / np.sqrt(64), rel=0.05)


class FakeInput:
  """Labelled batches whose class is visible in the image (a bright centre or not)."""

  def __init__(self, sharding, seed, batch_size=16):
    self.rng = np.random.default_rng(seed)
    self.sharding, self.batch_size = sharding, batch_size

  def __next__(self):
    labels = self.rng.integers(0, 2, self.batch_size).astype(np.int32)
    images = self.rng.normal(0., 0.1, (self.batch_size, 32, 32, 1)).astype(np.float32)
    images[labels == 1, 12:20, 12:20] += 3.
    mask = np.ones(self.batch_size, bool)
    mask[-2:] = False  # Padding, as the last batch of an eval set has.
    put = lambda x: jax.device_put(x, self.sharding)
    return {"image": put(images), "label": put(labels), "mask": put(mask)}


def test_knn_evaluator_hook_embeds_the_encoder_and_scores_separable_classes(monkeypatch):
  config = config_args.load(os.path.join(ROOT, "configs", "simclr_vit_b.py:runlocal"))
  config.batch_size = 16
  config.model.update(width=32, depth=1, mlp_dim=64)
  config.objective.update(proj_hidden_dim=32, proj_dim=16)
  config.evals.knn.update(num_train_batches=4, num_val_batches=2, k=5)
  trainer = trainer_lib.Trainer(config, "/tmp/unused")
  splits = []

  def fake_make_input(data_config, *, global_batch_size, sharding, seed, split, single_pass=False):
    assert data_config.augment == "" and global_batch_size == 16
    splits.append(split)
    return FakeInput(sharding, seed=len(splits))

  monkeypatch.setattr(knn.data_lib, "make_input", fake_make_input)
  evaluator = pretrain.make_evaluators(trainer)["knn"][1]
  state = trainer.init_state()
  result = evaluator.run(state, 0)
  assert splits == ["train", "validation"]
  assert set(result) == {"knn_accuracy", "embedding_std"}
  # The classes differ by a bright centre that even a random encoder separates.
  assert result["knn_accuracy"] >= 0.9
  assert 0. < result["embedding_std"] < 1.
  # Images are drawn once: a second evaluation embeds the same ones, with the same result.
  assert evaluator.run(state, 1) == result and len(splits) == 2
  with pytest.raises(KeyError, match="features='extra/teacher/encoder'"):
    evaluator.features_path = "extra/teacher/encoder"
    evaluator.run(state, 2)


def test_extract_features_drops_padding():
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  feats, labels = knn.extract_features(lambda p, x: x.reshape(x.shape[0], -1)[:, :3] * p,
                                       jnp.float32(2.), FakeInput(sharding, 0), 3)
  assert feats.shape == (42, 3) and labels.shape == (42,) and feats.dtype == np.float32
