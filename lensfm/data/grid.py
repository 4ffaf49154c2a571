"""Physical input grids: map an image at any pixel scale onto a model's grid.

A model's input grid is `config.data.image_size` pixels x `config.data.pixel_scale`
arcsec/pixel (stored in its checkpoint's config). `map_to_grid` maps one image
[H, W, C] at a source pixel scale onto such a grid with a static output shape; it is
pure jax (jittable, vmappable) and takes the source scale as a Python float or a traced
scalar, so a batch can mix instruments.

Conventions (those of lensfm.sim.instrument / lenstronomy's `make_grid`):
  * image[i, j] is the pixel centred at x = (j - (n-1)/2) * scale,
    y = (i - (n-1)/2) * scale (arcsec): both grids are centred on the optical axis.
  * Pixel values are fluxes (counts per pixel: surface brightness x pixel area), so the
    mapping conserves flux: an image fully inside the destination field keeps its sum.
  * Geometry: a point p of the source frame lands at R(rotation) p + offset in the
    destination frame (rotation counter-clockwise in (x, y), radians; offset (dx, dy)
    in arcsec, dx along columns).

Resampling. The source is read as a surface-brightness function
f(x, y) = sum_ij img[i, j] B_i(y) B_j(x) / scale^2 and each destination pixel receives
the integral of f over its area, computed separably: out = Wy @ img @ Wx^T with
W[m, k] = integral of B_k over destination pixel m. The basis B is
  * a box of one source pixel when downsampling or at equal scales (destination pixel
    >= source pixel): W are the exact pixel-overlap fractions (area averaging), and
    equal grids give the identity;
  * a unit-area tent of half-width one source pixel when upsampling (destination pixel
    < source pixel): linear interpolation of the surface brightness between source
    pixel centres, integrated over each destination pixel (smooth, not blocky).
Both bases have unit area, so flux is conserved exactly in both regimes. A rotation is
applied after the separable step by bilinear interpolation on a grid twice as fine as
the destination and large enough to hold the rotated corners, then summed 2x2 back to
the destination (exact for multiples of 90 degrees, flux conserved to interpolation
accuracy otherwise).

Padding. Where the destination field extends beyond the source image, the source is
extended by virtual pixels of re-drawn sky, level + sigma * N(0, 1) at the SOURCE
pixel scale, and these pass through the same operator as the image. So the padding has
the noise amplitude and the pixel-to-pixel correlation of the mapped image's own sky
(scaled for the area change by construction), never zeros. The sky level and sigma are
given, or estimated per channel from the image border (median and 1.4826 x MAD).
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from lensfm import errors

Scalar = Union[float, jax.Array]

# MAD -> Gaussian sigma.
MAD_TO_SIGMA = 1.4826
# Border frame used to estimate the sky: this fraction of the side, at least 2 pixels.
BORDER_FRACTION = 1.0 / 16.0
# Extra virtual source pixels on each side beyond the strict need (tent half-width,
# rounding).
_SAFETY_PIXELS = 2
_HIGHEST = jax.lax.Precision.HIGHEST
ROTATION_OVERSAMPLING = 2


def field_of_view(image_size: int, pixel_scale: float) -> float:
  """Side of a square grid in arcsec."""
  return float(image_size) * float(pixel_scale)


def _is_static(x) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating))


def border_width(size: int) -> int:
  return max(2, int(round(size * BORDER_FRACTION)))


def estimate_sky(image: jax.Array, border: Optional[int] = None):
  """Robust per-channel sky (level [C], sigma [C]) from the image's border frame."""
  h, w, c = image.shape
  b = border_width(min(h, w)) if border is None else int(border)
  frame = jnp.concatenate([
      image[:b].reshape(-1, c), image[-b:].reshape(-1, c),
      image[b:-b, :b].reshape(-1, c), image[b:-b, -b:].reshape(-1, c)], axis=0)
  level = jnp.median(frame, axis=0)
  sigma = MAD_TO_SIGMA * jnp.median(jnp.abs(frame - level), axis=0)
  return level, sigma


def _box_cdf(t):
  """Integral of the unit box on [-1/2, 1/2] up to t."""
  return jnp.clip(t + 0.5, 0.0, 1.0)


def _tent_cdf(t):
  """Integral of the unit-area tent on [-1, 1] up to t."""
  t = jnp.clip(t, -1.0, 1.0)
  return jnp.where(t < 0, 0.5 * (1.0 + t)**2, 1.0 - 0.5 * (1.0 - t)**2)


def overlap_weights(num_src: int, src_scale: Scalar, num_dst: int, dst_scale: float,
                    offset: Scalar = 0.0, pad: int = 0) -> jax.Array:
  """W [num_dst, num_src + 2 pad]: the flux fraction of each (padded) source pixel
  falling into each destination pixel, along one axis.

  Source pixel k (k = 0 is the first of `pad` virtual pixels) is centred at
  (k - pad - (num_src-1)/2) * src_scale + offset. Box basis when dst_scale >= src_scale,
  tent basis otherwise (see the module docstring).
  """
  src_scale = jnp.asarray(src_scale, jnp.float32)
  ratio = dst_scale / src_scale   # exactly 1 at equal scales, so equal grids are exact
  k = jnp.arange(num_src + 2 * pad, dtype=jnp.float32) - pad - (num_src - 1) / 2.0
  m = jnp.arange(num_dst, dtype=jnp.float32) - (num_dst - 1) / 2.0 - 0.5
  # Destination pixel edges in source-pixel units relative to each source centre:
  # [num_dst, num_src + 2 pad].
  t_lo = (m * ratio - offset / src_scale)[:, None] - k[None, :]
  t_hi = t_lo + ratio
  box = _box_cdf(t_hi) - _box_cdf(t_lo)
  tent = _tent_cdf(t_hi) - _tent_cdf(t_lo)
  # Equal scales up to float rounding count as downsampling (box: the identity).
  downsampling = dst_scale >= src_scale * (1.0 - 1e-6)
  return jnp.where(downsampling, box, tent)


def padding_pixels(num_src: int, src_scale: float, field: float, max_offset: float) -> int:
  """Virtual source pixels per side so the padded source covers `field` (+ offset)."""
  need = (field / 2.0 + max_offset) / src_scale - num_src / 2.0
  return max(0, int(math.ceil(need))) + _SAFETY_PIXELS


def _rotated_work_size(size: int) -> int:
  """Side holding every rotation of a `size` grid, with the same parity (shared centre)."""
  work = int(math.ceil(size * math.sqrt(2.0))) + 2
  return work + (work - size) % 2


def rotate_bilinear(image: jax.Array, angle: Scalar) -> jax.Array:
  """Rotate [H, W, C] counter-clockwise (in x, y) about the centre by `angle` radians.

  out(p) = in(R(-angle) p): bilinear, edge values outside (callers crop the edges).
  """
  h, w, _ = image.shape
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2.0,
                        jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2.0, indexing='ij')
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  src_x = cos * xx + sin * yy + (w - 1) / 2.0
  src_y = -sin * xx + cos * yy + (h - 1) / 2.0

  def one(channel):
    return jax.scipy.ndimage.map_coordinates(channel, (src_y, src_x), order=1,
                                             mode='nearest')

  return jax.vmap(one, in_axes=-1, out_axes=-1)(image)


def map_to_grid(image: jax.Array, src_scale: Scalar, dst_size: int, dst_scale: float, *,
                key: jax.Array,
                sky_level: Optional[jax.Array] = None,
                sky_sigma: Optional[jax.Array] = None,
                offset: Optional[jax.Array] = None,
                rotation: Optional[Scalar] = None,
                min_src_scale: Optional[float] = None,
                max_offset: Optional[float] = None) -> jax.Array:
  """Map one image [H, W, C] at `src_scale` arcsec/px onto a dst_size^2 grid at dst_scale.

  Args:
    image: [H, W, C] fluxes per pixel (any float dtype; computed in float32).
    src_scale: the image's pixel scale, a Python float or a traced scalar.
    dst_size, dst_scale: the destination grid (static).
    key: PRNG key for the re-drawn sky of the padding (required: padding is never zeros).
    sky_level, sky_sigma: per-channel sky [C] or scalars at the source pixel scale;
      None estimates them from the image border (`estimate_sky`).
    offset: (dx, dy) arcsec, where the source centre lands (see module docstring).
    rotation: radians, counter-clockwise; None (static) skips the rotation step.
    min_src_scale: static lower bound of a traced src_scale (sizes the padding);
      defaults to src_scale when static, else dst_scale / 4.
    max_offset: static bound of |dx|, |dy| for a traced offset (default 2 destination
      pixels when an offset is given).
  Returns:
    [dst_size, dst_size, C] float32.
  """
  image = jnp.asarray(image, jnp.float32)
  if image.ndim != 3:
    raise ValueError(f'map_to_grid expects one image [H, W, C]; got shape {image.shape}.')
  h, w, c = image.shape
  if min_src_scale is None:
    min_src_scale = float(src_scale) if _is_static(src_scale) else dst_scale / 4.0
  if offset is None:
    offset = jnp.zeros((2,), jnp.float32)
    max_offset = 0.0
  else:
    offset = jnp.asarray(offset, jnp.float32)
    if max_offset is None:
      max_offset = 2.0 * dst_scale
  work = dst_size if rotation is None else _rotated_work_size(dst_size)
  if rotation is not None:
    # Rotation comes after the separable step: pre-rotate the offset so the composite
    # is p -> R p + offset.
    cos, sin = jnp.cos(rotation), jnp.sin(rotation)
    offset = jnp.stack([cos * offset[0] + sin * offset[1], -sin * offset[0] + cos * offset[1]])
  field = field_of_view(work, dst_scale)
  pad_y = padding_pixels(h, min_src_scale, field, max_offset)
  pad_x = padding_pixels(w, min_src_scale, field, max_offset)

  if sky_level is None or sky_sigma is None:
    est_level, est_sigma = estimate_sky(image)
    sky_level = est_level if sky_level is None else sky_level
    sky_sigma = est_sigma if sky_sigma is None else sky_sigma
  sky_level = jnp.broadcast_to(jnp.asarray(sky_level, jnp.float32), (c,))
  sky_sigma = jnp.broadcast_to(jnp.asarray(sky_sigma, jnp.float32), (c,))
  sky = sky_level + sky_sigma * jax.random.normal(key, (h + 2 * pad_y, w + 2 * pad_x, c))
  padded = jax.lax.dynamic_update_slice(sky, image, (pad_y, pad_x, 0))

  # A rotation interpolates on a grid ROTATION_OVERSAMPLING times finer than the
  # destination, then sums back: bilinear blur stays well below a destination pixel.
  factor = 1 if rotation is None else ROTATION_OVERSAMPLING
  wy = overlap_weights(h, src_scale, work * factor, dst_scale / factor, offset[1], pad_y)
  wx = overlap_weights(w, src_scale, work * factor, dst_scale / factor, offset[0], pad_x)
  out = jnp.einsum('mh,hwc,nw->mnc', wy, padded, wx, precision=_HIGHEST)
  if rotation is not None:
    out = rotate_bilinear(out, rotation)
    out = out.reshape(work, factor, work, factor, c).sum(axis=(1, 3))
    start = (work - dst_size) // 2
    out = out[start:start + dst_size, start:start + dst_size]
  return out


def map_batch(images: jax.Array, src_scale: Scalar, dst_size: int, dst_scale: float, *,
              key: jax.Array, **kwargs) -> jax.Array:
  """`map_to_grid` over a leading batch axis (one key per image); src_scale may be [B]."""
  keys = jax.random.split(key, images.shape[0])
  scales = jnp.broadcast_to(jnp.asarray(src_scale, jnp.float32), images.shape[:1])
  if _is_static(src_scale):
    kwargs.setdefault('min_src_scale', float(src_scale))
    if float(src_scale) == float(dst_scale) and images.shape[1:3] == (dst_size, dst_size) \
        and 'offset' not in kwargs and 'rotation' not in kwargs:
      return jnp.asarray(images, jnp.float32)   # Same grid: nothing to do.
  return jax.vmap(lambda im, s, k: map_to_grid(im, s, dst_size, dst_scale, key=k, **kwargs))(
      images, scales, keys)


def needs_mapping(image_shape, src_scale: float, dst_size: int, dst_scale: float) -> bool:
  """False when an image of this shape and scale already is on the destination grid."""
  return not (tuple(image_shape[:2]) == (dst_size, dst_size)
              and abs(float(src_scale) - float(dst_scale)) <= 1e-9 * float(dst_scale))


# -- the model grid of a config, and the per-example mapper every input path applies --

# Configs written before grids were explicit trained on Model II's Euclid VIS pixels.
DEFAULT_PIXEL_SCALE = 0.101
_CONTENT_SEED = 0x5EED


def model_grid(data_config) -> tuple[int, float]:
  """(image_size, pixel_scale) of config.data: the grid the model sees."""
  size = data_config.get("image_size", None)
  if not size:
    raise errors.UserError("config.data.image_size must give the model's input size in "
                           "pixels.")
  scale = data_config.get("pixel_scale", None) or DEFAULT_PIXEL_SCALE
  return int(size), float(scale)


def content_key(image: jax.Array) -> jax.Array:
  """A PRNG key drawn from the image's pixels, so the re-drawn sky of an image is the same
  in every input path (training, evaluation, predict) and at every visit."""
  flat = jnp.asarray(image, jnp.float32).reshape(-1)
  weights = 1.0 + (jnp.arange(flat.shape[0]) % 97).astype(jnp.float32) / 97.0
  digest = jax.lax.bitcast_convert_type(jnp.sum(flat * weights), jnp.uint32)
  return jax.random.fold_in(jax.random.PRNGKey(_CONTENT_SEED), digest)


def make_mapper(src_shape, src_scale: float, dst_size: int, dst_scale: float):
  """Per-example fn(image [H, W, C]) -> [dst_size, dst_size, C], or None when the source
  already is on the destination grid. Jittable; vmap it over a batch."""
  if not needs_mapping(src_shape, src_scale, dst_size, dst_scale):
    return None
  src_scale = float(src_scale)

  def mapper(image):
    return map_to_grid(image, src_scale, dst_size, dst_scale, key=content_key(image))

  return mapper


def area_ratio(src_scale: float, dst_scale: float) -> float:
  """Flux per pixel scales with the pixel area: destination / source."""
  return (float(dst_scale) / float(src_scale))**2


@functools.lru_cache(maxsize=32)
def _batch_mapper(src_shape, src_scale: float, dst_size: int, dst_scale: float):
  mapper = make_mapper(src_shape, src_scale, dst_size, dst_scale)
  return None if mapper is None else jax.jit(jax.vmap(mapper))


def map_images(images, src_scale: float, dst_size: int, dst_scale: float):
  """A batch [B, H, W, C] (host or device) mapped onto the grid by one jitted, cached
  function per source shape; unchanged when already on the grid."""
  mapper = _batch_mapper(tuple(images.shape[1:]), float(src_scale), int(dst_size),
                         float(dst_scale))
  return images if mapper is None else mapper(jnp.asarray(images, jnp.float32))
