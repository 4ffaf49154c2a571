"""Realistic-sky light (lensfm.sim.galaxies): lens galaxies and clumpy sources against
lenstronomy's SERSIC_ELLIPSE, band by band, and their magnitudes against its total flux."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.sim import galaxies
from lensfm.sim import priors
from lensfm.sim import profiles
from lensfm.sim import surveys

BANDS = surveys.survey_bands('lsst')
NAMES = tuple(b.name for b in BANDS)
ZPS = np.asarray([b.zero_point for b in BANDS], np.float32)


@jax.jit
def _draw(key):
  draw = priors.UniformStream(key, 64)
  lens, lens_mag = galaxies.lens_light(draw, jnp.float32(250.0), jnp.float32(0.5), 0.7, 0.3,
                                       jnp.array([0.05, -0.02]), ZPS, NAMES)
  src, src_mag, n_clumps = galaxies.source(draw, jnp.float32(2.0), jnp.array([0.1, 0.2]), ZPS,
                                           NAMES)
  return lens, lens_mag, src, src_mag, n_clumps


def _lenstronomy_light(params, band, x, y):
  light_model = pytest.importorskip('lenstronomy.LightModel.light_model')
  k = params['amp'].shape[-1]
  kwargs = [{'amp': float(params['amp'][band, i]), 'R_sersic': float(params['R_sersic'][i]),
             'n_sersic': float(params['n_sersic'][i]), 'e1': float(params['e1'][i]),
             'e2': float(params['e2'][i]), 'center_x': float(params['center_x'][i]),
             'center_y': float(params['center_y'][i])} for i in range(k)]
  model = light_model.LightModel(['SERSIC_ELLIPSE'] * k)
  return model.surface_brightness(x, y, kwargs), model.total_flux(kwargs)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_lens_light_and_source_match_lenstronomy_sersic_ellipse(seed):
  lens, lens_mag, src, src_mag, n_clumps = jax.tree.map(np.asarray, _draw(jax.random.key(seed)))
  rng = np.random.default_rng(seed)
  x, y = rng.uniform(-2, 2, (2, 400))
  ours_lens = np.asarray(galaxies.banded_light(lens, jnp.asarray(x), jnp.asarray(y)))
  ours_src = np.asarray(galaxies.banded_light(src, jnp.asarray(x), jnp.asarray(y)))
  for c in range(len(BANDS)):
    for params, ours, mag, colours in ((lens, ours_lens, lens_mag, galaxies.ELLIPTICAL_COLOURS),
                                       (src, ours_src, None, None)):
      ref, fluxes = _lenstronomy_light(params, c, x, y)
      np.testing.assert_allclose(ours[:, c], ref, rtol=1e-4, atol=1e-6 * ref.max())
      if mag is not None:   # The lens' total flux is its magnitude in this band.
        expected = 10**(-0.4 * (mag + colours[galaxies.FILTERS[NAMES[c]]] - ZPS[c]))
        assert np.sum(fluxes) == pytest.approx(expected, rel=1e-4)
  # The source body's flux is its magnitude (plus colour); clumps are 3-10% each.
  body = _lenstronomy_light({k: v[..., :1] for k, v in src.items()}, 2, x, y)[1][0]
  assert body == pytest.approx(10**(-0.4 * (src_mag - ZPS[2])), rel=1e-4)
  assert ((src['amp'][:, 1:] > 0).sum(axis=1) == n_clumps).all()


def test_lens_light_follows_the_mass_and_is_red():
  keys = jax.random.split(jax.random.key(5), 200)
  lens = jax.vmap(lambda k: _draw(k)[0])(keys)
  q, phi, _ = profiles.ellipticity_to_q_angle(lens['e1'], lens['e2'])
  d_angle = (np.asarray(phi)[:, 0] - 0.3 + np.pi / 2) % np.pi - np.pi / 2
  assert np.std(d_angle) == pytest.approx(np.deg2rad(10.0), rel=0.25)
  assert abs(np.median(np.asarray(q)[:, 0]) - 0.7) < 0.05
  # Elliptical colours: g fainter than r fainter than i per unit profile.
  amp = np.asarray(lens['amp'])[:, :, 0]
  assert (amp[:, 0] < amp[:, 1]).all() and (amp[:, 1] < amp[:, 2] * 10**(0.4 * 1.0)).all()
