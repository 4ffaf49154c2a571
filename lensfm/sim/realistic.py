"""Realistic-sky recipes: `realistic_<survey>` and `realistic_<survey>_lensfind`.

    from lensfm.sim import realistic
    recipe = realistic.get('realistic_lsst', num_pix=32)
    out = recipe.sample(key, batch_size)      # the `recipes.Recipe` interface and labels

Surveys and their channels are `surveys.SURVEYS` (e.g. LSST g, r, i; HSC g-y; Euclid VIS).
Scene (one image; populations from `galaxies` and `populations`, relations cited there):
  main lens   EPL, slope gamma ~ N(2.08, 0.16) clipped to [1.5, 2.5] (SLACS, Auger et al.
              2010, ApJ 724, 511), theta_E from the lens' velocity dispersion (SIS), axis
              ratio ~ N(0.78, 0.12) clipped to [0.3, 1] (SLACS mass axis ratios, Bolton et al.
              2008), multipoles a_3 ~ N(0, 0.005) theta_E and a_4 ~ N(0, 0.01) theta_E (isophote
              a_3/a, a_4/a scatter of ellipticals, Hao et al. 2006, MNRAS 370, 1339), external
              shear per component ~ N(0, 0.05) (any direction).
  lens light  elliptical Sersic bulge + n = 1 envelope, aligned with the mass within scatter,
              observed-frame elliptical colours per band.
  source      star-forming Sersic body + up to 4 clumps, behind the lens, its centre
              uniform within 0.6 theta_E of the lens (mostly multiply imaged).
  field       0-2 unlensed neighbour galaxies (faint counts) anywhere in the image.
  classes     no_sub: nothing else; cdm: truncated-NFW subhalos of 1e7-1e10 Msun within
              1.6 theta_E (`populations.subhalos`; sigma_sub, m_hm, max_subhalos and
              subhalo_mass_range overrides; m_hm > 0 is warm dark matter); axion: the
              DeepLense vortex as a uniform line mass through the lens centre (as
              `recipes.Randomized`) of 10^U(-2, -1) times the mass inside theta_E.
              Optional line-of-sight halos (los_density).
  magnitudes  source (unlensed) magnitudes uniform in SURVEY_DEFAULTS' range per survey, or
              the source_mag_range override; neighbours up to a magnitude brighter.
  instrument  per-band PSF (Moffat for ground-based bands, seeing x U(0.85, 1.2) per image),
              supersampled pixels, lenstronomy noise_for_model noise per band.
Labels (`recipes.LABEL_KEYS`): 'sub_mass_fraction' is the subhalo (or vortex) mass over the
projected mass inside theta_E; 'theta_e' the EPL's Einstein radius.
Lens finding (`_lensfind`): lensed = the scene above without substructure; non_lensed =
the same lens galaxy (no source) alone, with neighbours, with arc-like contaminants
(tangentially aligned thin galaxies or a ring galaxy) or as a merger with a second
elliptical, each a quarter of the negatives.

The DeepLense recipes of `recipes` are untouched; these are registered here (`RECIPES`,
`get`), with the same interface and label keys.
"""
import contextlib
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lensfm.sim import cosmology
from lensfm.sim import epl
from lensfm.sim import galaxies
from lensfm.sim import instrument as instrument_lib
from lensfm.sim import light
from lensfm.sim import populations
from lensfm.sim import priors
from lensfm.sim import profiles
from lensfm.sim import recipes
from lensfm.sim import render as render_lib
from lensfm.sim import surveys

NEGATIVE_KINDS = ('alone', 'neighbours', 'arcs', 'merger')
MAX_NEIGHBOURS = 3
MAX_CLUMPS = 4
# Subhalos are drawn within this many Einstein radii of the lens (where they perturb the
# arcs); with the default sigma_sub and masses >= 1e7 Msun the Poisson mean exceeds the
# default 160 slots in ~1% of scenes (theta_E > ~1.7"), whose counts are then truncated.
SUBHALO_RADIUS = 1.6
# Mass axis ratios are clipped to >= MIN_MASS_Q (`_main_lens`): the EPL series needs only
# the terms that reach float32 precision there.
MIN_MASS_Q = 0.3
EPL_TERMS = epl.series_terms(MIN_MASS_Q)
# Ground-based seeing varies from image to image by this factor (static bound for kernels).
SEEING_RANGE = (0.85, 1.2)
# Per survey: default image size (pixels), source magnitude range (i-band-like, unlensed).
SURVEY_DEFAULTS = {
    'euclid': (64, (20.0, 24.5)),
    'hst': (96, (21.0, 26.0)),
    'jwst': (128, (22.0, 27.0)),
    'lsst': (40, (20.0, 25.0)),
    'hsc': (40, (20.0, 25.0)),
}


# --- rendering ------------------------------------------------------------------------

# Rendering shortcuts that leave every image the same up to float rounding (see
# `reference_rendering`): halos and the vortex summed over the present ones only, lens
# finding's non-lensed scenes without ray tracing, 28 EPL terms, FFT PSF convolution.
_FAST = True


@contextlib.contextmanager
def reference_rendering():
  """Within it, functions traced render the way they did before the shortcuts: every
  subhalo slot and the vortex evaluated for every scene (absent ones add exactly 0), every
  lens-finding scene ray-traced (non-lensed ones have a zero source), 40 EPL series terms
  and the PSF as a direct convolution. For benchmarks and equality checks; the images
  agree to rounding (~1e-6 of each image's maximum)."""
  global _FAST
  previous, _FAST = _FAST, False
  try:
    yield
  finally:
    _FAST = previous


def deflection(params, x, y):
  """EPL + multipoles + shear + optional subhalos / line-of-sight halos / line mass."""
  terms = EPL_TERMS if _FAST else epl.EPL_SERIES_TERMS
  ax, ay = epl.main_lens_deflection(params, x, y, terms)
  for name in ('subhalos', 'los'):
    if name in params and params[name]['Rs'].shape[-1]:
      if _FAST:   # Most slots are empty (no_sub / axion scenes, Poisson counts << slots).
        tx, ty = render_lib.sum_present(profiles.tnfw, x, y, params[name], 'alpha_Rs')
      else:
        tx, ty = profiles.sum_over_components(profiles.tnfw, x, y, params[name])
      ax, ay = ax + tx, ay + ty
  if _FAST and 'line_mass' in params:   # present in axion scenes only
    lm = jax.tree.map(lambda v: jnp.asarray(v)[None], params['line_mass'])
    lx, ly = render_lib.sum_present(profiles.uniform_line_mass, x, y, lm, 'theta_e_total')
    ax, ay = ax + lx, ay + ly
  else:
    ax, ay = render_lib.add_line_mass(params, x, y, ax, ay)
  scale = params['deflection_scale']
  return ax * scale, ay * scale


def _lensed_source(params, xy):
  """The source's light seen through the scene's deflection at xy = (x, y)."""
  x, y = xy
  ax, ay = deflection(params, x, y)
  return galaxies.banded_light(params['source'], x - ax, y - ay)


# What `_lensed_source` reads of a lens-finding scene.
_LENSED_KEYS = ('epl', 'multipoles', 'shear', 'deflection_scale', 'source')


def surface_brightness(params, x, y):
  """[H, W, C]: lensed source + lens light + unlensed neighbours + ring contaminant."""
  if _FAST and 'negative_kind' in params:
    # Lens finding: non-lensed scenes have no source (amp 0, deflection 0), so they skip
    # the ray tracing and the source light (exactly 0 either way).
    lensed = {k: params[k] for k in _LENSED_KEYS}
    present = (params['deflection_scale'] != 0) & jnp.any(params['source']['amp'] != 0)
    image = render_lib.map_present(_lensed_source, present, lensed, (x, y))
  else:
    image = _lensed_source(params, (x, y))
  image = image + galaxies.banded_light(params['lens_light'], x, y)
  if 'neighbours' in params:
    image = image + galaxies.banded_light(params['neighbours'], x, y)
  if 'ring' in params:
    image = image + galaxies.gaussian_ring(x, y, **params['ring'])
  return image


def render(params, bands, num_pix, supersampling=1, kernel_radius=None, psf_image=None):
  """Noise-free image [H, W, C] in e-/s per pixel: surface brightness averaged over
  supersampled pixels times the pixel area, convolved per band with its PSF at
  params['psf_fwhm'] [C] (or with psf_image [k, k] / [C, k, k] when given)."""
  scale = bands[0].pixel_scale
  x, y = instrument_lib.pixel_grid(num_pix, scale, supersampling)
  image = surface_brightness(params, jnp.asarray(x, dtype=float), jnp.asarray(y, dtype=float))
  image = instrument_lib.downsample(image, supersampling) * scale**2
  # FFT: 4-25x cheaper on CPU than the direct (depthwise) convolution for these kernels
  # (7-27 px) and images (40-128 px); they agree to ~1e-6 of the image's maximum.
  convolve = surveys.convolve_kernel_fft if _FAST else surveys.convolve_kernel
  if psf_image is not None:
    return convolve(image, jnp.asarray(psf_image))
  radius = kernel_radius or max(surveys.kernel_radius(b, num_pix) for b in bands)
  kernels = jnp.stack([surveys.psf_kernel(b, radius, params['psf_fwhm'][c])
                       for c, b in enumerate(bands)])
  return convolve(image, kernels)


# --- scene pieces ---------------------------------------------------------------------

def _normal(draw, mean, std, low, high, shape=()):
  return jnp.clip(mean + std * galaxies.normal(draw, shape), low, high)


def _redshifts_and_lens(draw, tables):
  """(z_lens, z_source, sigma_v, theta_E): the source drawn from n(z) above z_lens + 0.2."""
  z_l = galaxies.draw_from_table(draw.unit(), tables['z_lens'])
  sigma = galaxies.draw_from_table(draw.unit(), tables['sigma'])
  u_grid, z_grid = tables['z_source']
  u_min = jnp.interp(z_l + 0.2, jnp.asarray(z_grid), jnp.asarray(u_grid))
  z_s = galaxies.draw_from_table(u_min + draw.unit() * (1.0 - u_min), tables['z_source'])
  return z_l, z_s, sigma, galaxies.sis_einstein_radius(sigma, z_l, z_s)


def _main_lens(draw, theta_e, center):
  gamma = _normal(draw, 2.08, 0.16, 1.5, 2.5)
  q = _normal(draw, 0.78, 0.12, MIN_MASS_Q, 1.0)
  angle = draw.uniform(0.0, jnp.pi)
  e1, e2 = priors.ellipticity(q, angle)
  normals = galaxies.normal(draw, (4,))
  params = {
      'epl': {'theta_e': theta_e, 'gamma': gamma, 'e1': e1, 'e2': e2,
              'center_x': center[0], 'center_y': center[1]},
      'multipoles': {'a_3': 0.005 * theta_e * normals[0], 'phi_3': draw.uniform(0.0, jnp.pi),
                     'a_4': 0.01 * theta_e * normals[1], 'phi_4': draw.uniform(0.0, jnp.pi)},
      'shear': {'gamma1': 0.05 * normals[2], 'gamma2': 0.05 * normals[3]},
  }
  return params, q, angle


def _einstein_mass(theta_e, z_l, z_s):
  """Projected mass inside theta_E, Msun: theta_E^2 c^2 D_l D_s / (4 G D_ls)."""
  cosmo = galaxies.COSMO
  d_l = cosmology.angular_diameter_distance(cosmo, z_l)
  d_s = cosmology.angular_diameter_distance(cosmo, z_s)
  d_ls = cosmology.angular_diameter_distance(cosmo, z_l, z_s)
  theta = theta_e / galaxies.ARCSEC_PER_RAD
  return (theta**2 * cosmology.C_SI**2 / (4.0 * cosmology.G_SI) * d_l * d_s / d_ls
          * cosmology.MPC_M / cosmology.M_SUN_KG)


def _field_galaxies(draw, num, count, half_width, zero_points, band_names, mag_range):
  """`count` (<= num) unlensed star-forming/early-type field galaxies; Sersic dict [C, num]."""
  mags = galaxies.magnitude_counts(draw.unit((num,)), *mag_range)
  radii = draw.uniform(0.15, 0.8, (num,))
  n = draw.uniform(0.7, 4.0, (num,))
  e1, e2 = priors.ellipticity(draw.uniform(0.3, 1.0, (num,)), draw.uniform(0.0, jnp.pi, (num,)))
  pos = draw.uniform(-half_width, half_width, (2, num))
  colour = jnp.asarray(galaxies.colours(galaxies.STAR_FORMING_COLOURS, band_names))
  amp = light.amplitude_from_magnitude(mags[None] + colour[:, None], radii, n,
                                                jnp.asarray(zero_points)[:, None])
  amp = amp * (jnp.arange(num) < count)[None]
  return galaxies.sersic_dict(amp, radii, n, e1, e2, pos[0], pos[1])


# --- recipes --------------------------------------------------------------------------

class Realistic(recipes.Recipe):
  """Base of `realistic_<survey>` (classes no_sub / cdm / axion). See the module docstring."""
  survey: str = ''
  class_names = recipes.DEEPLENSE_CLASSES

  def __init__(self, *, num_pix=None, classes=None, noise=True, supersampling=2,
               sigma_sub=0.025, m_hm=0.0, max_subhalos=160, subhalo_mass_range=(1e7, 1e10),
               los_density=0.0, psf_image=None, source_mag_range=None, bands=None):
    default_pix, default_mags = SURVEY_DEFAULTS[self.survey]
    # Fainter sources (e.g. (22.5, 25.5)) make the harder scenes real searches meet.
    self.source_mag_range = tuple(float(m) for m in (source_mag_range or default_mags))
    super().__init__(num_pix=num_pix or default_pix, classes=classes, noise=noise,
                     supersampling=supersampling)
    self.bands = surveys.survey_bands(self.survey)
    if bands:   # A subset of the survey's bands (names, in this order), e.g. ('lsst_i',).
      bands = (bands,) if isinstance(bands, str) else tuple(bands)
      unknown = [b for b in bands if b not in surveys.SURVEYS[self.survey]]
      if unknown:
        raise ValueError(f'Recipe {self.name!r}: bands {unknown} are not among the survey '
                         f'bands {list(surveys.SURVEYS[self.survey])}.')
      self.bands = tuple(surveys.PRESETS[b] for b in bands)
    self.band_names = tuple(b.name for b in self.bands)
    self.num_bands = len(self.bands)
    self.inst = self.bands[0].instrument(self.num_pix, self.supersampling)
    self.zero_points = np.asarray([b.zero_point for b in self.bands], np.float32)
    self.settings = (float(sigma_sub), float(m_hm), int(max_subhalos),
                     tuple(float(m) for m in subhalo_mass_range), float(los_density))
    self.psf_image = None if psf_image is None else np.asarray(psf_image, np.float32)
    ground = any(b.psf_model == 'moffat' for b in self.bands)
    self.seeing_range = SEEING_RANGE if ground else (1.0, 1.0)
    self.kernel_radius = max(surveys.kernel_radius(b, self.num_pix, 3.0 * self.seeing_range[1])
                             for b in self.bands)
    self.tables = {'z_lens': galaxies.lens_redshift_table(),
                   'sigma': galaxies.velocity_dispersion_table(),
                   'z_source': galaxies.source_redshift_table()}

  def _identity(self):
    psf = None if self.psf_image is None else self.psf_image.tobytes()
    return super()._identity() + (self.settings, psf, self.source_mag_range, self.band_names)

  def _common(self, draw):
    """The scene every class shares: (params, (z_lens, z_source, sigma_v, theta_E, centre))."""
    z_l, z_s, sigma, theta_e = _redshifts_and_lens(draw, self.tables)
    center = draw.uniform(-0.05, 0.05, (2,))
    params, q, angle = _main_lens(draw, theta_e, center)
    params['lens_light'], _ = galaxies.lens_light(draw, sigma, z_l, q, angle, center,
                                                  self.zero_points, self.band_names)
    offset = 0.6 * theta_e * jnp.sqrt(draw.unit())
    phi = draw.uniform(0.0, 2.0 * jnp.pi)
    src_center = center + offset * jnp.stack([jnp.cos(phi), jnp.sin(phi)])
    params['source'], _, _ = galaxies.source(draw, z_s, src_center, self.zero_points,
                                             self.band_names, self.source_mag_range, MAX_CLUMPS)
    half_width = 0.5 * self.num_pix * self.inst.pixel_scale
    count = jnp.floor(draw.uniform(0.0, MAX_NEIGHBOURS)).astype(jnp.int32)
    params['neighbours'] = _field_galaxies(draw, MAX_NEIGHBOURS, count, half_width,
                                           self.zero_points, self.band_names,
                                           (self.source_mag_range[0] - 1.0,
                                            self.source_mag_range[1]))
    seeing = draw.uniform(*self.seeing_range)
    params['psf_fwhm'] = jnp.asarray([b.psf_fwhm for b in self.bands], jnp.float32) * seeing
    params['deflection_scale'] = jnp.float32(1.0)
    return params, (z_l, z_s, sigma, theta_e, center)

  def stream_size(self):
    return 8 * (self.settings[2] + self.settings[2] // 2) + 160

  def scene(self, key, label):
    sigma_sub, m_hm, max_sub, (m_lo, m_hi), los_density = self.settings
    draw = priors.UniformStream(key, self.stream_size())
    params, (z_l, z_s, sigma, theta_e, center) = self._common(draw)
    is_cdm = label == recipes.DEEPLENSE_CLASSES.index('cdm')
    is_axion = label == recipes.DEEPLENSE_CLASSES.index('axion')
    subs, info = populations.subhalos(
        draw, z_lens=z_l, z_source=z_s, center=center, sigma_host=sigma, max_halos=max_sub,
        sigma_sub=sigma_sub, radius_arcsec=SUBHALO_RADIUS * theta_e, m_min=m_lo, m_max=m_hi,
        m_hm=m_hm, cosmo=galaxies.COSMO)
    subs['alpha_Rs'] = jnp.where(is_cdm, subs['alpha_Rs'], 0.0)
    params['subhalos'] = subs
    if los_density > 0:
      params['los'], _ = populations.line_of_sight(
          draw, z_source=z_s, max_halos=max_sub // 2, number_density=los_density,
          radius_arcsec=0.5 * self.num_pix * self.inst.pixel_scale, m_hm=m_hm,
          cosmo=galaxies.COSMO)
    main_mass = _einstein_mass(theta_e, z_l, z_s)
    vortex_mass = main_mass * draw.log_uniform(-2.0, -1.0)
    log_m = draw.uniform(*recipes.AXION_LOG10_MASS_RANGE)
    unit_theta = theta_e / jnp.sqrt(main_mass)   # point-mass theta_E of 1 Msun here
    params['line_mass'] = {
        'theta_e_total': jnp.where(is_axion, unit_theta * jnp.sqrt(vortex_mass), 0.0),
        'half_length': 0.03 * 10.0**(-22.0 - log_m), 'angle': draw.uniform(0.0, 2 * jnp.pi),
        'center_x': center[0], 'center_y': center[1]}
    sub_mass = jnp.where(is_cdm, info['mass'].sum(), jnp.where(is_axion, vortex_mass, 0.0))
    labels = {'label': label, 'axion_mass': jnp.where(is_axion, 10.0**log_m, 0.0),
              'n_subhalos': jnp.where(is_cdm, info['count'], 0),
              'sub_mass_fraction': sub_mass / main_mass, 'theta_e': theta_e}
    return params, labels

  def render(self, params):
    return render(params, self.bands, self.num_pix, self.supersampling, self.kernel_radius,
                  self.psf_image)

  def observe(self, key, clean, params):
    if not self.noise:
      return clean
    return clean + surveys.noise(key, clean, self.bands)


class RealisticLensFind(Realistic):
  """Base of `realistic_<survey>_lensfind` (classes non_lensed / lensed)."""
  class_names = recipes.LENSFIND_CLASSES

  def stream_size(self):
    return 256

  def scene(self, key, label):
    draw = priors.UniformStream(key, self.stream_size())
    params, (z_l, _, sigma, theta_e, center) = self._common(draw)
    is_lensed = label == recipes.LENSFIND_CLASSES.index('lensed')
    kind = jnp.floor(draw.uniform(0.0, len(NEGATIVE_KINDS))).astype(jnp.int32)
    kind = jnp.where(is_lensed, -1, kind)
    params['deflection_scale'] = jnp.where(is_lensed, 1.0, 0.0).astype(jnp.float32)
    params['source'] = dict(params['source'],
                            amp=params['source']['amp'] * is_lensed.astype(jnp.float32))
    # Negatives: 'alone' drops the neighbours; 'arcs' and 'merger' replace them.
    arcs = self._arc_contaminants(draw, center)
    merger = self._merger(draw, sigma, z_l, center)
    ring = self._ring(draw, center, theta_e)
    use_ring = draw.unit() < 0.5
    neighbours = params['neighbours']
    params['neighbours'] = jax.tree.map(
        lambda a, b, c: jnp.where(kind == 2, b, jnp.where(kind == 3, c, a)),
        neighbours, arcs, merger)
    keep = jnp.where((kind == 0) | ((kind == 2) & use_ring), 0.0, 1.0)
    params['neighbours']['amp'] = params['neighbours']['amp'] * keep
    ring['amp'] = ring['amp'] * ((kind == 2) & use_ring)
    params['ring'] = ring
    params['negative_kind'] = kind      # index into NEGATIVE_KINDS; -1 for lenses (not rendered)
    labels = {'label': label, 'axion_mass': jnp.float32(0.0), 'n_subhalos': jnp.int32(0),
              'sub_mass_fraction': jnp.float32(0.0),
              'theta_e': jnp.where(is_lensed, theta_e, 0.0)}
    return params, labels

  def _arc_contaminants(self, draw, center):
    """Thin blue galaxies at 0.8-2.5" from the lens, elongated tangentially."""
    num = MAX_NEIGHBOURS
    radius, phi = draw.uniform(0.8, 2.5, (num,)), draw.uniform(0.0, 2 * jnp.pi, (num,))
    e1, e2 = priors.ellipticity(draw.uniform(0.1, 0.3, (num,)), phi + 0.5 * jnp.pi)
    mags = draw.uniform(self.source_mag_range[0], self.source_mag_range[1] - 0.5, (num,))
    r_e, n = draw.uniform(0.2, 0.6, (num,)), draw.uniform(0.5, 1.5, (num,))
    colour = jnp.asarray(galaxies.colours(galaxies.STAR_FORMING_COLOURS, self.band_names))
    amp = light.amplitude_from_magnitude(mags[None] + colour[:, None], r_e, n,
                                                  jnp.asarray(self.zero_points)[:, None])
    count = 1 + jnp.floor(draw.uniform(0.0, num)).astype(jnp.int32)
    amp = amp * (jnp.arange(num) < count)[None]
    return galaxies.sersic_dict(amp, r_e, n, e1, e2, center[0] + radius * jnp.cos(phi),
                                 center[1] + radius * jnp.sin(phi))

  def _merger(self, draw, sigma, z_l, center):
    """A second elliptical 0.5-1.5" away, its dispersion 0.5-1 times the lens' one."""
    sep, phi = draw.uniform(0.5, 1.5), draw.uniform(0.0, 2 * jnp.pi)
    where = center + sep * jnp.stack([jnp.cos(phi), jnp.sin(phi)])
    companion, _ = galaxies.lens_light(draw, sigma * draw.uniform(0.5, 1.0), z_l,
                                       draw.uniform(0.5, 1.0), draw.uniform(0.0, jnp.pi),
                                       where, self.zero_points, self.band_names)
    pad = MAX_NEIGHBOURS - 2
    return {k: jnp.concatenate([v, jnp.zeros(v.shape[:-1] + (pad,), v.dtype)], axis=-1)
            for k, v in companion.items()}

  def _ring(self, draw, center, theta_e):
    """A ring galaxy-like annulus of radius 0.8-1.5 theta_E around the lens, blue."""
    mag = draw.uniform(self.source_mag_range[0], self.source_mag_range[1] - 0.5)
    radius, width = theta_e * draw.uniform(0.8, 1.5), draw.uniform(0.08, 0.2)
    colour = jnp.asarray(galaxies.colours(galaxies.STAR_FORMING_COLOURS, self.band_names))
    # Peak surface brightness from total flux ~ amp * 2 pi R w sqrt(2 pi).
    flux = light.magnitude_to_cps(mag + colour, jnp.asarray(self.zero_points))
    amp = flux / (2 * jnp.pi * radius * width * jnp.sqrt(2 * jnp.pi))
    e1, e2 = priors.ellipticity(draw.uniform(0.7, 1.0), draw.uniform(0.0, jnp.pi))
    return {'amp': amp, 'radius': radius, 'width': width, 'e1': e1, 'e2': e2,
            'center_x': center[0] + draw.uniform(-0.1, 0.1),
            'center_y': center[1] + draw.uniform(-0.1, 0.1)}


def _make(survey, base):
  suffix = '_lensfind' if base is RealisticLensFind else ''
  name = f'realistic_{survey}{suffix}'
  cls = type(''.join(p.title() for p in name.split('_')), (base,),
             {'name': name, 'survey': survey, '__doc__': f'{base.__doc__} Survey: {survey}.'})
  return name, cls


RECIPES = dict(_make(s, base) for s in surveys.SURVEYS for base in (Realistic, RealisticLensFind))
PIXEL_SCALES = {name: surveys.survey_bands(cls.survey)[0].pixel_scale
                for name, cls in RECIPES.items()}


def names() -> tuple:
  return tuple(RECIPES)


def valid_overrides(name) -> tuple:
  signature = inspect.signature(RECIPES[name].__init__)
  return tuple(p for p in signature.parameters if p != 'self')


def get(name: str, **overrides: Any) -> recipes.Recipe:
  """The realistic recipe `name` with keyword overrides; ValueError lists valid ones."""
  if name not in RECIPES:
    raise ValueError(f'Unknown realistic recipe {name!r}; valid recipes are {list(RECIPES)}.')
  unknown = sorted(set(overrides) - set(valid_overrides(name)))
  if unknown:
    raise ValueError(f'Unknown override(s) {unknown} for recipe {name!r}; valid overrides are '
                     f'{list(valid_overrides(name))}.')
  return RECIPES[name](**overrides)
