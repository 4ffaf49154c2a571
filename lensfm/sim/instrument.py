"""Pixel grids, Gaussian PSF convolution and noise, following lenstronomy's conventions.

* Grid: lenstronomy `util.make_grid`: pixel centres, centred on (0, 0); image[i, j] has
  x = (j - (n-1)/2) * scale and y = (i - (n-1)/2) * scale (rows are y, ascending).
* Flux: surface brightness at pixel centres (or averaged over a supersampled grid) times
  the pixel area, as lenstronomy's Numerics does.
* PSF: lenstronomy renders a 'GAUSSIAN' PSF with `scipy.ndimage.gaussian_filter`
  (MultiGaussianConvolution): a separable Gaussian truncated at radius
  int(truncation * sigma_pix + 0.5) pixels, renormalised, with 'nearest' (edge) padding.
  `convolve_gaussian` reproduces exactly that, and also takes a traced sigma (the kernel
  has a fixed maximum size and the taps beyond the truncation radius are zeroed).
* Noise: lenstronomy's ObservationAPI (`noise_for_model`): Gaussian background of rms
  `background_noise` plus the Gaussian approximation of Poisson noise, in counts/s.
"""
import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclasses.dataclass(frozen=True)
class Instrument:
  """A single-band camera + observation. Hashable, so it can be a static jit argument.

  exposure_time is per exposure (s); the total is exposure_time * num_exposures, as in
  lenstronomy. background_rms, if set, overrides the read-noise + sky computation (as
  lenstronomy's `background_noise` argument does).
  """
  name: str
  num_pix: int
  pixel_scale: float               # arcsec / pixel
  psf_fwhm: float                  # arcsec
  psf_truncation: float = 5.0      # in units of sigma (lenstronomy PSF/ObservationAPI default 5)
  supersampling: int = 1
  exposure_time: float = 1.0       # s, per exposure
  num_exposures: int = 1
  sky_brightness: Optional[float] = None   # mag / arcsec^2
  zero_point: Optional[float] = None       # mag giving 1 count/s
  read_noise: float = 0.0                  # e- per exposure
  ccd_gain: float = 1.0                    # e-/ADU (data are in e-, so unused for noise)
  background_rms: Optional[float] = None   # counts/s per pixel; overrides read noise + sky

  @property
  def total_exposure(self):
    return self.exposure_time * self.num_exposures

  @property
  def psf_sigma(self):
    return self.psf_fwhm * FWHM_TO_SIGMA

  @property
  def sky_cps_per_arcsec2(self):
    if self.sky_brightness is None or self.zero_point is None:
      return 0.0
    return 10.0**(-(self.sky_brightness - self.zero_point) / 2.5)

  @property
  def background_noise(self):
    """Per-pixel background rms in counts/s (lenstronomy data_util.bkg_noise)."""
    if self.background_rms is not None:
      return self.background_rms
    t_tot = self.total_exposure
    read_var = self.num_exposures * self.read_noise**2
    sky_counts = t_tot * self.sky_cps_per_arcsec2 * self.pixel_scale**2
    return math.sqrt(read_var + sky_counts) / t_tot

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)


# Model I of DeepLense (`DeepLens.simple_sim`): exposure is drawn per image, 10^U(3, 3.5).
MODEL_I = Instrument(name='model_i', num_pix=150, pixel_scale=0.05, psf_fwhm=0.087,
                     psf_truncation=3.0, background_rms=0.01)

# lenstronomy's Euclid VIS preset as DeepLense used it (6-year coadd, Gaussian PSF).
# lenstronomy >= 1.13 updated these numbers (566 s, sky 22.3, zero point 25.72, see
# EUCLID_VIS_LENSTRONOMY_1_14); the released Model II/IV files predate that.
EUCLID_VIS = Instrument(name='euclid_vis', num_pix=64, pixel_scale=0.101, psf_fwhm=0.16,
                        exposure_time=565.0, num_exposures=4, sky_brightness=22.35,
                        zero_point=24.0, read_noise=4.2, ccd_gain=3.1)
EUCLID_VIS_LENSTRONOMY_1_14 = EUCLID_VIS.replace(
    name='euclid_vis_lenstronomy_1_14', exposure_time=566.0, sky_brightness=22.3,
    zero_point=25.72)

# lenstronomy's HST WFC3 F160W preset (Gaussian PSF): the "HST-like" Model III.
HST_WFC3_F160W = Instrument(name='hst_wfc3_f160w', num_pix=64, pixel_scale=0.08,
                            psf_fwhm=0.08, exposure_time=5400.0, num_exposures=1,
                            sky_brightness=22.3, zero_point=25.96, read_noise=4.0,
                            ccd_gain=2.5)


def pixel_grid(num_pix, pixel_scale, supersampling=1, dtype=np.float64):
  """(x, y) of pixel (or sub-pixel) centres, each [n*s, n*s], lenstronomy make_grid order."""
  n = num_pix * supersampling
  step = pixel_scale / supersampling
  coords = (np.arange(n) - (n - 1) / 2.0) * step
  x, y = np.meshgrid(coords, coords)   # x varies along columns, y along rows.
  return x.astype(dtype), y.astype(dtype)


def downsample(image, factor):
  """Mean over factor x factor blocks of the two leading axes ([H*f, W*f, ...] -> [H, W, ...])."""
  if factor == 1:
    return image
  h, w = image.shape[0] // factor, image.shape[1] // factor
  return image.reshape((h, factor, w, factor) + image.shape[2:]).mean(axis=(1, 3))


def gaussian_radius_pixels(sigma_pix, truncation):
  """scipy.ndimage's kernel radius: int(truncation * sigma + 0.5)."""
  return int(truncation * float(sigma_pix) + 0.5)


def gaussian_taps(sigma_pix, truncation, max_radius):
  """Normalised 1-D Gaussian taps [..., 2*max_radius+1], zero beyond the truncation radius.

  sigma_pix may be traced (any leading shape); max_radius is static and must cover the
  largest truncation radius, otherwise the kernel is silently cut at max_radius.
  """
  sigma_pix = jnp.asarray(sigma_pix)[..., None]
  offsets = jnp.arange(-max_radius, max_radius + 1, dtype=sigma_pix.dtype)
  radius = jnp.floor(truncation * sigma_pix + 0.5)
  taps = jnp.exp(-0.5 * (offsets / sigma_pix)**2)
  taps = jnp.where(jnp.abs(offsets) <= radius, taps, 0.0)
  return taps / taps.sum(-1, keepdims=True)


def _convolve_axis(image, taps, axis):
  """Correlate one axis of image [H, W, C] with per-channel taps [C, K], edge padding."""
  radius = (taps.shape[-1] - 1) // 2
  pad = [(0, 0)] * image.ndim
  pad[axis] = (radius, radius)
  padded = jnp.pad(image, pad, mode='edge')
  length = image.shape[axis]
  out = jnp.zeros_like(image)
  # A short static loop of shifted slices: faster than a general conv for K <= ~15 and
  # it handles a different kernel per channel (per band / per image sigma).
  for k in range(taps.shape[-1]):
    window = jax.lax.slice_in_dim(padded, k, k + length, axis=axis)
    out = out + window * taps[..., k]
  return out


def convolve_gaussian(image, sigma_pix, truncation, max_radius):
  """Gaussian PSF convolution of image [H, W, C]; sigma_pix is [C] or scalar (pixels)."""
  sigma_pix = jnp.broadcast_to(jnp.asarray(sigma_pix, image.dtype), image.shape[-1:])
  taps = gaussian_taps(sigma_pix, truncation, max_radius)
  return _convolve_axis(_convolve_axis(image, taps, 0), taps, 1)


def gaussian_kernel_2d(sigma_pix, truncation):
  """The 2-D kernel equivalent to `convolve_gaussian` (for plots and checks), numpy."""
  r = gaussian_radius_pixels(sigma_pix, truncation)
  t = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_pix)**2)
  t /= t.sum()
  return np.outer(t, t)


def gaussian_noise(key, image, background_rms, total_exposure):
  """lenstronomy `noise_for_model`: background + Gaussian-approximated Poisson (counts/s)."""
  k_bkg, k_poisson = jax.random.split(key)
  poisson_sigma = jnp.sqrt(jnp.maximum(image * total_exposure, 0.0)) / total_exposure
  return (jax.random.normal(k_bkg, image.shape, image.dtype) * background_rms
          + jax.random.normal(k_poisson, image.shape, image.dtype) * poisson_sigma)


# Poisson draws: jax.random.poisson runs Knuth's loop (one full-array random draw per
# iteration) and a rejection loop over every element. `poisson` draws exactly the same
# distribution with few random numbers: ONE uniform per element serves inversion where
# the rate is small and the first round of transformed rejection (PTRS) where it is
# large (the two sets are disjoint, so the draws stay independent), one more uniform is
# PTRS's second variate, and only the ~10% rejected elements are compacted and re-drawn,
# from their row's key folded with the pass and round.
#
# Under vmap (the recipes vmap `observe` over images) the batch is folded into rows of
# ONE call (custom_vmap): a vmapped while loop would step every image until the slowest
# is done. Each row (image) draws from its own key only, so vmapped draws equal
# one-call-per-image draws exactly.
_INVERSION_MAX_RATE = 10.0
_INVERSION_TERMS = 40        # P(X >= 40 | rate < 10) < 1e-12
_LEFTOVER_FRACTION = 8       # a re-draw pass handles up to M / 8 rejections per row
_FIRST_DRAW_BLOCKS = 4       # see _in_blocks


def _ptrs_attempt(u, v, lam):
  """One round of Hoermann's (1993) transformed rejection (numpy's random_poisson_ptrs).

  u, v: independent U(0, 1) arrays shaped like lam. Returns (k, accepted); valid for
  lam >= 10.
  """
  u = u - 0.5
  slam, loglam = jnp.sqrt(lam), jnp.log(lam)
  b = 0.931 + 2.53 * slam
  a = -0.059 + 0.02483 * b
  inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
  v_r = 0.9277 - 3.6224 / (b - 2.0)
  us = 0.5 - jnp.abs(u)
  k = jnp.floor((2.0 * a / us + b) * u + lam + 0.43)
  quick = (us >= 0.07) & (v <= v_r)
  reject = (k < 0) | ((us < 0.013) & (v > us))
  log_ratio = jnp.log(v) + jnp.log(inv_alpha) - jnp.log(a / (us * us) + b)
  exact = log_ratio <= -lam + k * loglam - jax.lax.lgamma(jnp.maximum(k, 0.0) + 1.0)
  return k, quick | (~reject & exact)


def _redraw_rejected(keys, lam, draws):
  """Fills the rejected draws (-1) of [rows, M] arrays by re-drawing them.

  Each pass compacts up to M / _LEFTOVER_FRACTION rejected elements per row (one
  jnp.nonzero per row) and runs PTRS rounds on that small array until all of it is
  accepted, with uniforms from the row's key folded with the pass and round: a row's
  draws depend on its key and rates only, never on the other rows. Another pass runs
  only if a row had more rejections than that. Acceptance travels inside `draws` (not
  as a separate mask) so that XLA materialises the first round once instead of fusing
  (recomputing) it into each consumer.
  """
  rows, m = lam.shape
  chunk = max(16, m // _LEFTOVER_FRACTION)

  def one_pass(state):
    p, res = state
    # Padding indices point past the row: the gathers fill them, the scatter drops them.
    idx = jax.vmap(lambda r: jnp.nonzero(r < 0, size=chunk, fill_value=m)[0])(res)
    lam_c = jnp.take_along_axis(lam, idx, axis=1, mode='fill', fill_value=100.0)
    pass_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, p)

    def another_round(inner):
      r, k_c = inner
      u, v = jnp.moveaxis(jax.vmap(lambda key: jax.random.uniform(
          jax.random.fold_in(key, r), (2, chunk), lam.dtype))(pass_keys), 1, 0)
      k, accepted = _ptrs_attempt(u, v, lam_c)
      return r + 1, jnp.where((k_c < 0) & accepted, k, k_c)

    start = jnp.where(idx < m, -1.0, 0.0).astype(lam.dtype)
    _, k_c = jax.lax.while_loop(lambda inner: jnp.any(inner[1] < 0), another_round,
                                (jnp.int32(0), start))
    res = jax.vmap(lambda r, i, k: r.at[i].set(k, mode='drop'))(res, idx, k_c)
    return p + 1, res

  _, draws = jax.lax.while_loop(lambda state: jnp.any(state[1] < 0), one_pass,
                                (jnp.int32(1), draws))
  return draws


def _first_draws(u, v, lam):
  """Inversion where lam < 10, one PTRS round elsewhere; -1 marks a rejection.

  Non-finite rates would never be accepted: their draw is 0.
  """
  small = lam < _INVERSION_MAX_RATE
  # Inversion: count how many CDF terms lie below the uniform.
  lam_small = jnp.where(small, lam, 0.0)
  pmf = jnp.exp(-lam_small)
  cdf = pmf
  count = jnp.zeros_like(lam)
  for i in range(1, _INVERSION_TERMS):
    count = count + (u > cdf)
    pmf = pmf * lam_small / i
    cdf = cdf + pmf
  k, accepted = _ptrs_attempt(u, v, jnp.where(small, 100.0, lam))
  first_round = jnp.where(accepted, jnp.maximum(k, 0.0), -1.0)
  return jnp.where(small, count, jnp.where(jnp.isfinite(lam), first_round, 0.0))


def _in_blocks(fn, *arrays, num_blocks=_FIRST_DRAW_BLOCKS):
  """fn over equal-shaped arrays, as a loop over `num_blocks` blocks of their elements.

  The loop is there for XLA's sake: its inputs must be materialised, whereas a plain
  elementwise call lets XLA fuse the whole computation of the rates (e.g. a recipe's
  ray tracing and PSF) into the ~40-term draw, recomputing it many times per pixel.
  """
  shape, size = arrays[0].shape, arrays[0].size
  padded = -(-size // num_blocks) * num_blocks
  blocks = [jnp.pad(a.reshape(-1), (0, padded - size)).reshape(num_blocks, -1) for a in arrays]
  return jax.lax.map(lambda args: fn(*args), tuple(blocks)).reshape(-1)[:size].reshape(shape)


@jax.custom_batching.custom_vmap
def _poisson_rows(keys, lam):
  """Poisson draws for lam [rows, M], row i from keys[i] (a [rows] key array)."""
  m = lam.shape[1]
  u, v = jnp.moveaxis(jax.vmap(lambda key: jax.random.uniform(key, (2, m), lam.dtype))(keys),
                      1, 0)
  draws = _in_blocks(_first_draws, u, v, lam)
  return _redraw_rejected(keys, jnp.where(lam < _INVERSION_MAX_RATE, 100.0, lam), draws)


@_poisson_rows.def_vmap
def _poisson_rows_vmap(axis_size, in_batched, keys, lam):
  """vmap folds the new batch axis into the rows (one call, one compaction)."""
  keys_batched, lam_batched = in_batched
  if not keys_batched:
    keys = jnp.broadcast_to(keys, (axis_size,) + keys.shape)
  if not lam_batched:
    lam = jnp.broadcast_to(lam, (axis_size,) + lam.shape)
  rows, m = lam.shape[1:]
  # Raw uint32 keys carry their key data as trailing dimensions: keep those.
  keys = keys.reshape((axis_size * rows,) + keys.shape[2:])
  out = _poisson_rows(keys, lam.reshape(axis_size * rows, m))
  return out.reshape(axis_size, rows, m), True


def poisson(key, lam):
  """Exact Poisson(lam) draws (a float array of integers), cheap on CPU and accelerators.

  The draws depend only on (key, lam): vmapping over keys gives exactly the draws of the
  separate calls.
  """
  lam = jnp.asarray(lam)
  return _poisson_rows(key[None], lam.reshape(1, -1)).reshape(lam.shape)


def model_i_counts(key, image, exposure, background_rms=0.01):
  """DeepLense Model I observation: Poisson(exp * (model + poisson + background)), clipped.

  `DeepLens.simple_sim` adds a Gaussian of sigma sqrt(|model| / exp)
  (image_util.add_poisson) and one of sigma `background_rms` (add_background); their sum
  is drawn here as ONE Gaussian of the summed variance (the same distribution, half the
  random numbers), then the final Poisson draw.
  """
  k_gauss, k_poisson = jax.random.split(key)
  sigma = jnp.sqrt(jnp.abs(image) / exposure + background_rms**2)
  gauss = jax.random.normal(k_gauss, image.shape, image.dtype) * sigma
  rate = jnp.maximum(exposure * (image + gauss), 0.0)
  return poisson(k_poisson, rate).astype(image.dtype)
