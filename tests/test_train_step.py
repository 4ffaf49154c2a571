"""The train step on a mesh, MAE masking, the ViT, and clear errors for bad configs."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lensfm import config_args
from lensfm.models import vit
from lensfm.objectives import mae
from lensfm.train import optim
from lensfm.train import trainer as trainer_lib
from lensfm.train import sharding
from lensfm import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  c = config_args.load(os.path.join(ROOT, "configs", "mae_vit_b.py:runlocal"))
  c.data.image_size = 32
  c.batch_size = 16
  for k, v in overrides.items():
    c[k] = v
  return c


def make_batch(trainer, seed=0, n=16, size=32):
  rng = np.random.default_rng(seed)
  images = rng.random((n, size, size, 1), np.float32)
  return {"image": jax.device_put(images, trainer.data_sharding),
          "label": jax.device_put(np.zeros(n, np.int32), trainer.data_sharding)}


def run_steps(config, devices, num_steps):
  trainer = trainer_lib.Trainer(config, "/tmp/unused", devices=devices)
  state = trainer.init_state()
  step = trainer.compile_step()
  losses = []
  for i in range(num_steps):
    state, metrics = step(state, make_batch(trainer, seed=i))
    losses.append(float(metrics["loss"]))
  return trainer, state, losses, step


def test_sharded_step_matches_single_device():
  c8 = tiny_config(mesh=(("data", 4), ("fsdp", 2)))
  c1 = tiny_config(mesh=(("data", 1), ("fsdp", 1)))
  t8, s8, l8, step8 = run_steps(c8, jax.devices(), 3)
  _, s1, l1, _ = run_steps(c1, jax.devices()[:1], 3)
  np.testing.assert_allclose(l8, l1, rtol=2e-5, atol=2e-6)
  flat8 = jax.tree_util.tree_leaves_with_path(s8["params"])
  flat1 = jax.tree_util.tree_leaves(s1["params"])
  for (path, a), b in zip(flat8, flat1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-6,
                               err_msg=utils.path_to_str(path))
  assert step8._cache_size() == 1  # Static shapes: one compilation for all steps.

  # Parameters are laid out as the rules say: the largest dimension divisible by 2 is
  # split over `fsdp`, and the batch over both data axes.
  mlp = s8["params"]["encoder"]["encoder"]["block00"]["mlp"]
  assert mlp["Dense_0"]["kernel"].sharding.spec == P(None, "fsdp")  # (64, 128)
  assert mlp["Dense_1"]["kernel"].sharding.spec == P("fsdp", None)  # (128, 64)
  assert len(mlp["Dense_0"]["kernel"].addressable_shards[0].data.reshape(-1)) == 64 * 128 // 2
  # Optimizer moments follow their parameters.
  mu = s8["opt_state"][1][0].mu["encoder"]["encoder"]["block00"]["mlp"]["Dense_0"]["kernel"]
  assert mu.sharding.spec == P(None, "fsdp")
  assert t8.data_sharding.spec == P(("data", "fsdp"))


def test_replicate_rule_and_loss_decreases_on_fixed_batch():
  c = tiny_config(mesh=(("data", -1), ("fsdp", 2)),
                  sharding_rules=(("pos_embedding|cls|bias", "replicate"), (".*", "fsdp")))
  c.optim.base_lr = 1e-2
  trainer = trainer_lib.Trainer(c, "/tmp/unused")
  state = trainer.init_state()
  assert state["params"]["encoder"]["cls"].sharding.spec == P()
  step = trainer.compile_step()
  batch = make_batch(trainer)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses


def test_masking_keeps_exact_count_and_differs_per_image():
  keep, restore, mask = mae.random_masking(jax.random.key(0), 8, 64, 0.75)
  assert keep.shape == (8, 16)
  np.testing.assert_array_equal(mask.sum(axis=1), np.full(8, 48.))
  # Kept indices are visible tokens, and masks differ from image to image.
  for i in range(8):
    assert set(np.asarray(keep[i]).tolist()) == set(np.flatnonzero(np.asarray(mask[i]) == 0).tolist())
  assert len({tuple(np.asarray(m).tolist()) for m in mask}) == 8
  # `restore` puts [visible tokens, mask tokens] back in grid order, as the decoder needs.
  grid = np.tile(np.arange(64), (8, 1))
  padded = jnp.concatenate([jnp.take_along_axis(grid, keep, 1), jnp.full((8, 48), -1)], 1)
  out = np.asarray(jnp.take_along_axis(padded, restore, 1))
  hidden = np.asarray(mask) == 1
  np.testing.assert_array_equal(out[~hidden], grid[~hidden])
  assert np.all(out[hidden] == -1)


def test_loss_ignores_predictions_of_visible_patches():
  _, _, mask = mae.random_masking(jax.random.key(1), 4, 16, 0.75)
  pred = jax.random.normal(jax.random.key(2), (4, 16, 12))
  target = jax.random.normal(jax.random.key(3), (4, 16, 12))
  grad = jax.grad(mae.masked_mse)(pred, target, mask)
  visible = np.asarray(mask) == 0
  assert np.all(np.asarray(grad)[visible] == 0)
  assert np.all(np.abs(np.asarray(grad)[~visible]).sum(-1) > 0)
  # And it is the plain mean over hidden tokens.
  per_token = np.mean((np.asarray(pred) - np.asarray(target))**2, -1)
  np.testing.assert_allclose(mae.masked_mse(pred, target, mask),
                             per_token[~visible].mean(), rtol=1e-5)


def test_patchify_roundtrip_and_norm_pix():
  x = jax.random.normal(jax.random.key(0), (2, 16, 24, 3))
  p = mae.patchify(x, 8)
  assert p.shape == (2, 6, 192)
  np.testing.assert_array_equal(mae.unpatchify(p, 8, (2, 3), 3), x)
  np.testing.assert_array_equal(p[0, 1], x[0, :8, 8:16].reshape(-1))
  n = mae.normalize_patches(p)
  np.testing.assert_allclose(n.mean(-1), 0, atol=1e-5)


@pytest.mark.parametrize("size,channels,pool", [(64, 1, "cls"), (150, 3, "mean")])
def test_vit_any_divisible_size_and_bands(size, channels, pool):
  model = vit.Model(variant=None, width=32, depth=1, mlp_dim=64, num_heads=2,
                    patch_size=10 if size == 150 else 8, pool=pool, dtype="bfloat16")
  x = jnp.ones((2, size, size, channels))
  params = model.init(jax.random.key(0), x)["params"]
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(params))  # fp32 master params
  out = model.apply({"params": params}, x)
  gh, gw = model.token_grid((size, size))
  assert out["tokens"].shape == (2, gh * gw, 32) and out["pooled"].shape == (2, 32)
  assert out["tokens"].dtype == jnp.bfloat16  # bf16 compute
  keep = jnp.tile(jnp.arange(5)[None], (2, 1))
  assert model.apply({"params": params}, x, keep=keep)["tokens"].shape == (2, 5, 32)


def test_vit_variants_and_remat_match():
  assert vit.parse_variant("B/8") == dict(width=768, depth=12, mlp_dim=3072, num_heads=12,
                                          patch_size=8)
  with pytest.raises(ValueError, match="'Q/8'"):
    vit.parse_variant("Q/8")
  kw = dict(variant=None, width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=8)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
  params = vit.Model(**kw).init(jax.random.key(0), x)["params"]
  loss = lambda m: (lambda p: jnp.sum(m.apply({"params": p}, x)["pooled"]**2))
  g0 = jax.grad(loss(vit.Model(**kw)))(params)
  g1 = jax.grad(loss(vit.Model(**kw, remat=True)))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g0, g1)


def test_image_size_not_divisible_by_patch_is_clear():
  c = tiny_config()
  c.data.image_size = 30
  with pytest.raises(ValueError, match="30x30 is not divisible by the patch size 8"):
    trainer_lib.Trainer(c, "/tmp/unused")


def test_mesh_that_does_not_divide_devices_is_clear():
  with pytest.raises(ValueError, match="does not divide the 8 available devices"):
    sharding.make_mesh((("data", 3), ("fsdp", -1)))
  with pytest.raises(ValueError, match="has 4 devices but 8 are available"):
    sharding.make_mesh((("data", 2), ("fsdp", 2)))
  with pytest.raises(ValueError, match="lacks axes"):
    sharding.make_mesh((("data", -1),))
  c = tiny_config(mesh=(("data", 8), ("fsdp", 1)))
  c.batch_size = 12
  with pytest.raises(ValueError, match="batch_size=12 must be divisible by the 8 devices"):
    trainer_lib.Trainer(c, "/tmp/unused")


def test_weight_decay_mask_and_layer_decay():
  c = tiny_config()
  trainer = trainer_lib.Trainer(c, "/tmp/unused")
  params = trainer.init_state()["params"]
  mask = {utils.path_to_str(p): v for p, v in
          jax.tree_util.tree_leaves_with_path(optim.weight_decay_mask(params))}
  assert mask["encoder/encoder/block00/mlp/Dense_0/kernel"]
  assert not mask["encoder/encoder/block00/mlp/Dense_0/bias"]
  assert not mask["encoder/encoder/block00/LayerNorm_0/scale"]
  assert not mask["encoder/cls"] and not mask["decoder/mask_token"]
  scales = {utils.path_to_str(p): v for p, v in
            jax.tree_util.tree_leaves_with_path(optim.layer_decay_scales(params, 2, 0.5))}
  assert scales["encoder/patch_embed/kernel"] == 0.5**3
  assert scales["encoder/encoder/block00/attn/query/kernel"] == 0.5**2
  assert scales["encoder/encoder/block01/attn/query/kernel"] == 0.5
  assert scales["decoder/pred/kernel"] == 1.0
  # Warmup then cosine decay; peak scaled linearly with the batch.
  sched = optim.learning_rate_schedule(c)
  peak = optim.peak_learning_rate(c)
  assert peak == pytest.approx(c.optim.base_lr * c.batch_size / 256)
  assert float(sched(0)) == 0. and float(sched(c.optim.warmup_steps)) == pytest.approx(peak)
  assert float(sched(c.total_steps)) == pytest.approx(c.optim.min_lr, abs=1e-9)
