"""Realistic-sky same-lens pairs (lensfm.sim.realistic_pairs) and their share of
sim_mixture batches: two views of a lens share its mass and substructure (latents equal),
differ in survey, source and orientation; a scene rotated deflects as the rotated sky."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.data import grid
from lensfm.data import sim_mixture
from lensfm.sim import realistic
from lensfm.sim import realistic_pairs
from lensfm.sim import same_lens

SIZE, SCALE = 20, 0.12   # a 2.4" field: small detectors, quick to compile
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def _to_grid(native, native_scale):
  return grid.map_to_grid(native, native_scale, SIZE, SCALE, key=jax.random.PRNGKey(0),
                          sky_level=0., sky_sigma=0.)


def test_single_band_override():
  recipe = realistic.get('realistic_lsst', num_pix=16, bands=('lsst_i',))
  assert recipe.image_shape == (16, 16, 1) and recipe.band_names == ('lsst_i',)
  assert recipe != realistic.get('realistic_lsst', num_pix=16, bands=('lsst_r',))
  with pytest.raises(ValueError, match='hsc_i'):
    realistic.get('realistic_lsst', bands=('hsc_i',))


def test_two_views_share_the_mass_and_differ_in_survey_source_and_noise():
  euclid, lsst = 0, 3
  assert realistic_pairs.VIEWS[euclid][0] == 'euclid' and realistic_pairs.VIEWS[lsst][0] == 'lsst'
  sim = realistic_pairs.RealisticPairs(field_of_view=SIZE * SCALE, views=(euclid, lsst),
                                       classes=('cdm', 'axion'))
  keys = jax.random.split(jax.random.key(5), 4)
  out = jax.jit(lambda k: sim.sample(None, 4, 2, SIZE, _to_grid, keys=k),
                compiler_options=FAST_COMPILE)(keys)
  out = jax.tree.map(np.asarray, out)
  assert out['image'].shape == (4, 2, SIZE, SIZE, 1) and np.isfinite(out['image']).all()
  kinds = out['view_kind']
  assert (kinds[:, 0] != kinds[:, 1]).all() and set(kinds.reshape(-1)) == {euclid, lsst}
  np.testing.assert_allclose(out['native_pixel_scale'][kinds == lsst], 0.2)
  n_mass = len(same_lens.MASS_LATENTS)
  np.testing.assert_array_equal(out['latents'][:, 0, :n_mass], out['latents'][:, 1, :n_mass])
  np.testing.assert_array_equal(out['latent_mask'][:, 0], out['latent_mask'][:, 1])
  assert (np.abs(out['latents'][:, 0, n_mass:] - out['latents'][:, 1, n_mass:]) > 0).all()
  assert (np.abs(out['image'][:, 0] - out['image'][:, 1]).max(axis=(1, 2, 3)) > 0).all()
  cdm = out['label'] == same_lens.CLASSES.index('cdm')
  assert (out['n_subhalos'][~cdm] == 0).all() and (out['sub_mass_fraction'] > 0).all()


def test_rotated_scene_deflects_as_the_rotated_sky():
  sim = realistic_pairs.RealisticPairs(field_of_view=2.4, views=(0,))
  angle = 0.7
  x = jnp.asarray([0.3, -0.8, 1.1, 0.05]); y = jnp.asarray([0.9, 0.2, -0.6, -1.3])
  c, s = np.cos(angle), np.sin(angle)

  def both(key):
    mass, _, _, _ = sim.sample_system(key, jnp.int32(1))
    mass['line_mass'] = dict(mass['line_mass'], theta_e_total=jnp.float32(0.05))
    return (realistic.deflection(mass, x, y),
            realistic.deflection(realistic_pairs.rotate(mass, angle), c * x - s * y,
                                 s * x + c * y))

  (ax, ay), (bx, by) = jax.jit(both, compiler_options=FAST_COMPILE)(jax.random.key(2))
  np.testing.assert_allclose(bx, c * ax - s * ay, atol=2e-5)
  np.testing.assert_allclose(by, s * ax + c * ay, atol=2e-5)


def test_sim_mixture_batches_end_with_realistic_pairs():
  data = dict(source='sim_mixture', image_size=SIZE, pixel_scale=SCALE, views=2,
              families='model_ii', normalize='zscore', realistic_fraction=0.5,
              realistic_surveys='lsst')   # one survey: both views LSST i (compiles once)
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',)),
                                        jax.sharding.PartitionSpec('data'))
  batch = jax.tree.map(np.asarray, sim_mixture.make(
      data, global_batch_size=4, sharding=sharding, seed=0).batch_at(0))
  assert batch['image'].shape == batch['image_pair'].shape == (4, SIZE, SIZE, 1)
  assert np.isfinite(batch['image']).all() and np.isfinite(batch['latents']).all()
  # model_ii is family 0; realistic views are 1 + their VIEWS index (lsst: 3).
  assert batch['family'].tolist() == [0, 0, 4, 4]
  np.testing.assert_allclose(batch['native_pixel_scale'][2:], 0.2)
  assert batch['latents'].shape == (4, len(same_lens.LATENT_NAMES))
  with pytest.raises(Exception, match='realistic_surveys'):
    sim_mixture.make(dict(data, realistic_surveys='sdss'), global_batch_size=4,
                     sharding=sharding, seed=0)
