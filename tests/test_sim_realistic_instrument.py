"""Survey bands (lensfm.sim.surveys) against lenstronomy: Moffat PSF kernel, pixel-kernel
convolution, and the background / Poisson noise of a preset."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.sim import surveys


def test_moffat_kernel_matches_lenstronomy_moffat():
  moffat = pytest.importorskip('lenstronomy.LightModel.Profiles.moffat')
  band = surveys.PRESETS['lsst_i']
  radius = surveys.kernel_radius(band, 64)
  ours = np.asarray(surveys.moffat_kernel(band.psf_fwhm, band.moffat_beta, band.pixel_scale,
                                          radius, supersampling=1))
  coords = (np.arange(2 * radius + 1) - radius) * band.pixel_scale
  x, y = np.meshgrid(coords, coords)
  alpha = band.psf_fwhm / (2 * np.sqrt(2**(1 / band.moffat_beta) - 1))
  ref = moffat.Moffat().function(x, y, 1.0, alpha, band.moffat_beta)
  np.testing.assert_allclose(ours, ref / ref.sum(), rtol=2e-5, atol=1e-8)
  # The FWHM is the one asked for: half maximum at r = FWHM / 2.
  half = moffat.Moffat().function(band.psf_fwhm / 2, 0.0, 1.0, alpha, band.moffat_beta)
  assert half == pytest.approx(0.5, rel=1e-6)
  # Pixel-averaged kernels are normalised and traced FWHMs batch.
  batch = surveys.moffat_kernel(jnp.array([0.6, 0.9]), 3.0, 0.2, radius)
  assert batch.shape == (2, 2 * radius + 1, 2 * radius + 1)
  np.testing.assert_allclose(batch.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_kernel_convolution_matches_lenstronomy_pixel_psf():
  convolution = pytest.importorskip('lenstronomy.ImSim.Numerics.convolution')
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 1, (40, 40, 2)).astype(np.float32)
  kernels = np.asarray(surveys.moffat_kernel(jnp.array([0.7, 1.0]), 4.765, 0.2, 7))
  ours = np.asarray(jax.jit(surveys.convolve_kernel)(jnp.asarray(image), jnp.asarray(kernels)))
  for c in range(2):
    ref = convolution.PixelKernelConvolution(kernels[c], 'fft').convolution2d(image[..., c])
    np.testing.assert_allclose(ours[..., c], ref, atol=2e-6)


def test_noise_matches_lenstronomy_observation_api():
  obs_api = pytest.importorskip('lenstronomy.SimulationAPI.observation_api')
  lsst = pytest.importorskip('lenstronomy.SimulationAPI.ObservationConfig.LSST')
  kwargs = lsst.LSST(band='i').kwargs_single_band()
  band = surveys.PRESETS['lsst_i']
  ref = obs_api.SingleBand(**kwargs)
  assert band.background_noise == pytest.approx(ref.background_noise, rel=1e-12)
  image = np.full((200, 200), 0.5)
  ref_sigma = ref.estimate_noise(image)
  ours = np.asarray(surveys.noise(jax.random.key(0), jnp.asarray(image[..., None], jnp.float32),
                                  (band,)))[..., 0]
  # Same variance: background^2 + image / total exposure, within sampling error (~1%).
  assert np.std(ours) == pytest.approx(ref_sigma.mean(), rel=0.02)
  lens_noise = ref.noise_for_model(image, seed=1)
  assert np.std(ours) == pytest.approx(np.std(lens_noise), rel=0.03)


def test_presets_are_complete_and_surveys_share_grids():
  for name in ('euclid_vis', 'euclid_nisp_y', 'euclid_nisp_j', 'euclid_nisp_h', 'hst_acs_f814w',
               'hst_wfc3_f160w', 'jwst_nircam_f150w', 'lsst_u', 'lsst_g', 'lsst_r', 'lsst_i',
               'lsst_z', 'lsst_y', 'hsc_g', 'hsc_r', 'hsc_i', 'hsc_z', 'hsc_y'):
    band = surveys.PRESETS[name]
    assert band.name == name and band.background_noise > 0 and 20 < band.zero_point < 30
    assert band.psf_model == ('moffat' if name[:3] in ('lss', 'hsc') else 'gaussian')
  for survey in surveys.SURVEYS:
    assert surveys.survey_bands(survey)
