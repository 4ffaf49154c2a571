"""Substructure populations (lensfm.sim.populations): the drawn mass function's slope and
counts, the warm-dark-matter cut, and one subhalo's deflection against lenstronomy TNFW."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.sim import populations
from lensfm.sim import priors
from lensfm.sim import profiles

MAX = 160


def _draws(m_hm, num=400, sigma_sub=0.005):
  def one(key):
    draw = priors.UniformStream(key, 8 * MAX + 8)
    return populations.subhalos(draw, z_lens=jnp.float32(0.5), z_source=jnp.float32(2.0),
                                center=jnp.zeros(2), sigma_host=jnp.float32(250.0),
                                max_halos=MAX, sigma_sub=sigma_sub, radius_arcsec=1.5,
                                m_min=1e6, m_max=1e10, m_hm=m_hm)
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), num)))


def test_mass_function_slope_and_counts():
  tnfw, info = _draws(0.0)
  expected = float(info['expected'][0])
  assert 60 < expected < MAX - 40            # the slots hold the Poisson tail
  counts = info['count']
  assert counts.mean() == pytest.approx(expected, abs=4 * np.sqrt(expected / len(counts)))
  assert counts.var() == pytest.approx(expected, rel=0.2)        # Poisson
  m = info['mass'][info['mass'] > 0]
  # Maximum-likelihood slope of a power law truncated to [1e6, 1e10], on a grid.
  slopes = np.linspace(-2.1, -1.7, 401)
  p = slopes + 1.0
  log_norm = np.log(p / (1e10**p - 1e6**p))
  loglike = len(m) * log_norm + slopes * np.log(m).sum()
  best = slopes[np.argmax(loglike)]
  assert best == pytest.approx(-1.9, abs=3 / np.sqrt(len(m)) + 0.005)
  assert (tnfw['alpha_Rs'][info['mass'] == 0] == 0).all()


def test_warm_dark_matter_suppression():
  m_hm = 1e8
  _, cdm = _draws(0.0)
  _, wdm = _draws(m_hm)
  for lo, hi in ((1e6, 1e7), (1e8, 1e9)):
    n_cdm = ((cdm['mass'] >= lo) & (cdm['mass'] < hi)).sum()
    n_wdm = ((wdm['mass'] >= lo) & (wdm['mass'] < hi)).sum()
    grid = np.geomspace(lo, hi, 200)
    weight = grid**-0.9        # dN/dlog m of the CDM function
    fraction = (weight * np.asarray(populations.wdm_suppression(grid, m_hm))).sum() / weight.sum()
    assert n_wdm / n_cdm == pytest.approx(fraction, abs=4 * np.sqrt(fraction / n_cdm) + 0.01)


def test_one_subhalo_deflection_matches_lenstronomy_tnfw():
  lens_cosmo = pytest.importorskip('lenstronomy.Cosmo.lens_cosmo')
  lens_model = pytest.importorskip('lenstronomy.LensModel.lens_model')
  astropy_cosmo = pytest.importorskip('astropy.cosmology')
  tnfw, info = _draws(0.0, num=2)
  i = int(np.argmax(info['mass'][0]))
  m, c = float(info['mass'][0, i]), float(info['concentration'][0, i])
  assert c == pytest.approx(float(populations.duffy_concentration(m, 0.5)), rel=0.6)
  cosmo = astropy_cosmo.FlatLambdaCDM(H0=69.7, Om0=0.0464 + 0.235)
  rs, alpha_rs = lens_cosmo.LensCosmo(0.5, 2.0, cosmo=cosmo).nfw_physical2angle(m, c)
  sub = {k: float(v[0, i]) for k, v in tnfw.items()}
  assert sub['Rs'] == pytest.approx(rs, rel=1e-4)
  assert sub['alpha_Rs'] == pytest.approx(alpha_rs, rel=1e-4)
  rng = np.random.default_rng(0)
  x, y = sub['center_x'] + rng.uniform(-1, 1, 300), sub['center_y'] + rng.uniform(-1, 1, 300)
  ref = lens_model.LensModel(['TNFW']).alpha(x, y, [sub])
  with jax.enable_x64(True):
    ours = profiles.tnfw(jnp.asarray(x), jnp.asarray(y),
                         **{k: jnp.float64(v) for k, v in sub.items()})
  # Relative to the subhalo's largest deflection (lenstronomy's own Rs ring is imprecise).
  scale = np.abs(ref).max()
  assert np.abs(np.asarray(ours[0]) - ref[0]).max() < 1e-6 * scale
  assert np.abs(np.asarray(ours[1]) - ref[1]).max() < 1e-6 * scale


def test_line_of_sight_halos_are_drawn_and_finite():
  def one(key):
    draw = priors.UniformStream(key, 8 * 32)
    return populations.line_of_sight(draw, z_source=jnp.float32(2.0), max_halos=32,
                                     number_density=1.0, radius_arcsec=2.0)
  tnfw, count = jax.tree.map(np.asarray, jax.jit(jax.vmap(one))(
      jax.random.split(jax.random.key(1), 50)))
  assert count.mean() == pytest.approx(4 * np.pi, rel=0.2)
  assert np.isfinite(tnfw['alpha_Rs']).all() and (tnfw['Rs'] > 0).all()
