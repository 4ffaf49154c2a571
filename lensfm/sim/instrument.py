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

PRESETS = {i.name: i for i in (MODEL_I, EUCLID_VIS, EUCLID_VIS_LENSTRONOMY_1_14,
                               HST_WFC3_F160W)}


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
# iteration, ~20+ of them) and a rejection loop over every element, ~70% of Model I's
# cost on CPU. `poisson` draws exactly the same distribution with inversion for small
# rates (one uniform, no random draws in its loop), vectorised PTRS rounds for large ones,
# and the rare leftovers re-drawn on a compacted subset.
_INVERSION_MAX_RATE = 10.0
_INVERSION_TERMS = 40        # P(X >= 40 | rate < 10) < 1e-12
_PTRS_ROUNDS = 2             # acceptance >= 0.89 per round


def _ptrs_attempt(key, lam):
  """One round of Hoermann's (1993) transformed rejection (numpy's random_poisson_ptrs).

  Returns (k, accepted); valid for lam >= 10.
  """
  k_u, k_v = jax.random.split(key)
  u = jax.random.uniform(k_u, lam.shape, lam.dtype) - 0.5
  v = jax.random.uniform(k_v, lam.shape, lam.dtype)
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
  # The barrier materialises (k, accepted) once, so XLA cannot fuse (and so recompute)
  # the random draws into each of their consumers.
  return jax.lax.optimization_barrier((k, quick | (~reject & exact)))


def _finish_leftovers(key, lam, result, done, chunk):
  """Re-draws the not-yet-accepted elements, `chunk` at a time, until all are accepted."""
  lam_flat, res_flat, done_flat = lam.reshape(-1), result.reshape(-1), done.reshape(-1)
  size = lam_flat.shape[0]

  def not_finished(state):
    return ~jnp.all(state[2])

  def another_round(state):
    r, res, fin = state
    # Padding indices point past the end and are dropped by the scatters: a padded index
    # aliasing a real leftover would make the scatter race and could loop forever.
    idx = jnp.nonzero(~fin, size=chunk, fill_value=size)[0]
    k, accepted = _ptrs_attempt(jax.random.fold_in(key, r),
                                jnp.take(lam_flat, idx, mode='clip'))
    res = res.at[idx].set(k, mode='drop', unique_indices=False)
    res = jnp.where(fin, state[1], res)   # Keep earlier acceptances untouched.
    newly = jnp.zeros_like(fin).at[idx].set(accepted, mode='drop')
    return r + 1, res, fin | newly

  _, res_flat, _ = jax.lax.while_loop(not_finished, another_round,
                                      (jnp.int32(0), res_flat, done_flat))
  return res_flat.reshape(lam.shape)


def poisson(key, lam):
  """Exact Poisson(lam) draws (a float array of integers), cheap on CPU and accelerators."""
  lam = jnp.asarray(lam)
  k_inv, k_rej, k_left = jax.random.split(key, 3)
  small = lam < _INVERSION_MAX_RATE
  # Inversion: count how many CDF terms lie below one uniform.
  lam_small = jnp.where(small, lam, 0.0)
  u = jax.random.uniform(k_inv, lam.shape, lam.dtype)
  pmf = jnp.exp(-lam_small)
  cdf = pmf
  count = jnp.zeros_like(lam)
  for i in range(1, _INVERSION_TERMS):
    count = count + (u > cdf)
    pmf = pmf * lam_small / i
    cdf = cdf + pmf
  # Transformed rejection for large rates.
  lam_large = jnp.where(small, 100.0, lam)
  # Non-finite rates would never be accepted: mark them done (their draw is 0).
  result, done = jnp.zeros_like(lam), small | ~jnp.isfinite(lam)
  for r in range(_PTRS_ROUNDS):
    k, accepted = _ptrs_attempt(jax.random.fold_in(k_rej, r), lam_large)
    result = jnp.where(accepted & ~done, k, result)
    done = done | accepted
  # ~1-2% of the elements are left after two rounds: usually one compacted pass.
  chunk = max(16, lam.size // 32)
  result = _finish_leftovers(k_left, lam_large, result, done, chunk)
  return jnp.where(small, count, result)


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
