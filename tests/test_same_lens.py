"""Same-lens observations: shared mass model, different nuisances, exact geometry; the
sim_mixture source; the simulation-supervised objective and same-lens SSL learn."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lensfm import config_args
from lensfm import data as data_lib
from lensfm.data import sim_mixture
from lensfm.sim import priors
from lensfm.sim import same_lens
from lensfm.tasks import pretrain
from lensfm.train import sharding

NUM_MASS = len(same_lens.MASS_LATENTS)


def test_pixelate_conserves_flux_and_is_identity_at_equal_scale():
  image = jax.random.uniform(jax.random.PRNGKey(0), (20, 20, 1))
  same = same_lens.pixelate(image, 0.1, 20, 0.1)
  np.testing.assert_allclose(same, image, rtol=1e-5, atol=1e-6)
  # Coarser pixels covering the same field (20 x 0.1 = 8 x 0.25 arcsec): same total flux.
  coarse = same_lens.pixelate(image, 0.1, 8, 0.25)
  np.testing.assert_allclose(coarse.sum(), image.sum(), rtol=1e-5)
  # A 2x2 block sum, exactly.
  blocks = same_lens.pixelate(image, 0.1, 10, 0.2)
  np.testing.assert_allclose(blocks[..., 0], image[..., 0].reshape(10, 2, 10, 2).sum((1, 3)),
                             rtol=1e-5)


@pytest.fixture(scope="module")
def pairs():
  sim = same_lens.SameLens(field_of_view=4.8)
  sample = jax.jit(lambda k: sim.sample(k, 16, 2))
  return sim, jax.device_get(sample(jax.random.PRNGKey(3)))


def test_pairs_share_the_mass_model_and_differ_in_the_nuisances(pairs):
  sim, out = pairs
  assert out["native"].shape == (16, 2, sim.native_pixels, sim.native_pixels, 1)
  assert np.isfinite(out["native"]).all()
  # The mass latents (substructure, Einstein radius, lens shape, shear) are the same.
  np.testing.assert_array_equal(out["latents"][:, 0, :NUM_MASS], out["latents"][:, 1, :NUM_MASS])
  np.testing.assert_array_equal(out["latent_mask"][:, 0], out["latent_mask"][:, 1])
  # The source differs in every pair; the instrument in most.
  source = out["latents"][:, :, NUM_MASS:]
  assert np.all(np.abs(source[:, 0] - source[:, 1]).max(axis=1) > 1e-3)
  assert np.mean(out["pixel_scale"][:, 0] != out["pixel_scale"][:, 1]) > 0.4
  assert np.mean(out["family"][:, 0] != out["family"][:, 1]) > 0.4
  assert not np.allclose(out["native"][:, 0], out["native"][:, 1])
  # Classes follow the substructure latents.
  cdm = out["label"] == same_lens.CLASSES.index("cdm")
  n_sub = out["latents"][:, 0, same_lens.LATENT_NAMES.index("n_subhalos")]
  assert np.all(out["n_subhalos"][~cdm] == 0)
  vortex = out["latent_mask"][:, 0, same_lens.LATENT_NAMES.index("log10_vortex_mass")]
  np.testing.assert_array_equal(vortex, out["label"] == same_lens.CLASSES.index("axion"))
  assert np.isfinite(n_sub).all()


def _observation(sim, seed, **changes):
  u = jax.random.uniform(jax.random.PRNGKey(seed), (same_lens.VIEW_UNIFORMS,))
  obs = sim.sample_observation(priors.UniformStream.from_uniforms(u))
  return {**obs, "clean": jnp.bool_(True), "pointing": jnp.zeros(2), **changes}


def test_orientation_is_rendered_not_resampled():
  """A quarter turn of the sky on the detector is exactly np.rot90 of the image."""
  sim = same_lens.SameLens(field_of_view=4.0, families=("model_ii",))
  draw = priors.UniformStream(jax.random.PRNGKey(1), same_lens.MASS_UNIFORMS)
  mass, _, _ = sim.sample_mass(draw, jnp.int32(1))
  n = sim.native_pixels
  zeros = jnp.zeros((2, n, n, 1))
  render = jax.jit(lambda obs: sim.render(zeros, mass, obs))
  base = render(_observation(sim, 0, rotation=jnp.float32(0.)))
  turned = render(_observation(sim, 0, rotation=jnp.float32(np.pi / 2)))
  assert float(base.max()) > 0
  # Sky rotated counter-clockwise by 90 deg on the detector: rows are y (ascending).
  np.testing.assert_allclose(np.rot90(np.asarray(base), k=1), turned,
                             atol=2e-3 * float(base.max()))


def _mixture_config(**changes):
  c = ml_collections.ConfigDict(dict(
      source="sim_mixture", image_size=16, pixel_scale=0.3, channels=1, normalize="zscore",
      views=2, families="model_ii,randomized", classes="", clean_fraction=0.25))
  c.update(changes)
  return c


def test_sim_mixture_source_makes_pairs_on_the_model_grid():
  mesh = sharding.make_mesh((("data", -1), ("fsdp", 1)))
  source = data_lib.make_input(_mixture_config(), global_batch_size=8,
                               sharding=sharding.batch_sharding(mesh), seed=0)
  batch = jax.device_get(next(source))
  assert batch["image"].shape == batch["image_pair"].shape == (8, 16, 16, 1)
  assert batch["latents"].shape == (8, len(same_lens.LATENT_NAMES))
  np.testing.assert_allclose(batch["image"].mean(axis=(1, 2, 3)), 0., atol=1e-4)
  source.set_state({"step": 0})
  np.testing.assert_array_equal(jax.device_get(next(source))["image"], batch["image"])
  with pytest.raises(ValueError, match="pixel_scale"):
    sim_mixture.simulator(_mixture_config(pixel_scale=None))


def _tiny_run_config(objective, steps):
  c = config_args.load(f"configs/lensfm_tiny.py:runlocal,objective={objective}")
  c.data.update(image_size=16, pixel_scale=0.3, families="model_ii,randomized")
  c.model.update(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=4)
  c.batch_size = 32
  c.total_steps = steps
  c.evals = {}
  c.optim.update(base_lr=1e-2, warmup_steps=2)
  return c


def _losses(config, workdir, key="loss"):
  pretrain.run(config, str(workdir))
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  return [r[key] for r in rows if key in r]


@pytest.mark.parametrize("objective,metric", [("simsup", "loss"), ("simclr", "aux_sim_mse")])
def test_new_objectives_learn_on_a_tiny_run(tmp_path, objective, metric):
  config = _tiny_run_config(objective, 40)
  config.log_every = 5
  losses = _losses(config, tmp_path, metric)
  assert len(losses) >= 6
  assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.05, losses
