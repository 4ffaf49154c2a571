"""Whole noise-free images against lenstronomy, one configuration per recipe and class.

Stored references (tests/data/sim_reference, made by
`python -m experiments.tools.make_sim_reference`) run without lenstronomy; the live
comparisons run when lenstronomy is installed.
Tolerance: max |ours - lenstronomy| < 1e-4 * peak.
"""
import functools
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.sim import instrument
from lensfm.sim import lenstronomy_reference as ref
from lensfm.sim import recipes

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), 'data', 'sim_reference')
TOL = 1e-4
# LLVM optimisation off: compiles ~3x faster, and these programs are tiny to run.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


@functools.lru_cache(maxsize=None)
def _jitted(recipe, method, static_argnums=()):
  """recipe.<method> jitted once per equal recipe (recipes hash by configuration)."""
  return jax.jit(getattr(recipe, method), static_argnums=static_argnums,
                 compiler_options=FAST_COMPILE)


def _rel_err(ours, theirs):
  return float(np.abs(np.asarray(ours, np.float64) - theirs).max() / np.abs(theirs).max())


def _load(path):
  with np.load(path) as data:
    flat = {k[len('params/'):]: data[k] for k in data.files if k.startswith('params/')}
    extra = {k: data[k] for k in data.files if not k.startswith('params/')}
  return ref.unflatten_params(flat), extra


def _reference_paths():
  return sorted(glob.glob(os.path.join(REFERENCE_DIR, '*.npz')))


def _recipe_of(path):
  with np.load(path) as data:
    meta = json.loads(str(data['meta']))
  return recipes.get(meta['recipe'], **meta['overrides'])


@pytest.mark.parametrize('path', _reference_paths(), ids=os.path.basename)
def test_matches_stored_lenstronomy_reference(path):
  params, extra = _load(path)
  recipe = _recipe_of(path)
  batch = jax.tree.map(lambda a: jnp.asarray(a)[None], params)
  ours = np.asarray(_jitted(recipe, 'render_batch')(batch))[0]
  assert ours.shape == extra['lenstronomy'].shape
  assert _rel_err(ours, extra['lenstronomy']) < TOL
  if 'simapi' in extra:
    # The DeepLense SimAPI path (multi-plane, z_source_convention 2.5, magnitudes).
    assert _rel_err(ours, extra['simapi']) < TOL


def test_all_recipes_have_a_stored_reference():
  stored = {os.path.basename(p)[:-4] for p in _reference_paths()}
  assert set(recipes.names()) <= stored


# Live comparisons of every class (lenstronomy is quick at these sizes). The recipes are
# configured like the stored references so the compiled renderers are shared.
LIVE_CASES = [(name, c) for name in ('model_i', 'model_ii', 'model_iii', 'model_iv')
              for c in recipes.DEEPLENSE_CLASSES] + [
                  ('randomized', 'no_sub'), ('randomized', 'cdm'),
                  ('lensfind', 'non_lensed'), ('lensfind', 'lensed')]


@pytest.mark.parametrize('name,class_name', LIVE_CASES)
def test_matches_lenstronomy_live(name, class_name):
  pytest.importorskip('lenstronomy')
  recipe = _recipe_of(os.path.join(REFERENCE_DIR, f'{name}.npz'))
  label = recipe.class_names.index(class_name)
  params, _ = _jitted(recipe, 'sample_params', 1)(jax.random.key(7), 1, jnp.array([label]))
  ours = np.asarray(_jitted(recipe, 'render_batch')(params))[0]
  p = jax.tree.map(lambda a: np.asarray(a[0]), params)
  assert _rel_err(ours, ref.render(p, recipe.inst)) < TOL
  if name in ('model_ii', 'model_iii'):
    simapi = ref.deeplense_simapi_render(p, ref.simapi_band_kwargs(recipe.inst))
    assert _rel_err(ours, simapi) < TOL


def test_supersampled_render_matches_lenstronomy():
  pytest.importorskip('lenstronomy')
  recipe = recipes.get('model_ii', num_pix=24, supersampling=3, classes=('cdm',))
  params, _ = _jitted(recipe, 'sample_params', 1)(jax.random.key(3), 1)
  ours = np.asarray(_jitted(recipe, 'render_batch')(params))[0]
  p = jax.tree.map(lambda a: np.asarray(a[0]), params)
  assert _rel_err(ours, ref.render(p, recipe.inst)) < TOL


def test_psf_kernel_matches_lenstronomy_gaussian_kernel():
  """The separable taps equal lenstronomy's pixel kernel for its own kernel size."""
  kernel_util = pytest.importorskip('lenstronomy.Util.kernel_util')
  for inst in (instrument.MODEL_I, instrument.EUCLID_VIS, instrument.HST_WFC3_F160W):
    sigma_pix = inst.psf_sigma / inst.pixel_scale
    ours = instrument.gaussian_kernel_2d(sigma_pix, inst.psf_truncation)
    theirs = kernel_util.kernel_gaussian(ours.shape[0], inst.pixel_scale, inst.psf_fwhm)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_point_source_image_is_the_psf():
  """A delta-like image convolved by convolve_gaussian reproduces the 2-D kernel."""
  sigma_pix, trunc = 1.3, 3.0
  image = np.zeros((15, 15, 1), np.float32)
  image[7, 7] = 1.0
  r = instrument.gaussian_radius_pixels(sigma_pix, trunc)
  convolve = jax.jit(instrument.convolve_gaussian, static_argnums=(2, 3),
                     compiler_options=FAST_COMPILE)
  out = convolve(jnp.asarray(image), sigma_pix, trunc, r + 2)
  kernel = instrument.gaussian_kernel_2d(sigma_pix, trunc)
  np.testing.assert_allclose(np.asarray(out[7 - r:8 + r, 7 - r:8 + r, 0]), kernel, atol=1e-7)
  assert float(jnp.abs(out).sum()) == pytest.approx(1.0, abs=1e-6)


def test_image_gradients_are_finite():
  """jax.grad of an image sum w.r.t. the lens parameters (cdm scene, e.g. at centres)."""
  recipe = recipes.get('model_ii', num_pix=24, classes=('cdm',))
  params, _ = _jitted(recipe, 'sample_params', 1)(jax.random.key(0), 1)
  params = jax.tree.map(lambda a: a[0], params)

  def image_sum(lens, shear, point_masses):
    p = dict(params, lens=lens, shear=shear, point_masses=point_masses)
    return recipe.render(p).sum()

  grads = jax.jit(jax.grad(image_sum, argnums=(0, 1, 2)), compiler_options=FAST_COMPILE)(
      params['lens'], params['shear'], params['point_masses'])
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.isfinite(g).all()) for g in leaves)
  assert float(jnp.abs(grads[0]['theta_e'])) > 0   # The image does depend on theta_E.
