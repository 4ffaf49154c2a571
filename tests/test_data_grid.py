"""Physical input grids: flux, identity, geometry against the simulator, padding noise."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.data import grid
from lensfm.sim import instrument as instrument_lib
from lensfm.sim import recipes
from lensfm.sim import render as render_lib


def _scene(shift=(0.0, 0.0), angle=0.0):
  """One Model II cdm scene, rotated by the simulator by `angle`, then shifted (arcsec)."""
  recipe = recipes.get('model_ii')
  params, _ = recipe.scene(jax.random.PRNGKey(3), jnp.int32(1))
  # An offset source so the image is asymmetric and a wrong rotation shows.
  params['source'] = dict(params['source'], center_x=jnp.asarray([0.2]),
                          center_y=jnp.asarray([-0.12]))
  params = render_lib.rotate_scene(params, jnp.float32(angle))
  for name in ('lens', 'point_masses', 'vortex', 'source'):
    params[name] = dict(params[name], center_x=params[name]['center_x'] + shift[0],
                        center_y=params[name]['center_y'] + shift[1])
  return params


@functools.lru_cache(maxsize=None)
def _render_scene(num_pix, pixel_scale, shift=(0.0, 0.0), angle=0.0):
  """Renders are shared between tests (rendering dominates their time)."""
  return _render(_scene(shift, angle), num_pix, pixel_scale)


def _render(params, num_pix, pixel_scale):
  inst = instrument_lib.EUCLID_VIS.replace(num_pix=num_pix, pixel_scale=pixel_scale,
                                           supersampling=4)
  return np.asarray(jax.jit(render_lib.render, static_argnums=1)(params, inst))


# Jitted as every input path runs it (eager dispatch of the small ops is slow).
_map = jax.jit(grid.map_to_grid, static_argnames=('src_scale', 'dst_size', 'dst_scale',
                                                  'min_src_scale', 'max_offset'))


def _close(a, b, tol):
  """Max abs difference as a fraction of the peak."""
  err = np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b))
  assert err < tol, err
  return err


KEY = jax.random.PRNGKey(0)


def test_identity_at_equal_grids():
  image = jax.random.normal(jax.random.PRNGKey(1), (32, 32, 2))
  out = _map(image, 0.1, 32, 0.1, key=KEY)
  np.testing.assert_allclose(out, image, atol=1e-6)


@pytest.mark.parametrize('src_scale, dst_scale', [(0.05, 0.101), (0.08, 0.101), (0.2, 0.101),
                                                   (0.101, 0.05)])
def test_flux_conserved(src_scale, dst_scale):
  # A compact source well inside both fields, zero sky: the sum is the total flux.
  yy, xx = np.mgrid[:40, :40] - 19.5
  image = np.exp(-(xx**2 + (yy - 3)**2) / 20.0)[..., None].astype(np.float32)
  out = _map(image, src_scale, 96, dst_scale, key=KEY, sky_level=0.0,
                         sky_sigma=0.0)
  assert out.shape == (96, 96, 1)
  np.testing.assert_allclose(out.sum(), image.sum(), rtol=2e-5)


def test_traced_scale_matches_static():
  image = jax.random.uniform(jax.random.PRNGKey(2), (64, 64, 1))
  static = _map(image, 0.08, 48, 0.101, key=KEY)
  traced = jax.jit(lambda im, s: grid.map_to_grid(im, s, 48, 0.101, key=KEY,
                                                  min_src_scale=0.05))(image, 0.08)
  # Same sky draws are not guaranteed (the padding differs): compare the covered centre.
  np.testing.assert_allclose(traced[8:-8, 8:-8], static[8:-8, 8:-8], atol=1e-5)


def test_vmap_mixes_scales():
  images = jax.random.uniform(jax.random.PRNGKey(4), (3, 40, 40, 1))
  scales = jnp.asarray([0.05, 0.08, 0.101])
  out = jax.jit(lambda im, s: grid.map_batch(im, s, 32, 0.101, key=KEY))(images, scales)
  assert out.shape == (3, 32, 32, 1)
  for i in range(3):   # each image as if mapped alone
    alone = _map(images[i], float(scales[i]), 32, 0.101, key=KEY)
    np.testing.assert_allclose(out[i][10:-10, 10:-10], alone[10:-10, 10:-10], atol=1e-5)


def test_downsampled_scene_matches_native_render():
  fine = _render_scene(128, 0.05)             # 6.4" field
  native = _render_scene(64, 0.1)             # same field, half the resolution
  mapped = _map(fine, 0.05, 64, 0.1, key=KEY)
  _close(mapped, native, 0.02)


def test_upsampled_and_padded_scene_matches_native_render():
  coarse = _render_scene(40, 0.1)            # 4" field, padded to 6.4"
  native = _render_scene(128, 0.05)
  mapped = _map(coarse, 0.1, 128, 0.05, key=KEY, sky_level=0.0, sky_sigma=0.0)
  # Upsampling cannot restore detail (the tent smooths by ~1 coarse pixel), but flux,
  # centroid and the smoothed picture agree with the native fine render.
  np.testing.assert_allclose(np.asarray(mapped).sum(), native.sum(), rtol=1e-3)
  yy, xx = np.mgrid[:128, :128]
  for a, b in ((yy, yy), (xx, xx)):
    np.testing.assert_allclose((a[..., None] * mapped).sum() / mapped.sum(),
                               (b[..., None] * native).sum() / native.sum(), atol=0.05)
  _close(_map(mapped, 0.05, 64, 0.1, key=KEY), _map(native, 0.05, 64, 0.1, key=KEY), 0.1)
  # The padded rim (beyond the 4" source field) is sky only: zero here.
  assert np.abs(np.asarray(mapped)[:20]).max() < 1e-6


@pytest.mark.parametrize('shift, angle', [((0.0, 0.0), math.pi / 2), ((0.13, -0.07), 0.0),
                                          ((0.13, -0.07), 0.6)])
def test_shifted_rotated_scene_maps_consistently(shift, angle):
  """Map the 0.05"/px render with offset/rotation; compare with the simulator rendering
  the moved scene at 0.1"/px."""
  fine = _render_scene(128, 0.05)
  moved = _render_scene(64, 0.1, shift, angle)
  mapped = _map(fine, 0.05, 64, 0.1, key=KEY, offset=jnp.asarray(shift),
                            rotation=angle)
  # Sub-pixel moves resample the render's own pixelisation (an exact 2-pixel roll of the
  # fine render differs from the moved fine render by 1.4% of the peak); a wrong sign of
  # the offset or angle gives > 30%.
  tol = 0.04 if angle in (0.0, math.pi / 2) else 0.06
  _close(mapped, moved, tol)
  # And the unmoved map is clearly different (the test can fail).
  assert np.max(np.abs(_map(fine, 0.05, 64, 0.1, key=KEY) - moved)) > 0.1 * moved.max()


def test_padding_is_sky_noise_with_the_right_amplitude():
  sigma, level = 0.3, 2.0
  key_img, key_map = jax.random.split(jax.random.PRNGKey(5))
  image = level + sigma * jax.random.normal(key_img, (64, 64, 1))
  # 0.08 -> 0.101: downsampling (x1.26) and padding (5.12" -> 6.46").
  out = np.asarray(_map(image, 0.08, 64, 0.101, key=key_map))
  inner, rim = out[12:-12, 12:-12], out[:5]
  # Area change: each output pixel holds (0.101/0.08)^2 source pixels of flux.
  area = (0.101 / 0.08)**2
  np.testing.assert_allclose(inner.mean(), level * area, rtol=0.01)
  np.testing.assert_allclose(rim.mean(), level * area, rtol=0.02)
  np.testing.assert_allclose(rim.std(), inner.std(), rtol=0.15)
  assert rim.std() > 0.5 * sigma   # never zeros


def test_estimate_sky_is_robust_to_a_bright_source():
  image = 0.5 * jax.random.normal(jax.random.PRNGKey(6), (64, 64, 1)) + 1.0
  image = image.at[:, 30:34].add(100.0)   # a bright streak crossing the border
  level, sigma = grid.estimate_sky(image)
  np.testing.assert_allclose(level, [1.0], atol=0.1)
  np.testing.assert_allclose(sigma, [0.5], rtol=0.15)
