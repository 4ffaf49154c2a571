"""SSL losses and target updates: NT-Xent by hand and across a mesh, BYOL/DINO EMA
schedules, DINO centering and its cross-entropy."""
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm import config_args
from lensfm.objectives import byol
from lensfm.objectives import dino
from lensfm.objectives import simclr
from lensfm.train import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# XLA's CPU backend optimisations cost most of the compile time of these small
# functions and steps, and buy nothing in a test.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def compile_fast(fn, *args, **jit_kwargs):
  return jax.jit(fn, **jit_kwargs).lower(*args).compile(compiler_options=FAST_COMPILE)


def nt_xent(z1, z2, temperature, valid=None):
  fn = lambda a, b, v: simclr.nt_xent(a, b, temperature, v)
  args = (jnp.asarray(z1), jnp.asarray(z2), None if valid is None else jnp.asarray(valid))
  return compile_fast(fn, *args)(*args)


def nt_xent_per_anchor(z1, z2, temperature):
  """The SimCLR paper's formula, one anchor at a time."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n, b = len(z), len(z1)
  losses = []
  for i in range(n):
    j = (i + b) % n
    sims = [np.exp(z[i] @ z[k] / temperature) for k in range(n) if k != i]
    losses.append(-math.log(np.exp(z[i] @ z[j] / temperature) / sum(sims)))
  return losses


def nt_xent_by_hand(z1, z2, temperature):
  return float(np.mean(nt_xent_per_anchor(z1, z2, temperature)))


def test_nt_xent_matches_hand_computed_value():
  z1 = np.array([[1., 0.], [0., 2.], [1., 1.]], np.float32)
  z2 = np.array([[2., 0.5], [-0.5, 1.], [1., 0.]], np.float32)
  # Worked on paper for the first anchor, z1[0] = (1, 0): cosines 0.97014 with its
  # positive z2[0], and 0, 0.70711, -0.44721, 1 with z1[1], z1[2], z2[1], z2[2];
  # -log(e^(0.97014/0.5) / sum of the five e^(cos/0.5)) = 1.04902.
  per_anchor = nt_xent_per_anchor(z1, z2, 0.5)
  assert per_anchor[0] == pytest.approx(1.04902, abs=1e-5)
  loss, accuracy = nt_xent(z1, z2, 0.5)
  assert float(loss) == pytest.approx(np.mean(per_anchor), rel=1e-5)
  # Anchor z1[0]'s most similar view is z2[2] = (1, 0), not its positive: top-1 wrong.
  z = np.concatenate([z1, z2]) / np.linalg.norm(np.concatenate([z1, z2]), axis=1, keepdims=True)
  sims = z @ z.T - 10. * np.eye(6)
  assert np.argmax(sims[0]) == 5
  expected_accuracy = np.mean(np.argmax(sims, axis=1) == (np.arange(6) + 3) % 6)
  assert float(accuracy) == pytest.approx(expected_accuracy)


def test_nt_xent_lower_for_matching_views_than_random_pairs():
  rng = np.random.default_rng(0)
  z1 = rng.normal(size=(16, 8)).astype(np.float32)
  matching = z1 + 0.05 * rng.normal(size=z1.shape).astype(np.float32)
  random_pairs = rng.normal(size=z1.shape).astype(np.float32)
  loss_match, acc_match = nt_xent(z1, matching, 0.1)
  loss_random, _ = nt_xent(z1, random_pairs, 0.1)
  assert float(loss_match) < float(loss_random) - 1.
  assert float(acc_match) == 1.
  np.testing.assert_allclose(loss_match, nt_xent_by_hand(z1, matching, 0.1), rtol=1e-5)


def test_nt_xent_ignores_padded_examples():
  rng = np.random.default_rng(1)
  z1, z2 = rng.normal(size=(2, 5, 4)).astype(np.float32)
  valid = np.array([True, True, True, False, False])
  loss, _ = nt_xent(z1, z2, 0.2, valid)
  # Padded rows are neither anchors nor negatives: the loss of the 3 valid pairs alone.
  np.testing.assert_allclose(loss, nt_xent_by_hand(z1[:3], z2[:3], 0.2), rtol=1e-5)


def simclr_config(mesh):
  c = config_args.load(os.path.join(ROOT, "configs", "simclr_vit_b.py:runlocal"))
  c.batch_size = 16
  c.mesh = mesh
  c.model.update(width=32, depth=1, mlp_dim=64)
  c.objective.update(proj_hidden_dim=32, proj_dim=16)
  return c


def test_simclr_negatives_from_whole_global_batch_on_mesh_equal_one_device():
  """On a 4x2 mesh each device holds 2 images, yet the loss is the same as on one
  device holding all 16: every anchor's negatives come from the whole global batch."""
  rng = np.random.default_rng(0)
  images = [rng.random((16, 32, 32, 1), np.float32) for _ in range(2)]
  losses = {}
  for name, mesh, devices in (("mesh", (("data", 4), ("fsdp", 2)), jax.devices()),
                              ("one", (("data", 1), ("fsdp", 1)), jax.devices()[:1])):
    trainer = trainer_lib.Trainer(simclr_config(mesh), "/tmp/unused", devices=devices)
    init = functools.partial(trainer._init_state,  # pylint: disable=protected-access
                             batch=trainer_lib.abstract_batch(trainer.config))
    rng = jax.random.key(0)
    state = compile_fast(init, rng, out_shardings=trainer.state_sharding)(rng)
    step = None
    losses[name] = []
    for x in images:
      batch = {"image": jax.device_put(x, trainer.data_sharding),
               "label": jax.device_put(np.zeros(16, np.int32), trainer.data_sharding),
               "mask": jax.device_put(np.ones(16, bool), trainer.data_sharding)}
      step = step or trainer.compile_step().lower(state, batch).compile(
          compiler_options=FAST_COMPILE)
      state, metrics = step(state, batch)
      losses[name].append(float(metrics["loss"]))
  np.testing.assert_allclose(losses["mesh"], losses["one"], rtol=2e-5)
  # A loss computed per device (2 images, 3 negatives each) would be near log(3) ~ 1.1,
  # not near log(31) ~ 3.4 as with the 30 negatives of the global batch.
  assert losses["one"][0] > math.log(15)


def test_cosine_momentum_schedule_and_ema_are_exact():
  total, base_m = 100, 0.99
  for step, expected in ((0, base_m), (50, (base_m + 1.) / 2.), (100, 1.), (25, None)):
    want = 1. - (1. - base_m) * (math.cos(math.pi * step / total) + 1.) / 2.
    got = float(byol.cosine_momentum(step, total, base_m, 1.))
    assert got == pytest.approx(want, abs=1e-7)
    if expected is not None:
      assert got == pytest.approx(expected, abs=1e-7)

  rng = np.random.default_rng(0)
  target = {"encoder": {"w": rng.normal(size=(3, 4)).astype(np.float32)},
            "head": {"b": rng.normal(size=(4,)).astype(np.float32)}}
  online = jax.tree.map(lambda x: x + 1., target)
  m = np.float32(byol.cosine_momentum(30, total, base_m))
  new = jax.jit(byol.ema_update)(target, online, m)
  jax.tree.map(lambda n, t, o: np.testing.assert_allclose(n, m * t + (1 - m) * o, rtol=1e-6),
               new, target, online)


def test_dino_center_update_and_loss_follow_the_formulas():
  rng = np.random.default_rng(0)
  b, k = 6, 5
  teacher = rng.normal(size=(b, 2, k)).astype(np.float32)
  student = rng.normal(size=(b, 4, k)).astype(np.float32)  # 2 global + 2 local views.
  center = rng.normal(size=(k,)).astype(np.float32)
  new_center = dino.update_center(jnp.asarray(center), jnp.asarray(teacher), 0.9)
  np.testing.assert_allclose(new_center, 0.9 * center + 0.1 * teacher.mean(axis=(0, 1)),
                             rtol=1e-6)
  # Padded examples do not move the centre.
  weights = np.array([1, 1, 1, 1, 0, 0], bool)
  masked = dino.update_center(jnp.asarray(center), jnp.asarray(teacher), 0.9, jnp.asarray(weights))
  np.testing.assert_allclose(masked, 0.9 * center + 0.1 * teacher[:4].mean(axis=(0, 1)), rtol=1e-6)

  q = np.asarray(dino.teacher_probs(teacher, center, 0.04))
  shifted = (teacher - center) / 0.04
  np.testing.assert_allclose(q, np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True),
                             rtol=1e-5, atol=1e-12)
  log_p = student / 0.1 - np.log(np.exp(student / 0.1).sum(-1, keepdims=True))
  pairs = [(t, s) for t in range(2) for s in range(4) if s != t]
  expected = np.mean([-(q[:, t] * log_p[:, s]).sum(-1).mean() for t, s in pairs])
  np.testing.assert_allclose(dino.dino_loss(jnp.asarray(student), jnp.asarray(q), 0.1),
                             expected, rtol=1e-5)
  # Sharpening: a lower teacher temperature gives a lower-entropy teacher distribution.
  assert float(dino.entropy(dino.teacher_probs(teacher, center, 0.04))) < float(
      dino.entropy(dino.teacher_probs(teacher, center, 1.0)))
  # Teacher temperature warm-up is linear, then constant.
  assert float(dino.teacher_temperature(5, 0.02, 0.06, 10)) == pytest.approx(0.04)
  assert float(dino.teacher_temperature(50, 0.02, 0.06, 10)) == pytest.approx(0.06)
