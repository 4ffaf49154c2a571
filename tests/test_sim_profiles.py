"""Deflection fields of lensfm.sim.profiles against lenstronomy, profile by profile.

Tolerances (arcsec): 1e-5 in float32, 1e-7 in float64 (jax.enable_x64), evaluated on
points away from the singular centres (and, for NFW/TNFW, away from lenstronomy's own
imprecise R = Rs ring).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.sim import profiles

TOL32 = 1e-5
TOL64 = 1e-7
# LLVM optimisation off: compiles ~3x faster, and these programs are tiny to run.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def _points(centers=((0.0, 0.0),), min_dist=0.05, n=400, extent=3.0, seed=0):
  """Random points in [-extent, extent]^2 at least min_dist from every centre (float64)."""
  rng = np.random.default_rng(seed)
  pts = rng.uniform(-extent, extent, (4 * n, 2))
  for cx, cy in centers:
    pts = pts[np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) > min_dist]
  return pts[:n, 0], pts[:n, 1]


def _lenstronomy_alpha(model_list, kwargs_list, x, y):
  lens_model = pytest.importorskip('lenstronomy.LensModel.lens_model')
  return lens_model.LensModel(model_list).alpha(x, y, kwargs_list)


def _ours(fn, x, y, kwargs, x64):
  """Our deflection in float32 (default) or float64; kwargs converted to the dtype."""
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    conv = {k: jnp.asarray(v, dtype) for k, v in kwargs.items()}
    fn_jit = jax.jit(fn, compiler_options=FAST_COMPILE)
    ax, ay = fn_jit(jnp.asarray(x, dtype), jnp.asarray(y, dtype), **conv)
    return np.asarray(ax, np.float64), np.asarray(ay, np.float64)


def _check(fn, kwargs, model_list, kwargs_list, x, y):
  ref_x, ref_y = _lenstronomy_alpha(model_list, kwargs_list, x, y)
  for x64, tol in ((False, TOL32), (True, TOL64)):
    ax, ay = _ours(fn, x, y, kwargs, x64)
    err = max(np.abs(ax - ref_x).max(), np.abs(ay - ref_y).max())
    assert err < tol, f'{model_list[0]} {kwargs} x64={x64}: max error {err:.3g} arcsec'


@pytest.mark.parametrize('e1,e2', [(0.1, 0.0), (0.3, -0.2), (-0.05, 0.12), (0.0, 0.0),
                                   (1e-5, 0.0)])
def test_sie(e1, e2):
  kw = {'theta_e': 1.2815, 'e1': e1, 'e2': e2, 'center_x': 0.05, 'center_y': -0.1}
  x, y = _points([(0.05, -0.1)])
  _check(profiles.sie, kw, ['SIE'],
         [{'theta_E': 1.2815, 'e1': e1, 'e2': e2, 'center_x': 0.05, 'center_y': -0.1}], x, y)


def test_sis():
  x, y = _points([(0.2, 0.1)])
  _check(profiles.sis, {'theta_e': 0.9, 'center_x': 0.2, 'center_y': 0.1}, ['SIS'],
         [{'theta_E': 0.9, 'center_x': 0.2, 'center_y': 0.1}], x, y)


def test_external_shear():
  x, y = _points()
  _check(profiles.external_shear, {'gamma1': 0.05, 'gamma2': -0.03}, ['SHEAR'],
         [{'gamma1': 0.05, 'gamma2': -0.03}], x, y)


def test_point_mass():
  x, y = _points([(0.4, -0.3)])
  _check(profiles.point_mass, {'theta_e': 0.15, 'center_x': 0.4, 'center_y': -0.3},
         ['POINT_MASS'], [{'theta_E': 0.15, 'center_x': 0.4, 'center_y': -0.3}], x, y)


@pytest.mark.parametrize('rs,alpha_rs', [(0.5, 0.3), (2.0, 1.0), (0.05, 0.01)])
def test_nfw(rs, alpha_rs):
  center = (0.1, 0.2)
  x, y = _points([center], min_dist=0.02)
  r = np.hypot(x - center[0], y - center[1])
  keep = np.abs(r / rs - 1.0) > 1e-3   # lenstronomy's 0/0 ring (the shared notes).
  x, y = x[keep], y[keep]
  _check(profiles.nfw, {'Rs': rs, 'alpha_Rs': alpha_rs, 'center_x': center[0],
                        'center_y': center[1]}, ['NFW'],
         [{'Rs': rs, 'alpha_Rs': alpha_rs, 'center_x': center[0], 'center_y': center[1]}], x, y)


@pytest.mark.parametrize('rs,alpha_rs,r_trunc', [(0.5, 0.3, 5.0), (0.2, 0.05, 0.6),
                                                 (1.0, 0.8, 20.0)])
def test_tnfw(rs, alpha_rs, r_trunc):
  center = (-0.3, 0.1)
  x, y = _points([center], min_dist=0.02)
  r = np.hypot(x - center[0], y - center[1])
  keep = np.abs(r / rs - 1.0) > 1e-3
  x, y = x[keep], y[keep]
  _check(profiles.tnfw, {'Rs': rs, 'alpha_Rs': alpha_rs, 'r_trunc': r_trunc,
                         'center_x': center[0], 'center_y': center[1]}, ['TNFW'],
         [{'Rs': rs, 'alpha_Rs': alpha_rs, 'r_trunc': r_trunc, 'center_x': center[0],
           'center_y': center[1]}], x, y)


@pytest.mark.parametrize('method', ['sum', 'digamma'])
@pytest.mark.parametrize('half_length,angle', [(0.8, 0.7), (0.03, 2.0), (3.0, 0.0)])
def test_point_mass_string_is_lenstronomy_point_masses(method, half_length, angle):
  """The published vortex: 100 POINT_MASS profiles evenly on a line (both summations)."""
  theta_total, n = 0.22, 100
  s = np.linspace(-half_length, half_length, n)
  cx, cy = s * np.cos(angle), s * np.sin(angle)
  kwargs_list = [{'theta_E': theta_total / np.sqrt(n), 'center_x': a, 'center_y': b}
                 for a, b in zip(cx, cy)]
  x, y = _points(list(zip(cx, cy)), min_dist=0.02, n=300)
  fn = lambda x, y, **kw: profiles.point_mass_string(x, y, method=method, **kw)
  _check(fn, {'theta_e_total': theta_total, 'half_length': half_length, 'angle': angle},
         ['POINT_MASS'] * n, kwargs_list, x, y)


def test_uniform_line_mass_matches_numerical_integral():
  """No lenstronomy profile exists: compare with adaptive quadrature of point masses."""
  from scipy import integrate  # pylint: disable=import-outside-toplevel
  theta_total, half_length, angle, cx, cy = 0.3, 0.6, 0.4, 0.1, -0.05
  lam = theta_total**2 / (2 * half_length)
  x, y = _points([(cx, cy)], n=60, extent=2.0)
  ux, uy = np.cos(angle), np.sin(angle)
  dist_to_line = np.abs(-(x - cx) * uy + (y - cy) * ux)
  x, y = x[dist_to_line > 0.05], y[dist_to_line > 0.05]

  def alpha(px, py):
    def comp(s, i):
      dx, dy = px - cx - s * ux, py - cy - s * uy
      return lam * (dx, dy)[i] / (dx * dx + dy * dy)
    opts = {'epsabs': 1e-13, 'epsrel': 1e-12, 'limit': 200}
    return [integrate.quad(comp, -half_length, half_length, args=(i,), **opts)[0]
            for i in (0, 1)]

  ref = np.array([alpha(a, b) for a, b in zip(x, y)])
  kw = {'theta_e_total': theta_total, 'half_length': half_length, 'angle': angle,
        'center_x': cx, 'center_y': cy}
  for x64, tol in ((False, TOL32), (True, TOL64)):
    ax, ay = _ours(profiles.uniform_line_mass, x, y, kw, x64)
    err = max(np.abs(ax - ref[:, 0]).max(), np.abs(ay - ref[:, 1]).max())
    assert err < tol, f'x64={x64}: {err:.3g}'


def test_line_mass_is_the_limit_of_the_string():
  x, y = _points(n=50, extent=2.5, min_dist=0.3)
  kw = {'theta_e_total': 0.2, 'half_length': 0.2, 'angle': 1.1}
  lx, ly = _ours(profiles.uniform_line_mass, x, y, kw, True)
  sx, sy = _ours(
      lambda x, y, **k: profiles.point_mass_string(x, y, num_points=2001, method='digamma', **k),
      x, y, kw, True)
  # The string's end points sit at +-L, so it differs from the continuum at O(1/N).
  scale = np.abs(np.concatenate([lx, ly])).max()
  assert np.abs(lx - sx).max() < 2e-3 * scale and np.abs(ly - sy).max() < 2e-3 * scale


def test_gradients_are_finite_at_singular_configurations():
  """Round SIE (e = 0), a pixel on a centre, NFW at R = Rs: all gradients finite."""
  x = jnp.array([0.0, 0.5, 1.0, -0.7])
  y = jnp.array([0.0, 0.0, 0.0, 0.3])

  def total(params):
    ax, ay = profiles.sie(x, y, params['t'], params['e1'], params['e2'])
    bx, by = profiles.nfw(x, y, params['rs'], params['a'])
    cx, cy = profiles.point_mass(x, y, params['t'])
    dx, dy = profiles.tnfw(x, y, params['rs'], params['a'], 5.0)
    # A vortex whose axis runs through pixels (0, 0), (0.5, 0), (1, 0), between and
    # beyond its masses (at +-0.3, +-0.9).
    vx, vy = profiles.point_mass_string(x, y, params['t'], 0.9, 0.0, num_points=4,
                                        method='digamma')
    return (ax + ay + bx + by + cx + cy + dx + dy + vx + vy).sum()

  grad_fn = jax.jit(jax.grad(total), compiler_options=FAST_COMPILE)
  grads = grad_fn({'t': 1.0, 'e1': 0.0, 'e2': 0.0, 'rs': 1.0, 'a': 0.5})
  assert all(np.isfinite(v) for v in jax.tree.leaves(grads)), grads
