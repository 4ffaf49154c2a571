"""Survey bands: published pixel scales, PSFs, sky, read noise, exposures, zero points.

A `Band` is one filter of one camera as a survey observes it; `PRESETS` maps names to
bands and `SURVEYS` names the bands a multi-band survey stacks as channels (on the first
band's grid: bands of one survey share a pixel scale). Ground-based PSFs are Moffat
profiles with the atmospheric-turbulence index beta = 4.765 (Trujillo et al. 2001,
MNRAS 328, 977); space PSFs are Gaussian. Any PSF can be replaced by a pixel image
(`psf_kernel` / `convolve_kernel` take any normalised [k, k] kernel).

Units follow lenstronomy: zero point = AB magnitude giving 1 e-/s, sky in mag/arcsec^2,
read noise in e- per exposure, images in e-/s per pixel; background rms
(`Band.background_noise`) is lenstronomy data_util.bkg_noise.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lensfm.sim import instrument as instrument_lib

# Moffat index of a Kolmogorov-turbulence seeing disc (Trujillo et al. 2001).
ATMOSPHERIC_MOFFAT_BETA = 4.765


@dataclasses.dataclass(frozen=True)
class Band:
  """One filter of one survey. Hashable (a static jit argument)."""
  name: str
  pixel_scale: float         # arcsec / pixel
  psf_fwhm: float            # arcsec
  exposure_time: float       # s per exposure
  num_exposures: int
  sky_brightness: float      # mag / arcsec^2
  zero_point: float          # AB mag of 1 e-/s
  read_noise: float          # e- per exposure
  psf_model: str = 'gaussian'          # 'gaussian' or 'moffat'
  moffat_beta: float = ATMOSPHERIC_MOFFAT_BETA

  def instrument(self, num_pix=64, supersampling=1) -> instrument_lib.Instrument:
    """The band as an `instrument.Instrument` (grid, exposure, noise terms)."""
    return instrument_lib.Instrument(
        name=self.name, num_pix=num_pix, pixel_scale=self.pixel_scale, psf_fwhm=self.psf_fwhm,
        supersampling=supersampling, exposure_time=self.exposure_time,
        num_exposures=self.num_exposures, sky_brightness=self.sky_brightness,
        zero_point=self.zero_point, read_noise=self.read_noise)

  @property
  def total_exposure(self):
    return self.exposure_time * self.num_exposures

  @property
  def background_noise(self):
    """Per-pixel background rms in e-/s (lenstronomy data_util.bkg_noise)."""
    return self.instrument().background_noise

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)


def _depth_zero_point(depth, fwhm, sky, exposure, num_exposures, read_noise, pixel_scale,
                      aperture_radius=1.0):
  """The zero point at which a point source of AB magnitude `depth` has S/N 5 in a circular
  aperture (radius in arcsec; Gaussian PSF of this FWHM) with this sky, read noise and
  exposure. Solves 25 A (a s T + R) = (a g f T)^2 for a = 10^(0.4 zp), A the aperture
  area, g the PSF's flux fraction inside it."""
  sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
  area = math.pi * aperture_radius**2                                  # arcsec^2
  inside = 1.0 - math.exp(-0.5 * (aperture_radius / sigma)**2)
  total = exposure * num_exposures
  f, s = inside * 10**(-0.4 * depth), 10**(-0.4 * sky)                 # at zero point 0
  read = num_exposures * read_noise**2 / pixel_scale**2                # e- per arcsec^2
  qa, qb, qc = (f * total)**2, -25.0 * area * s * total, -25.0 * area * read
  a = (-qb + math.sqrt(qb * qb - 4.0 * qa * qc)) / (2.0 * qa)
  return 2.5 * math.log10(a)


def _hsc(band, fwhm, exposure, visits, sky, depth):
  """HSC-SSP Wide: 0.168"/px, read noise 4.5 e- (Subaru HSC instrument parameters page);
  exposures, visits and 5-sigma depths (2" apertures) from Aihara et al. 2018 (PASJ 70,
  S4, Table 1),
  median seeing from Aihara et al. 2019 (PASJ 71, 114, PDR2); sky: the dark-sky values of
  Rubin's presets (no per-band HSC sky is published in these papers); the zero point is
  the one that reproduces the published depth (`_depth_zero_point`)."""
  zp = _depth_zero_point(depth, fwhm, sky, exposure, visits, 4.5, 0.168)
  return Band(f'hsc_{band}', 0.168, fwhm, exposure, visits, sky, round(zp, 3), 4.5, 'moffat')


def _lsst(band, fwhm, visits, sky, zp):
  """Rubin LSST 10-year coadd (lenstronomy ObservationConfig/LSST.py, from Ivezic et al. 2019,
  ApJ 873, 111, Table 2): 0.2"/px, 15 s exposures, read noise 10 e-."""
  return Band(f'lsst_{band}', 0.2, fwhm, 15.0, visits, sky, zp, 10.0, 'moffat')


PRESETS = {
    # Euclid VIS / NISP (Euclid Collaboration: Mellier et al. 2024, arXiv:2405.13491;
    # Cropper et al. 2024, arXiv:2405.13492; Jahnke et al. 2024, arXiv:2405.13493; the
    # values of lenstronomy 1.14's ObservationConfig/Euclid.py, 6-year wide survey).
    'euclid_vis': Band('euclid_vis', 0.101, 0.16, 566.0, 4, 22.3, 25.72, 4.2),
    'euclid_nisp_y': Band('euclid_nisp_y', 0.3, 0.48, 87.2, 4, 22.1, 25.04, 6.1),
    'euclid_nisp_j': Band('euclid_nisp_j', 0.3, 0.49, 87.2, 4, 22.2, 25.26, 6.1),
    'euclid_nisp_h': Band('euclid_nisp_h', 0.3, 0.50, 87.2, 4, 22.3, 25.21, 6.1),
    # HST ACS/WFC F814W, COSMOS-like one orbit (Koekemoer et al. 2007, ApJS 172, 196: 4 x
    # 507 s, drizzled to 0.05"/px here); AB zero point 25.94 and read noise ~4.2 e- (ACS
    # Instrument Handbook / Bohlin 2016 AJ 152, 60), PSF FWHM ~0.1", sky ~22.5 (handbook,
    # average zodiacal light).
    'hst_acs_f814w': Band('hst_acs_f814w', 0.05, 0.10, 507.0, 4, 22.5, 25.94, 4.2),
    # HST WFC3/IR F160W, two orbits (lenstronomy ObservationConfig/HST.py, WFC3 handbook),
    # with the undrizzled PSF FWHM 0.15" (Windhorst et al. 2011, ApJS 193, 27).
    'hst_wfc3_f160w': Band('hst_wfc3_f160w', 0.08, 0.15, 5400.0, 1, 22.3, 25.96, 4.0),
    # JWST NIRCam F150W, COSMOS-Web depth (Casey et al. 2023, ApJ 954, 31; values of
    # lenstronomy's ObservationConfig/JWST.py: zero point from the JDox table, sky from the ETC).
    'jwst_nircam_f150w': Band('jwst_nircam_f150w', 0.031, 0.05, 257.0, 8, 29.96, 28.02, 15.77),
    'lsst_u': _lsst('u', 0.81, 140, 22.99, 26.50),
    'lsst_g': _lsst('g', 0.77, 200, 22.26, 28.30),
    'lsst_r': _lsst('r', 0.73, 460, 21.20, 28.13),
    'lsst_i': _lsst('i', 0.71, 460, 20.48, 27.79),
    'lsst_z': _lsst('z', 0.69, 400, 19.60, 27.40),
    'lsst_y': _lsst('y', 0.68, 400, 18.61, 26.58),
    'hsc_g': _hsc('g', 0.77, 150.0, 4, 22.26, 26.5),
    'hsc_r': _hsc('r', 0.76, 150.0, 4, 21.20, 26.1),
    'hsc_i': _hsc('i', 0.58, 200.0, 6, 20.48, 25.9),
    'hsc_z': _hsc('z', 0.68, 200.0, 6, 19.60, 25.1),
    'hsc_y': _hsc('y', 0.68, 200.0, 6, 18.61, 24.4),
}

# The bands each survey's realistic recipe stacks as channels (one grid per survey).
SURVEYS = {
    'euclid': ('euclid_vis',),
    'hst': ('hst_acs_f814w',),
    'jwst': ('jwst_nircam_f150w',),
    'lsst': ('lsst_g', 'lsst_r', 'lsst_i'),
    'hsc': ('hsc_g', 'hsc_r', 'hsc_i', 'hsc_z', 'hsc_y'),
}


def survey_bands(survey):
  """The `Band`s of a survey (`SURVEYS`), checked to share one pixel scale."""
  bands = tuple(PRESETS[b] for b in SURVEYS[survey])
  if len({b.pixel_scale for b in bands}) != 1:
    raise ValueError(f'Survey {survey!r}: bands with different pixel scales.')
  return bands


# --- PSF kernels ------------------------------------------------------------------------

def moffat_alpha(fwhm, beta):
  """Moffat core radius alpha of a profile (1 + r^2 / alpha^2)^-beta with this FWHM."""
  return fwhm / (2.0 * jnp.sqrt(2.0**(1.0 / beta) - 1.0))


def _kernel_grid(pixel_scale, radius, supersampling):
  n = (2 * radius + 1) * supersampling
  coords = (np.arange(n) - (n - 1) / 2.0) * pixel_scale / supersampling
  return np.meshgrid(coords, coords)


def _pixelise(values, supersampling):
  k = values.shape[-1] // supersampling
  values = values.reshape(values.shape[:-2] + (k, supersampling, k, supersampling))
  values = values.mean(axis=(-3, -1))
  return values / values.sum(axis=(-2, -1), keepdims=True)


def moffat_kernel(fwhm, beta, pixel_scale, radius, supersampling=3):
  """Normalised Moffat kernel [2 radius + 1]^2: the profile averaged over each pixel
  (`supersampling`^2 points). fwhm, beta may be traced (leading batch shape allowed)."""
  x, y = _kernel_grid(pixel_scale, radius, supersampling)
  fwhm, beta = jnp.asarray(fwhm)[..., None, None], jnp.asarray(beta)[..., None, None]
  alpha = moffat_alpha(fwhm, beta)
  return _pixelise((1.0 + (x * x + y * y) / (alpha * alpha))**(-beta), supersampling)


def gaussian_kernel(fwhm, pixel_scale, radius, supersampling=3):
  """Normalised Gaussian kernel [2 radius + 1]^2, pixel-averaged like `moffat_kernel`."""
  x, y = _kernel_grid(pixel_scale, radius, supersampling)
  sigma = jnp.asarray(fwhm)[..., None, None] * instrument_lib.FWHM_TO_SIGMA
  return _pixelise(jnp.exp(-0.5 * (x * x + y * y) / (sigma * sigma)), supersampling)


def kernel_radius(band: Band, num_pix, fwhm_factor=3.0):
  """A static kernel radius (pixels): fwhm_factor FWHMs (the largest the band's prior
  allows), at most half the image."""
  return int(min(max(math.ceil(fwhm_factor * band.psf_fwhm / band.pixel_scale), 1),
                 num_pix // 2))


def psf_kernel(band: Band, radius, fwhm=None):
  """The band's PSF kernel at its (or a traced) FWHM."""
  fwhm = band.psf_fwhm if fwhm is None else fwhm
  if band.psf_model == 'moffat':
    return moffat_kernel(fwhm, band.moffat_beta, band.pixel_scale, radius)
  if band.psf_model == 'gaussian':
    return gaussian_kernel(fwhm, band.pixel_scale, radius)
  raise ValueError(f'unknown psf_model {band.psf_model!r}; use gaussian or moffat')


def convolve_kernel(image, kernel):
  """image [H, W, C] convolved with kernel [k, k] or per channel [C, k, k] (odd k), zero
  padded and cut to the image: scipy fftconvolve(mode='same'), as lenstronomy's 'PIXEL' PSF."""
  channels = image.shape[-1]
  kernel = jnp.broadcast_to(kernel, (channels,) + kernel.shape[-2:]).astype(image.dtype)
  # lax.conv correlates: flip the kernel. One depthwise conv (feature groups = channels).
  rhs = kernel[:, ::-1, ::-1][:, :, :, None].transpose(1, 2, 3, 0)   # [k, k, 1, C]
  out = jax.lax.conv_general_dilated(image[None], rhs, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                     feature_group_count=channels,
                                     precision=jax.lax.Precision.HIGHEST)
  return out[0]


def _fft_size(n):
  """The smallest 2^a 3^b 5^c >= n (sizes pocketfft / XLA's CPU FFT do fast)."""
  size = n
  while True:
    m = size
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    if m == 1:
      return size
    size += 1


def convolve_kernel_fft(image, kernel):
  """`convolve_kernel` by FFT (the same zero-padded 'same' convolution, equal to rounding):
  cheaper on CPU once the kernel is more than a few pixels wide (e.g. the ground-based
  Moffat kernels, 27 x 27 for LSST at 0.2"/px)."""
  h, w, channels = image.shape
  kernel = jnp.broadcast_to(kernel, (channels,) + kernel.shape[-2:]).astype(image.dtype)
  k = kernel.shape[-1]
  r = (k - 1) // 2
  size = (_fft_size(h + k - 1), _fft_size(w + k - 1))
  image_f = jnp.fft.rfft2(jnp.moveaxis(image, -1, 0), s=size)
  kernel_f = jnp.fft.rfft2(kernel, s=size)
  full = jnp.fft.irfft2(image_f * kernel_f, s=size)
  return jnp.moveaxis(full[:, r:r + h, r:r + w], 0, -1).astype(image.dtype)


def noise(key, image, bands):
  """lenstronomy `noise_for_model` per channel of image [H, W, C]: background of each band's
  rms plus the Gaussian approximation of Poisson noise at its total exposure (e-/s)."""
  background = jnp.asarray([b.background_noise for b in bands], image.dtype)
  exposure = jnp.asarray([b.total_exposure for b in bands], image.dtype)
  return instrument_lib.gaussian_noise(key, image, background, exposure)
