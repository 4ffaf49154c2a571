"""The realistic recipes' rendering shortcuts give the reference images to rounding:
halos summed over the present slots only (render.sum_present, batched by custom_vmap),
the PSF by FFT (surveys.convolve_kernel_fft) and the EPL series cut where float32 ends."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.data import sim_source
from lensfm.sim import epl
from lensfm.sim import profiles
from lensfm.sim import realistic
from lensfm.sim import render
from lensfm.sim import surveys

FAST_COMPILE = {'xla_backend_optimization_level': 0}


def _halos(key, batch, slots, counts):
  k = jax.random.split(key, 4)
  alpha = jax.random.uniform(k[0], (batch, slots), minval=0.01, maxval=0.05)
  alpha = jnp.where(jnp.arange(slots) < jnp.asarray(counts)[:, None], alpha, 0.0)
  # Absent slots may hold anything: they are masked, not multiplied by zero.
  rs = jnp.where(alpha > 0, jax.random.uniform(k[1], (batch, slots), minval=0.05,
                                              maxval=0.2), 0.0)
  return {'Rs': rs, 'alpha_Rs': alpha, 'r_trunc': 5.0 * rs + 0.1,
          'center_x': jax.random.uniform(k[2], (batch, slots), minval=-1, maxval=1),
          'center_y': jax.random.uniform(k[3], (batch, slots), minval=-1, maxval=1)}


def test_sum_present_equals_dense_sum_single_vmapped_and_nested():
  x, y = np.meshgrid(np.linspace(-1.5, 1.5, 24), np.linspace(-1.5, 1.5, 24))
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  halos = _halos(jax.random.key(0), 6, 11, [0, 3, 11, 0, 1, 9])
  dense = lambda p: profiles.sum_over_components(   # with finite Rs where absent
      profiles.tnfw, x, y, dict(p, Rs=jnp.where(p['alpha_Rs'] > 0, p['Rs'], 1.0)))
  want = jax.vmap(dense)(halos)
  assert np.abs(np.asarray(want[0][2])).max() > 0
  tol = 1e-5 * float(np.abs(np.asarray(want[0])).max())   # sums of halos: float32 rounding
  fast = lambda p: render.sum_present(profiles.tnfw, x, y, p, 'alpha_Rs', chunk=4)
  one = jax.jit(fast)(jax.tree.map(lambda v: v[2], halos))
  np.testing.assert_allclose(one[0], want[0][2], rtol=1e-5, atol=tol)
  got = jax.jit(jax.vmap(fast))(halos)
  nested = jax.jit(jax.vmap(jax.vmap(fast)))(jax.tree.map(lambda v: v.reshape((2, 3, 11)), halos))
  for out in (got, jax.tree.map(lambda v: v.reshape((6,) + v.shape[2:]), nested)):
    for a, b in zip(out, want):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=tol)
  assert not np.asarray(got[0])[[0, 3]].any()
  # A grid per example falls back to the dense sum (absent slots then need finite leaves).
  finite = dict(halos, Rs=jnp.where(halos['alpha_Rs'] > 0, halos['Rs'], 1.0))
  per_grid = jax.jit(jax.vmap(lambda p, xx: render.sum_present(profiles.tnfw, xx, y, p)))(
      finite, jnp.broadcast_to(x, (6,) + x.shape))
  np.testing.assert_allclose(per_grid[0], want[0], rtol=1e-5, atol=tol)


def test_fft_convolution_equals_direct():
  image = jax.random.uniform(jax.random.key(1), (40, 40, 3))
  kernels = surveys.moffat_kernel(jnp.array([0.7, 0.8, 0.9]), 4.765, 0.2, 13)
  want = surveys.convolve_kernel(image, kernels)
  got = surveys.convolve_kernel_fft(image, kernels)
  np.testing.assert_allclose(got, want, atol=2e-6 * float(want.max()))
  one = surveys.convolve_kernel_fft(image[..., :1], kernels[0])
  np.testing.assert_allclose(one, want[..., :1], atol=2e-6 * float(want.max()))
  assert surveys._fft_size(67) == 72 and surveys._fft_size(64) == 64


def test_epl_series_terms_reach_float32_at_the_smallest_axis_ratio():
  assert epl.series_terms(realistic.MIN_MASS_Q) == realistic.EPL_TERMS == 28
  x, y = jnp.meshgrid(jnp.linspace(-2, 2, 33), jnp.linspace(-2, 2, 33))
  e1, e2 = (1 - 0.3) / (1 + 0.3), 0.0
  full = epl.epl(x, y, 1.2, 2.3, e1, e2, num_terms=80)
  cut = epl.epl(x, y, 1.2, 2.3, e1, e2, num_terms=realistic.EPL_TERMS)
  for a, b in zip(cut, full):
    np.testing.assert_allclose(a, b, atol=1e-6 * float(jnp.abs(b).max()))


def _light(p, xy):
  return p['amp'] * jnp.exp(-(xy[0] - p['cx'])**2 - xy[1]**2)


def test_map_present_computes_present_examples_only_and_zeros_elsewhere():
  x, y = jnp.meshgrid(jnp.linspace(-2, 2, 9), jnp.linspace(-2, 2, 9))
  ops = {'amp': jnp.arange(1.0, 7.0), 'cx': jnp.linspace(-1, 1, 6)}
  present = jnp.asarray([True, False, True, True, False, True])
  want = jax.vmap(lambda p, on: jnp.where(on, _light(p, (x, y)), 0.0))(ops, present)
  fast = lambda on, p: render.map_present(_light, on, p, (x, y), chunk=4)
  np.testing.assert_allclose(jax.jit(jax.vmap(fast))(present, ops), want, rtol=1e-6)
  nested = jax.jit(jax.vmap(jax.vmap(fast)))(present.reshape(2, 3),
                                             jax.tree.map(lambda v: v.reshape(2, 3), ops))
  np.testing.assert_allclose(nested.reshape(want.shape), want, rtol=1e-6)
  np.testing.assert_allclose(fast(present[2], jax.tree.map(lambda v: v[2], ops)), want[2],
                             rtol=1e-6)


@pytest.mark.parametrize('name', ['realistic_lsst', 'realistic_lsst_lensfind'])
def test_realistic_images_equal_reference_rendering(name):
  recipe = realistic.get(name, num_pix=24, max_subhalos=24, sigma_sub=0.05)
  keys = jax.random.split(jax.random.key(3), 12)
  simulate = lambda k: sim_source.simulate(recipe, k)
  with realistic.reference_rendering():
    want = jax.jit(simulate, compiler_options=FAST_COMPILE).lower(keys).compile()(keys)
  got = jax.jit(simulate, compiler_options=FAST_COMPILE)(keys)
  classes = set(range(len(recipe.class_names)))
  assert set(np.asarray(got['label']).tolist()) == classes
  if name == 'realistic_lsst':
    assert (np.asarray(got['n_subhalos']) > 0).any()
  np.testing.assert_array_equal(got['label'], want['label'])
  a, b = np.asarray(got['image']), np.asarray(want['image'])
  scale = np.abs(b).max(axis=(1, 2, 3), keepdims=True)
  assert (np.abs(a - b) / scale).max() < 1e-5
