"""The realistic sky's main lens (EPL + multipoles + shear) against lenstronomy.

Deflections and convergence at many points, including near the centre (r >= 1e-3"):
float32 to 5e-5 relative, floored at 0.1" (float32 positions 1e-3" off a centre are only
good to ~1e-6 relative, and r^(1-gamma) amplifies it); float64 to 1e-9 relative: the EPL
series with a fixed number of terms reproduces lenstronomy's scipy hyp2f1.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.sim import epl
from lensfm.sim import profiles

FAST_COMPILE = {'xla_backend_optimization_level': 0}


def _points(n=300, seed=0):
  """Random points in a 3" box plus a ring of points 1e-3" - 1e-2" from the centre."""
  rng = np.random.default_rng(seed)
  x, y = rng.uniform(-3, 3, (2, n))
  r, t = 10**rng.uniform(-3, -2, 60), rng.uniform(0, 2 * np.pi, 60)
  return np.concatenate([x, r * np.cos(t)]), np.concatenate([y, r * np.sin(t)])


def _ours(fn, x, y, kwargs, x64, **static):
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    conv = {k: jnp.asarray(v, dtype) for k, v in kwargs.items()}
    out = jax.jit(lambda x, y, kw: fn(x, y, **kw, **static), compiler_options=FAST_COMPILE)(
        jnp.asarray(x, dtype), jnp.asarray(y, dtype), conv)
    return [np.asarray(o, np.float64) for o in (out if isinstance(out, tuple) else (out,))]


def _rel(ours, ref, atol=1e-6):
  """Largest |ours - ref| / (|ref| + atol): relative, with a floor for tiny values."""
  ref = np.asarray(ref)
  return np.max(np.abs(ours - ref) / (np.abs(ref) + atol))


EPL_CASES = [(1.2, 2.0, 0.1, 0.0), (1.0, 1.55, 0.3, -0.2), (0.8, 2.45, -0.1, 0.2),
             (1.5, 1.8, 0.0, 0.0), (1.1, 2.2, 0.45, 0.1)]


@pytest.mark.parametrize('theta_e,gamma,e1,e2', EPL_CASES)
def test_epl_deflection_and_convergence(theta_e, gamma, e1, e2):
  lens_model = pytest.importorskip('lenstronomy.LensModel.lens_model')
  x, y = _points()
  x, y = x + 0.03, y - 0.02
  kw = {'theta_e': theta_e, 'gamma': gamma, 'e1': e1, 'e2': e2, 'center_x': 0.03,
        'center_y': -0.02}
  ref_kw = [{'theta_E': theta_e, 'gamma': gamma, 'e1': e1, 'e2': e2, 'center_x': 0.03,
             'center_y': -0.02}]
  model = lens_model.LensModel(['EPL'])
  ref_ax, ref_ay = model.alpha(x, y, ref_kw)
  ref_kappa = model.kappa(x, y, ref_kw)
  for x64, tol, atol, terms in ((False, 5e-5, 0.1, epl.EPL_SERIES_TERMS),
                                (True, 1e-9, 1e-6, 80)):
    ax, ay = _ours(epl.epl, x, y, kw, x64, num_terms=terms)
    assert max(_rel(ax, ref_ax, atol), _rel(ay, ref_ay, atol)) < tol, (x64, kw)
    (kappa,) = _ours(epl.epl_convergence, x, y, kw, x64)
    assert _rel(kappa, ref_kappa) < (1e-5 if not x64 else 1e-10)


def test_epl_with_gamma_2_is_the_sie():
  x, y = _points(seed=1)
  kw = {'theta_e': 1.3, 'e1': 0.2, 'e2': -0.15, 'center_x': 0.0, 'center_y': 0.0}
  ax, ay = _ours(epl.epl, x, y, dict(kw, gamma=2.0), True, num_terms=80)
  sx, sy = _ours(profiles.sie, x, y, kw, True)
  assert max(np.abs(ax - sx).max(), np.abs(ay - sy).max()) < 1e-9


@pytest.mark.parametrize('m,a_m,phi_m', [(3, 0.02, 0.4), (4, -0.03, 1.1)])
def test_multipole(m, a_m, phi_m):
  lens_model = pytest.importorskip('lenstronomy.LensModel.lens_model')
  x, y = _points(seed=2)
  x, y = x + 0.1, y
  ref_kw = [{'m': m, 'a_m': a_m, 'phi_m': phi_m, 'center_x': 0.1, 'center_y': 0.0}]
  model = lens_model.LensModel(['MULTIPOLE'])
  ref_ax, ref_ay = model.alpha(x, y, ref_kw)
  kw = {'a_m': a_m, 'phi_m': phi_m, 'center_x': 0.1, 'center_y': 0.0}
  ax, ay = _ours(epl.multipole, x, y, kw, False, m=m)
  assert max(np.abs(ax - ref_ax).max(), np.abs(ay - ref_ay).max()) < 1e-6
  (kappa,) = _ours(epl.multipole_convergence, x, y, kw, True, m=m)
  assert _rel(kappa, model.kappa(x, y, ref_kw)) < 1e-9


def test_main_lens_sum_matches_lenstronomy():
  lens_model = pytest.importorskip('lenstronomy.LensModel.lens_model')
  x, y = _points(seed=3)
  params = {'epl': {'theta_e': 1.4, 'gamma': 2.1, 'e1': 0.15, 'e2': 0.05, 'center_x': 0.05,
                    'center_y': 0.1},
            'multipoles': {'a_3': 0.01, 'phi_3': 0.3, 'a_4': 0.02, 'phi_4': -0.5},
            'shear': {'gamma1': 0.07, 'gamma2': -0.04}}
  ref = lens_model.LensModel(['EPL', 'MULTIPOLE', 'MULTIPOLE', 'SHEAR']).alpha(x, y, [
      {'theta_E': 1.4, 'gamma': 2.1, 'e1': 0.15, 'e2': 0.05, 'center_x': 0.05, 'center_y': 0.1},
      {'m': 3, 'a_m': 0.01, 'phi_m': 0.3, 'center_x': 0.05, 'center_y': 0.1},
      {'m': 4, 'a_m': 0.02, 'phi_m': -0.5, 'center_x': 0.05, 'center_y': 0.1},
      {'gamma1': 0.07, 'gamma2': -0.04}])
  p32 = jax.tree.map(jnp.float32, params)
  ax, ay = jax.jit(epl.main_lens_deflection)(p32, jnp.asarray(x, jnp.float32),
                                              jnp.asarray(y, jnp.float32))
  assert max(_rel(np.asarray(ax), ref[0], 0.1), _rel(np.asarray(ay), ref[1], 0.1)) < 1e-5


def test_epl_vmaps_and_has_finite_gradients():
  x, y = jnp.meshgrid(jnp.linspace(-1, 1, 5), jnp.linspace(-1, 1, 5))
  gammas = jnp.array([1.6, 2.0, 2.4])
  ax, _ = jax.jit(jax.vmap(lambda g: epl.epl(x, y, 1.0, g, 0.1, 0.0)),
                  compiler_options=FAST_COMPILE)(gammas)
  assert ax.shape == (3, 5, 5) and np.isfinite(ax).all()
  grad = jax.jit(jax.grad(lambda g, e: epl.epl(x, y, 1.0, g, e, 0.0)[0].sum(), argnums=(0, 1)),
                 compiler_options=FAST_COMPILE)(2.0, 0.0)
  assert all(np.isfinite(g) for g in grad)
