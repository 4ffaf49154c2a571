"""ResNet and hybrid backbones under the shared interface, and every backbone x
objective pair taking a runlocal train step (with BYOL's and DINO's target updates
checked against their formulas on the real step)."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm import config_args
from lensfm.models import cnn
from lensfm.models import hybrid
from lensfm.models import resnet
from lensfm.objectives import byol
from lensfm.train import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny versions of each backbone; 'mae' only with the token-dropping ones.
TINY_MODELS = {
    "vit": dict(name="vit", variant=None, width=32, depth=1, mlp_dim=64, num_heads=2,
                patch_size=4, pool="cls", dtype="float32"),
    "hybrid": dict(name="hybrid", variant=None, width=32, depth=1, mlp_dim=64, num_heads=2,
                   patch_size=4, stem="conv", stem_width=8, pool="cls", dtype="float32"),
    "resnet": dict(name="resnet", depth=None, stage_sizes=(1, 1), width=8, stem="small",
                   dtype="float32"),
}
# The XLA CPU backend's LLVM optimisations take most of a tiny model's compile time
# (5x at level 0) and buy nothing for a one-step smoke test.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

PAIRS = [(b, o) for b in TINY_MODELS for o in ("simclr", "byol", "dino", "mae")
         if not (o == "mae" and b == "resnet")]


def test_resnet_interface_and_depths():
  x = jnp.ones((2, 32, 32, 1))
  for depth, dim in ((18, 8 * 8), (50, 8 * 8 * 4)):
    model = resnet.Model(depth=depth, width=8)
    assert model.embed_dim == dim
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x)[0])
    assert out["tokens"].shape == (2, 16, dim) and out["pooled"].shape == (2, dim)
    assert model.token_grid((32, 32)) == (4, 4)
  model = resnet.Model(**{k: v for k, v in TINY_MODELS["resnet"].items() if k != "name"})
  variables = compile_fast(model.init, jax.random.key(0), x)(jax.random.key(0), x)
  # GroupNorm: parameters only, no batch statistics to carry.
  assert set(variables) == {"params"}
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 1))
  apply = compile_fast(lambda images: model.apply(variables, images), images)
  out = apply(images)
  np.testing.assert_allclose(out["pooled"], out["tokens"].mean(axis=1), rtol=1e-6)
  # One image's features do not depend on the rest of its batch.
  np.testing.assert_allclose(apply(images.at[1].set(0.))["pooled"][0], out["pooled"][0],
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="'resnet' has no tokens to drop"):
    model.apply(variables, x, keep=jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="depth=19"):
    resnet.Model(depth=19).embed_dim  # pylint: disable=expression-not-assigned


def test_hybrid_dims_and_masked_pixels_do_not_leak_into_kept_tokens():
  kw = {k: v for k, v in TINY_MODELS["hybrid"].items() if k != "name"}
  for stem in ("conv", "resnet"):
    model = hybrid.Model(**{**kw, "stem": stem, "stem_blocks": 1})
    assert model.dims()["patch_size"] == 4 and model.embed_dim == 32
    assert model.token_grid((32, 32)) == (8, 8)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
    params = compile_fast(model.init, jax.random.key(0), x)(jax.random.key(0), x)["params"]
    assert "stem" in params and "encoder" in params
    keep = jnp.tile(jnp.array([0, 9, 27, 63])[None], (2, 1))
    # Changing a hidden patch (token 1 = rows 0-3, columns 4-7, next to kept token 0)
    # must not change the kept tokens, although the convolutions overlap it...
    changed = x.at[:, 0:4, 4:8].add(100.)
    masked = compile_fast(
        lambda images: model.apply({"params": params}, images, keep=keep)["tokens"], x)
    out = masked(x)
    assert out.shape == (2, 4, 32)
    np.testing.assert_allclose(out, masked(changed), rtol=1e-5, atol=1e-5)
    # ...while without masking the same change does reach token 0.
    full = compile_fast(lambda images: model.apply({"params": params}, images)["tokens"][:, 0], x)
    assert float(jnp.abs(full(x) - full(changed)).max()) > 1e-3
  with pytest.raises(ValueError, match="power of 2"):
    hybrid.Model(**{**kw, "patch_size": 6}).token_grid((36, 36))
  with pytest.raises(ValueError, match="not divisible by the hybrid stem's stride 4"):
    hybrid.Model(**kw).token_grid((30, 30))


def pair_config(backbone, objective):
  name = "mae_vit_b.py" if objective == "mae" else f"{objective}_vit_b.py"
  c = config_args.load(os.path.join(ROOT, "configs", f"{name}:runlocal"))
  c.data.image_size = 32
  c.batch_size = 8
  c.model = TINY_MODELS[backbone]
  c.mesh = (("data", 1), ("fsdp", 1))
  c.optim.warmup_steps = 0  # Step 0 at the peak rate (warm-up starts at 0), so weights move.
  if objective == "simclr":
    c.objective.update(proj_hidden_dim=32, proj_dim=16)
  elif objective == "byol":
    c.objective.update(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32)
  elif objective == "dino":
    c.objective.update(out_dim=32, hidden_dim=32, bottleneck_dim=16)
  else:
    c.objective.update(decoder_width=32, decoder_heads=2, decoder_mlp_dim=64)
  return c


def compile_fast(fn, *args, **jit_kwargs):
  return jax.jit(fn, **jit_kwargs).lower(*args).compile(compiler_options=FAST_COMPILE)


def init_state_fast(trainer):
  """trainer.init_state() compiled with FAST_COMPILE: parameter initialisers are the
  most expensive part of a tiny model's compile (one random call site per parameter)."""
  batch = trainer_lib.abstract_batch(trainer.config)
  init = functools.partial(trainer._init_state, batch=batch)  # pylint: disable=protected-access
  rng = jax.random.key(0)
  return compile_fast(init, rng, out_shardings=trainer.state_sharding)(rng)


def host_copy(tree):
  return jax.tree.map(lambda x: np.array(jax.device_get(x)), tree)


def check_target_updates(objective_name, objective, before, after, batch, trainer):
  """The EMA target (and DINO's centre) after step 0 follow the formulas exactly."""
  m = float(objective.momentum(0))
  assert m == pytest.approx(float(byol.cosine_momentum(0, trainer.config.total_steps,
                                                       objective.momentum.base)))
  key = "target" if objective_name == "byol" else "teacher"
  online = {k: after["params"][k] for k in before["extra"][key]}
  jax.tree.map(lambda new, old, o: np.testing.assert_allclose(
      new, m * old + (1. - m) * o, rtol=1e-5, atol=1e-7),
      host_copy(after["extra"][key]), before["extra"][key], host_copy(online))
  if objective_name == "dino":
    rng = jax.random.fold_in(trainer.base_rng, 0)  # The step's key, as the trainer makes it.
    teacher_logits = lambda teacher, images: objective.teacher_logits(
        teacher, objective.make_views(rng, {"image": images})[0])
    teacher = np.asarray(compile_fast(teacher_logits, before["extra"]["teacher"],
                                      batch["image"])(before["extra"]["teacher"], batch["image"]))
    c = objective.center_momentum
    np.testing.assert_allclose(after["extra"]["center"],
                               c * before["extra"]["center"] + (1 - c) * teacher.mean(axis=(0, 1)),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backbone,objective", PAIRS)
def test_every_backbone_objective_pair_takes_a_runlocal_step(backbone, objective):
  config = pair_config(backbone, objective)
  trainer = trainer_lib.Trainer(config, "/tmp/unused", devices=jax.devices()[:1])
  state = init_state_fast(trainer)
  before = host_copy(state)
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((8, 32, 32, 1), np.float32),
           "label": np.zeros(8, np.int32), "mask": np.ones(8, bool)}
  device_batch = jax.tree.map(lambda x: jax.device_put(x, trainer.data_sharding), batch)
  step = trainer.compile_step().lower(state, device_batch).compile(compiler_options=FAST_COMPILE)
  state, metrics = step(state, device_batch)
  assert np.isfinite(float(metrics["loss"])) and int(metrics["nonfinite_count"]) == 0
  assert float(metrics["grad_norm"]) > 0
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b),
                         before["params"]["encoder"], host_copy(state["params"]["encoder"]))
  assert any(jax.tree.leaves(changed)), "the encoder did not train"
  if objective != "mae":
    assert 0. < float(metrics["embedding_std"]) <= 1.
  if objective in ("byol", "dino"):
    check_target_updates(objective, trainer.objective, before, host_copy(state), batch, trainer)



def test_plain_cnn_interface():
  model = cnn.Model(widths=(4, 8, 16))
  images = jnp.zeros((2, 20, 20, 1))
  params = model.init(jax.random.key(0), images)["params"]
  out = model.apply({"params": params}, images)
  assert model.token_grid((20, 20)) == (3, 3) and model.embed_dim == 16
  assert out["tokens"].shape == (2, 9, 16) and out["pooled"].shape == (2, 16)
  with pytest.raises(ValueError, match="'cnn' has no tokens to drop"):
    model.apply({"params": params}, images, keep=jnp.zeros((2, 1), jnp.int32))
