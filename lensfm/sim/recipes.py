"""Simulation recipes: priors + instrument + observation, sampled on device in one call.

    from lensfm.sim import recipes
    recipe = recipes.get('model_ii', num_pix=32, classes=('cdm',))
    out = recipe.sample(key, batch_size)   # pure; jit with batch_size static

`out` holds 'image' float32 [B, H, W, C] in raw recipe units (counts for model_i, flux
(counts/s per pixel) otherwise; model_iv is max-normalised like its released files) and
the labels of LABEL_KEYS, the same keys for every recipe (0 where not applicable):
  'label' int32 class index into recipe.class_names (classes drawn uniformly from
  `classes`), 'axion_mass' float32 eV, 'n_subhalos' int32, 'sub_mass_fraction' float32
  (substructure mass / main-halo mass), 'theta_e' float32 arcsec (the Einstein radius the
  image actually shows, i.e. after any reduced-deflection rescaling; 0 for unlensed scenes).

Determinism: sample(key, B) == observe(noise keys, render(sample_params(param key, B)))
with the key split of `Recipe.sample`; `render` is the noise-free lenstronomy-equivalent
model image that the tests compare to lenstronomy for fixed parameters.
"""
import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lensfm import errors
from lensfm.sim import cosmology
from lensfm.sim import instrument as instrument_lib
from lensfm.sim import light
from lensfm.sim import priors
from lensfm.sim import render as render_lib

LABEL_KEYS = ('label', 'axion_mass', 'n_subhalos', 'sub_mass_fraction', 'theta_e')
DEEPLENSE_CLASSES = ('no_sub', 'cdm', 'axion')
LENSFIND_CLASSES = ('non_lensed', 'lensed')

# DeepLense constants (deeplense/lens.py and the Model_* scripts).
MAIN_HALO_MASS = 1e12          # Msun
VORTEX_MASS = 3e10             # Msun, split evenly over render.VORTEX_POINTS point masses
CDM_SUBHALOS = 25
CDM_MASS_RANGE = (1e6, 1e10)   # Msun
CDM_SLOPE = -0.9               # dN/dm ~ m^-0.9 (the code's beta, not the docstring's -1.9)
CDM_RADIUS_RANGE = (0.25, 2.0)  # arcsec
AXION_LOG10_MASS_RANGE = (-24.0, -22.0)   # eV
SOURCE_CENTER_RANGE = 0.35     # arcsec, uniform in +- on each axis
Z_LENS, Z_SOURCE, Z_SOURCE_CONVENTION = 0.5, 1.0, 2.5


def _sersic(amp, r_sersic, n_sersic, e1, e2, center_x, center_y):
  """A Sersic light dict; amp [C, K], the rest [K] (arrays or numbers broadcast to K)."""
  amp = jnp.asarray(amp, jnp.float32)
  k = amp.shape[-1]
  geom = [jnp.broadcast_to(jnp.asarray(v, jnp.float32), (k,))
          for v in (r_sersic, n_sersic, e1, e2, center_x, center_y)]
  return dict(zip(light.SERSIC_KEYS, [amp] + geom))


def _sie(theta_e, e1=0.0, e2=0.0, center_x=0.0, center_y=0.0):
  as32 = lambda v: jnp.asarray(v, jnp.float32)
  return {'theta_e': as32(theta_e), 'e1': as32(e1), 'e2': as32(e2),
          'center_x': as32(center_x), 'center_y': as32(center_y)}


def _shear(gamma1, gamma2=0.0):
  return {'gamma1': jnp.asarray(gamma1, jnp.float32), 'gamma2': jnp.asarray(gamma2, jnp.float32)}


def _vortex(draw, unit_theta, vortex_mass=VORTEX_MASS):
  """DeepLense `make_vortex`: axion mass 10^U(-24,-22) eV; `vortex_mass` in 100
  equal point masses evenly on [-L, L] along a line at angle U(0, 2 pi) through (0, 0).
  Returns (vortex params, axion mass)."""
  log_m = draw.uniform(*AXION_LOG10_MASS_RANGE)
  # 0.06 / (2 m) * 1e-22 computed from log10(m), so no 1e-46-sized intermediates.
  half_length = 0.03 * 10.0**(-22.0 - log_m)
  angle = draw.uniform(0.0, 2.0 * jnp.pi)
  vortex = {'theta_e_total': jnp.float32(unit_theta * math.sqrt(vortex_mass)),
            'half_length': half_length, 'angle': angle,
            'center_x': jnp.float32(0.0), 'center_y': jnp.float32(0.0)}
  return vortex, 10.0**log_m


def _cdm_point_masses(draw, unit_theta, num=CDM_SUBHALOS, slope=CDM_SLOPE,
                      mass_range=CDM_MASS_RANGE, radius_range=CDM_RADIUS_RANGE):
  """DeepLense `make_old_cdm`: power-law masses, radius U(0.25, 2), angle U(0, 2 pi)."""
  masses = draw.power_law(mass_range[0], mass_range[1], slope, (num,))
  x, y = draw.polar_offset(radius_range[0], radius_range[1], (num,))
  return unit_theta * jnp.sqrt(masses), x, y, masses


def simapi_deflection_scale():
  """(D_LS/D_S)(z=1) / (D_LS/D_S)(z=2.5) for pyHalo's WMAP9 cosmology (~0.6343)."""
  return cosmology.reduced_deflection_scale_host(Z_LENS, Z_SOURCE, Z_SOURCE_CONVENTION,
                                                 cosmology.PYHALO_WMAP9)


class Recipe:
  """Base class. Subclasses set the class attributes and implement `scene` and `observe`."""

  name: str = ''
  class_names: tuple = ()
  label_keys: tuple = LABEL_KEYS
  num_bands: int = 1

  def __init__(self, *, num_pix, classes=None, noise=True, supersampling=1):
    if classes is None:
      classes = self.class_names
    classes = tuple(classes) if not isinstance(classes, str) else (classes,)
    unknown = [c for c in classes if c not in self.class_names]
    if unknown or not classes:
      raise ValueError(f'Recipe {self.name!r}: unknown classes {unknown}; valid classes are '
                       f'{list(self.class_names)}.')
    self.classes = classes
    self._class_indices = np.asarray([self.class_names.index(c) for c in classes], np.int32)
    self.num_pix = int(num_pix)
    self.noise = bool(noise)
    self.supersampling = int(supersampling)

  @property
  def image_shape(self):
    return (self.num_pix, self.num_pix, self.num_bands)

  @property
  def pixel_scale(self) -> float:
    """Arcsec per pixel of the images this recipe makes (its instrument's grid)."""
    return float(self.inst.pixel_scale)

  # --- to implement --------------------------------------------------------------------
  def scene(self, key, label) -> tuple[dict, dict]:
    """One image's parameters and labels (label: traced int32 class index)."""
    raise NotImplementedError

  def render(self, params) -> jax.Array:
    """Noise-free model image [H, W, C] of one scene (lenstronomy units: counts/s/pixel)."""
    raise NotImplementedError

  def observe(self, key, clean, params) -> jax.Array:
    """The recipe's observation of a noise-free image: noise, quirks, normalisation."""
    raise NotImplementedError

  # --- shared machinery ----------------------------------------------------------------
  def draw_labels(self, key, batch_size):
    """Class indices drawn uniformly from the enabled classes."""
    pick = jax.random.randint(key, (batch_size,), 0, len(self._class_indices))
    return jnp.asarray(self._class_indices)[pick]

  def sample_params(self, key, batch_size, labels=None):
    """Batched scene parameters and labels; `labels` [B] fixes the classes if given."""
    k_cls, k_scene = jax.random.split(key)
    if labels is None:
      labels = self.draw_labels(k_cls, batch_size)
    labels = jnp.asarray(labels, jnp.int32)
    return jax.vmap(self.scene)(jax.random.split(k_scene, batch_size), labels)

  def render_batch(self, params):
    return jax.vmap(self.render)(params)

  def sample(self, key, batch_size):
    """A batch {'image': [B, H, W, C] float32, **labels}; pure and jit-able."""
    params, labels, noise_keys = self.sample_scenes(key, batch_size)
    return self.observe_batch(noise_keys, self.render_batch(params), params, labels)

  def sample_scenes(self, key, batch_size):
    """`sample`'s scenes before rendering: (params, labels, noise keys [B])."""
    k_params, k_noise = jax.random.split(key)
    params, labels = self.sample_params(k_params, batch_size)
    return params, labels, jax.random.split(k_noise, batch_size)

  def observe_batch(self, noise_keys, clean, params, labels):
    """`sample`'s output from its scenes and their noise-free images [B, H, W, C]."""
    images = jax.vmap(self.observe)(noise_keys, clean, params)
    out = {'image': images.astype(jnp.float32)}
    out.update(_cast_labels(labels))
    return out

  def _identity(self):
    # Everything the traced program depends on; subclasses' extra settings live in inst.
    return (type(self), self.num_pix, self.classes, self.noise, self.supersampling,
            getattr(self, 'inst', None))

  def __hash__(self):
    return hash(self._identity())

  def __eq__(self, other):
    return isinstance(other, Recipe) and self._identity() == other._identity()

  def __repr__(self):
    return (f'{type(self).__name__}(name={self.name!r}, image_shape={self.image_shape}, '
            f'classes={self.classes}, noise={self.noise})')


def _cast_labels(labels):
  dtypes = {'label': jnp.int32, 'n_subhalos': jnp.int32}
  return {k: jnp.asarray(labels[k]).astype(dtypes.get(k, jnp.float32)) for k in LABEL_KEYS}


# =========================================================================================
# Models I-III: the published DeepLense single-band recipes.
# =========================================================================================

class DeepLenseRecipe(Recipe):
  """Shared scene of DeepLense Models I-III (deeplense/lens.py), one lens plane.

  Priors (fixed unless noted):
    main lens  SIE, M = 1e12 Msun -> theta_E via luminosity distances (DeepLense quirk,
               1.2815"), e1 = 0.1, e2 = 0, centre (0, 0); shear gamma1 = 0.05, gamma2 = 0.
    source     elliptical Sersic, R_sersic = 0.25", n = 1, e1 = -0.1, e2 = 0.1, centre
               U(-0.35, 0.35)" on each axis; brightness per model.
    no_sub     nothing else.
    cdm        25 point masses, m ~ m^-0.9 on [1e6, 1e10] Msun, radius U(0.25, 2.0)",
               angle U(0, 2 pi).
    axion      3e10 Msun in 100 equal point masses evenly spaced on [-L, L] along a line
               through (0, 0) at angle U(0, 2 pi); m_axion = 10^U(-24, -22) eV,
               L = 0.06 / (2 m) * 1e-22 arcsec.
  Fixed shapes: 25 point-mass slots (zero Einstein radius = empty) and one vortex whose
  Einstein radius is zero unless the class is axion.
  """
  class_names = DEEPLENSE_CLASSES
  instrument: instrument_lib.Instrument
  deflection_scale: float = 1.0

  def __init__(self, *, num_pix, classes=None, noise=True, supersampling=1):
    super().__init__(num_pix=num_pix, classes=classes, noise=noise, supersampling=supersampling)
    self.inst = self.instrument.replace(num_pix=self.num_pix, supersampling=self.supersampling)
    self.theta_e_main = cosmology.einstein_radius_deeplense_host(MAIN_HALO_MASS, Z_LENS, Z_SOURCE)
    self.unit_theta = cosmology.einstein_radius_deeplense_host(1.0, Z_LENS, Z_SOURCE)

  def source_amplitude(self):
    raise NotImplementedError

  def scene(self, key, label):
    draw = priors.UniformStream(key, 128)
    src_x, src_y = draw.uniform(-SOURCE_CENTER_RANGE, SOURCE_CENTER_RANGE, (2,))
    cdm_theta, cdm_x, cdm_y, cdm_masses = _cdm_point_masses(draw, self.unit_theta)
    vortex, axion_mass = _vortex(draw, self.unit_theta)
    is_cdm = label == DEEPLENSE_CLASSES.index('cdm')
    is_axion = label == DEEPLENSE_CLASSES.index('axion')
    vortex['theta_e_total'] = jnp.where(is_axion, vortex['theta_e_total'], 0.0)
    params = {
        'lens': _sie(self.theta_e_main, 0.1, 0.0),
        'shear': _shear(0.05, 0.0),
        'point_masses': {'theta_e': jnp.where(is_cdm, cdm_theta, 0.0), 'center_x': cdm_x,
                         'center_y': cdm_y},
        'vortex': vortex,
        'deflection_scale': jnp.float32(self.deflection_scale),
        'source': _sersic([[self.source_amplitude()]], 0.25, 1.0, -0.1, 0.1, src_x, src_y),
        'psf_sigma': jnp.full((1,), self.inst.psf_sigma, jnp.float32),
        'exposure': self.exposure(draw),
    }
    sub_mass = jnp.where(is_cdm, cdm_masses.sum(), jnp.where(is_axion, VORTEX_MASS, 0.0))
    labels = {
        'label': label,
        'axion_mass': jnp.where(is_axion, axion_mass, 0.0),
        'n_subhalos': jnp.where(is_cdm, CDM_SUBHALOS, 0),
        'sub_mass_fraction': sub_mass / MAIN_HALO_MASS,
        'theta_e': jnp.float32(self.theta_e_main * self.deflection_scale),
    }
    return params, labels

  def exposure(self, draw):
    del draw
    return jnp.float32(self.inst.total_exposure)

  def render(self, params):
    return render_lib.render(params, self.inst)


class ModelI(DeepLenseRecipe):
  """DeepLense Model I: 150x150 at 0.05"/px, Gaussian PSF FWHM 0.087" cut at 3 sigma.

  Source amp = 20 (lenstronomy 'amp', surface brightness at R_sersic). Observation
  (`DeepLens.simple_sim`): exposure 10^U(3, 3.5); stored image =
  Poisson(exposure * (model + N(0, sqrt(model/exposure)) + N(0, 0.01))), integer counts.
  noise=False returns the expected counts exposure * model instead.
  """
  name = 'model_i'
  instrument = instrument_lib.MODEL_I

  def __init__(self, *, num_pix=150, classes=None, noise=True, supersampling=1):
    super().__init__(num_pix=num_pix, classes=classes, noise=noise, supersampling=supersampling)

  def source_amplitude(self):
    return 20.0

  def exposure(self, draw):
    return draw.log_uniform(3.0, 3.5)

  def observe(self, key, clean, params):
    if not self.noise:
      return params['exposure'] * clean
    return instrument_lib.model_i_counts(key, clean, params['exposure'],
                                         self.inst.background_rms)


class _SimApiRecipe(DeepLenseRecipe):
  """Models II/III: rendered by lenstronomy's SimAPI as DeepLense did (`simple_sim_2`).

  Source magnitude 20 -> amp through the instrument's zero point. SimAPI ran in
  multi-plane mode with z_source_convention = 2.5 and the source at z = 1, so every
  deflection is the reduced deflection times (D_LS/D_S)(1.0) / (D_LS/D_S)(2.5) = 0.634
  (pyHalo's WMAP9 cosmology); 'theta_e' reports the effective 1.2815 * 0.634 = 0.813".
  Observation: the published code stores `image + image` (twice the noise-free model);
  that is the default (noise=False). noise=True instead returns model + lenstronomy
  noise_for_model (background + Gaussian Poisson) at the preset's exposure.
  """
  def __init__(self, *, num_pix=64, classes=None, noise=False, supersampling=1):
    super().__init__(num_pix=num_pix, classes=classes, noise=noise, supersampling=supersampling)
    self.deflection_scale = simapi_deflection_scale()
    self._source_amp = light.amplitude_from_magnitude_host(20.0, 0.25, 1.0, self.inst.zero_point)

  def source_amplitude(self):
    return self._source_amp

  def observe(self, key, clean, params):
    if not self.noise:
      return clean + clean   # The published "image + image" quirk.
    return clean + instrument_lib.gaussian_noise(key, clean, self.inst.background_noise,
                                                 params['exposure'])


class ModelII(_SimApiRecipe):
  __doc__ = ('DeepLense Model II: 64x64, lenstronomy Euclid VIS preset (0.101"/px, FWHM '
             '0.16", 4 x 565 s, sky 22.35, zero point 24).\n\n' + _SimApiRecipe.__doc__)
  name = 'model_ii'
  instrument = instrument_lib.EUCLID_VIS


class ModelIII(_SimApiRecipe):
  __doc__ = ('DeepLense Model III: 64x64, lenstronomy HST WFC3 F160W preset (0.08"/px, '
             'FWHM 0.08", 5400 s, sky 22.3, zero point 25.96).\n\n' + _SimApiRecipe.__doc__)
  name = 'model_iii'
  instrument = instrument_lib.HST_WFC3_F160W


# =========================================================================================
# Model IV: three bands with Euclid VIS settings, lens light, max-normalised.
# =========================================================================================

class ModelIV(Recipe):
  """DeepLense Model IV: 64x64x3, every band with Euclid VIS settings, clipped at 0 and
  divided by the max (over all bands) like the released files.

  Macro model as the Model IV scripts: SIE theta_E = 1.5 (reduced, z_s convention 2.5,
  so x0.634 as in Model II), e = 0; shear 0.05. Lens light two Sersics (R 0.4", n 2.3,
  e2 0.05 and R 1.5", n 1.2, e2 0.3) with magnitudes (17, 28) / (18, 28) / (19, 28) in the
  three bands (the script's colours only touch the first component). Source magnitudes 22 /
  19 / 18 (the script's r and i start from 20: kept). The scripts lens real Galaxy10 DECaLS
  spirals; here the source is a bulge (n=4, R U(0.03, 0.1)", q U(0.7, 1)) + disk (n=1,
  R U(0.15, 0.4)", q U(0.3, 1)) with bulge fraction U(0.1, 0.5), a common orientation
  U(0, pi) and centre U(-0.3, 0.3)". Substructure (the scripts use pyHalo realisations,
  not reproduced): cdm = Poisson(20) (<= 32) truncated NFW subhalos, M200 ~ m^-1.9 on
  [1e7, 1e10] Msun, c = 15 (M/1e8)^-0.1, r_trunc = 10 Rs, uniform in a 2.5" disc;
  axion = the Models I-III vortex. Noise: lenstronomy noise_for_model per band.
  """
  name = 'model_iv'
  class_names = DEEPLENSE_CLASSES
  num_bands = 3
  max_subhalos = 32
  lens_light_mags = ((17.0, 28.0), (18.0, 28.0), (19.0, 28.0))
  source_mags = (22.0, 19.0, 18.0)
  theta_e_reduced = 1.5

  def __init__(self, *, num_pix=64, classes=None, noise=True, supersampling=1):
    super().__init__(num_pix=num_pix, classes=classes, noise=noise, supersampling=supersampling)
    self.inst = instrument_lib.EUCLID_VIS.replace(num_pix=self.num_pix,
                                                  supersampling=self.supersampling)
    self.deflection_scale = simapi_deflection_scale()
    self.unit_theta = cosmology.einstein_radius_deeplense_host(1.0, Z_LENS, Z_SOURCE)
    self.main_mass = cosmology.mass_from_einstein_radius_deeplense_host(
        self.theta_e_reduced, Z_LENS, Z_SOURCE)
    zp = self.inst.zero_point
    amps = [[light.amplitude_from_magnitude_host(m, r, n, zp)
             for m, r, n in zip(mags, (0.4, 1.5), (2.3, 1.2))] for mags in self.lens_light_mags]
    self.lens_light = _sersic(amps, (0.4, 1.5), (2.3, 1.2), 0.0, (0.05, 0.3), 0.0, 0.0)

  def _tnfw_subhalos(self, draw):
    n = draw.poisson(20.0, self.max_subhalos)
    m200 = draw.power_law(1e7, 1e10, -1.9, (self.max_subhalos,))
    m200 = jnp.where(jnp.arange(self.max_subhalos) < n, m200, 0.0)
    conc = 15.0 * (jnp.maximum(m200, 1e7) / 1e8)**-0.1
    rs, alpha_rs = cosmology.nfw_physical_to_angle(
        jnp.maximum(m200, 1.0), conc, Z_LENS, Z_SOURCE_CONVENTION, cosmology.PYHALO_WMAP9)
    radius = 2.5 * jnp.sqrt(draw.unit((self.max_subhalos,)))
    angle = draw.uniform(0.0, 2.0 * jnp.pi, (self.max_subhalos,))
    tnfw = {'Rs': rs, 'alpha_Rs': jnp.where(m200 > 0, alpha_rs, 0.0), 'r_trunc': 10.0 * rs,
            'center_x': radius * jnp.cos(angle), 'center_y': radius * jnp.sin(angle)}
    return tnfw, n, m200.sum()

  def _source(self, draw):
    frac = draw.uniform(0.1, 0.5)
    r_bulge, r_disk = draw.uniform(0.03, 0.1), draw.uniform(0.15, 0.4)
    q_bulge, q_disk = draw.uniform(0.7, 1.0), draw.uniform(0.3, 1.0)
    phi = draw.uniform(0.0, jnp.pi)
    q = jnp.stack([q_bulge, q_disk])
    e = (1.0 - q) / (1.0 + q)
    cx, cy = draw.uniform(-0.3, 0.3, (2,))
    radii, indices = jnp.stack([r_bulge, r_disk]), jnp.array([4.0, 1.0])
    mags = jnp.asarray(self.source_mags)[:, None] - 2.5 * jnp.log10(jnp.stack([frac, 1 - frac]))
    amp = light.amplitude_from_magnitude(mags, radii, indices, self.inst.zero_point)
    return _sersic(amp, radii, indices, e * jnp.cos(2 * phi), e * jnp.sin(2 * phi), cx, cy)

  def scene(self, key, label):
    draw = priors.UniformStream(key, 192)
    tnfw, n_sub, cdm_mass = self._tnfw_subhalos(draw)
    vortex, axion_mass = _vortex(draw, self.unit_theta)
    is_cdm = label == DEEPLENSE_CLASSES.index('cdm')
    is_axion = label == DEEPLENSE_CLASSES.index('axion')
    tnfw['alpha_Rs'] = jnp.where(is_cdm, tnfw['alpha_Rs'], 0.0)
    vortex['theta_e_total'] = jnp.where(is_axion, vortex['theta_e_total'], 0.0)
    params = {
        'lens': _sie(self.theta_e_reduced),
        'shear': _shear(0.05),
        'vortex': vortex,
        'tnfw': tnfw,
        'deflection_scale': jnp.float32(self.deflection_scale),
        'source': self._source(draw),
        'lens_light': self.lens_light,
        'psf_sigma': jnp.full((3,), self.inst.psf_sigma, jnp.float32),
        'exposure': jnp.float32(self.inst.total_exposure),
    }
    sub_mass = jnp.where(is_cdm, cdm_mass, jnp.where(is_axion, VORTEX_MASS, 0.0))
    labels = {
        'label': label,
        'axion_mass': jnp.where(is_axion, axion_mass, 0.0),
        'n_subhalos': jnp.where(is_cdm, n_sub, 0),
        'sub_mass_fraction': sub_mass / self.main_mass,
        'theta_e': jnp.float32(self.theta_e_reduced * self.deflection_scale),
    }
    return params, labels

  def render(self, params):
    return render_lib.render(params, self.inst)

  def observe(self, key, clean, params):
    image = clean
    if self.noise:
      image = clean + instrument_lib.gaussian_noise(key, clean, self.inst.background_noise,
                                                    params['exposure'])
    image = jnp.maximum(image, 0.0)
    return image / jnp.maximum(image.max(), 1e-30)


# =========================================================================================
# Randomized: broad priors around the DeepLense recipe, for pre-training.
# =========================================================================================

class Randomized(Recipe):
  """DeepLense-like scenes with every nuisance parameter drawn, for robust pre-training.

  Grid: num_pix (alias image_size, default 64) at pixel_scale (default 0.101"/px).
  Priors (all independent, uniform unless noted):
    main lens   SIE theta_E U(0.8, 1.8)", axis ratio U(0.5, 1), angle U(0, pi), centre
                U(-0.1, 0.1)"; shear magnitude U(0, 0.1), angle U(0, pi).
    source      Sersic, magnitude U(19, 22) (zero point 24), R_sersic U(0.1, 0.6)",
                n U(0.5, 4), axis ratio U(0.5, 1), angle U(0, pi), centre U(-0.5, 0.5)".
    cdm         N ~ Poisson(lambda), lambda U(5, 50), at most 64 point masses; mass
                function slope U(-1.95, -0.9) on [1e6, 1e10] Msun; radius U(0.25, 2.0)",
                angle U(0, 2 pi). theta_E(m) = theta_E * sqrt(m / M_main), M_main from
                theta_E with the DeepLense conversion.
    axion       uniform line mass (the vortex's continuum limit) of 10^U(9.5, 11) Msun
                through the lens centre, angle U(0, 2 pi), m_axion = 10^U(-24, -22) eV,
                half-length 0.06 / (2 m) * 1e-22".
    instrument  Gaussian PSF FWHM U(0.08, 0.25)" (cut at 5 sigma); Euclid-VIS-like noise
                (read 4.2 e-, sky 22.35, 4 exposures) with total exposure 10^U(2.7, 4) s.
  noise=False returns the noise-free model.
  """
  name = 'randomized'
  class_names = DEEPLENSE_CLASSES
  max_subhalos = 64
  psf_fwhm_range = (0.08, 0.25)

  def __init__(self, *, num_pix=64, image_size=None, pixel_scale=0.101, classes=None,
               noise=True, supersampling=1):
    if image_size is not None:
      num_pix = image_size
    super().__init__(num_pix=num_pix, classes=classes, noise=noise, supersampling=supersampling)
    self.inst = instrument_lib.EUCLID_VIS.replace(
        name='randomized', num_pix=self.num_pix, pixel_scale=float(pixel_scale),
        supersampling=self.supersampling)
    self.unit_theta = cosmology.einstein_radius_deeplense_host(1.0, Z_LENS, Z_SOURCE)

  def scene(self, key, label):
    draw = priors.UniformStream(key, 4 * self.max_subhalos + 32)
    u = draw.uniform
    theta_e = u(0.8, 1.8)
    e1, e2 = draw.ellipticity(0.5, 1.0)
    gamma, gamma_angle = u(0.0, 0.1), u(0.0, jnp.pi)
    main_mass = (theta_e / self.unit_theta)**2
    # CDM point masses.
    rate = u(5.0, 50.0)
    n_sub = draw.poisson(rate, self.max_subhalos)
    slope = u(-1.95, -0.9)
    masses = draw.power_law(1e6, 1e10, slope, (self.max_subhalos,))
    masses = jnp.where(jnp.arange(self.max_subhalos) < n_sub, masses, 0.0)
    sub_x, sub_y = draw.polar_offset(0.25, 2.0, (self.max_subhalos,))
    # Vortex as a uniform line mass.
    vortex_mass = draw.log_uniform(9.5, 11.0)
    log_m = u(*AXION_LOG10_MASS_RANGE)
    vortex_angle = u(0.0, 2.0 * jnp.pi)
    is_cdm = label == DEEPLENSE_CLASSES.index('cdm')
    is_axion = label == DEEPLENSE_CLASSES.index('axion')
    lens_cx, lens_cy = u(-0.1, 0.1), u(-0.1, 0.1)
    # Source.
    magnitude = u(19.0, 22.0)
    r_sersic, n_sersic = u(0.1, 0.6), u(0.5, 4.0)
    src_e1, src_e2 = draw.ellipticity(0.5, 1.0)
    src_x, src_y = u(-0.5, 0.5), u(-0.5, 0.5)
    amp = light.amplitude_from_magnitude(magnitude, r_sersic, n_sersic, self.inst.zero_point)
    fwhm = u(*self.psf_fwhm_range)
    params = {
        'lens': _sie(theta_e, e1, e2, lens_cx, lens_cy),
        'shear': _shear(gamma * jnp.cos(2 * gamma_angle), gamma * jnp.sin(2 * gamma_angle)),
        'point_masses': {'theta_e': jnp.where(is_cdm, self.unit_theta * jnp.sqrt(masses), 0.0),
                         'center_x': lens_cx + sub_x, 'center_y': lens_cy + sub_y},
        'line_mass': {
            'theta_e_total': jnp.where(is_axion, self.unit_theta * jnp.sqrt(vortex_mass), 0.0),
            'half_length': 0.03 * 10.0**(-22.0 - log_m), 'angle': vortex_angle,
            'center_x': lens_cx, 'center_y': lens_cy},
        'deflection_scale': jnp.float32(1.0),
        'source': _sersic(amp[None, None], r_sersic, n_sersic, src_e1, src_e2, src_x, src_y),
        'psf_sigma': (fwhm * instrument_lib.FWHM_TO_SIGMA)[None],
        'exposure': draw.log_uniform(2.7, 4.0),
    }
    sub_mass = jnp.where(is_cdm, masses.sum(), jnp.where(is_axion, vortex_mass, 0.0))
    labels = {
        'label': label,
        'axion_mass': jnp.where(is_axion, 10.0**log_m, 0.0),
        'n_subhalos': jnp.where(is_cdm, n_sub, 0),
        'sub_mass_fraction': sub_mass / main_mass,
        'theta_e': theta_e,
    }
    return params, labels

  def render(self, params):
    return render_lib.render(params, self.inst,
                             max_psf_sigma=self.psf_fwhm_range[1] * instrument_lib.FWHM_TO_SIGMA)

  def observe(self, key, clean, params):
    if not self.noise:
      return clean
    exposure = params['exposure']
    sky = self.inst.sky_cps_per_arcsec2 * self.inst.pixel_scale**2
    # lenstronomy bkg_noise with the total exposure split over num_exposures reads.
    read_var = self.inst.num_exposures * self.inst.read_noise**2
    background = jnp.sqrt(read_var + exposure * sky) / exposure
    return clean + instrument_lib.gaussian_noise(key, clean, background, exposure)


# =========================================================================================
# Lens finding: lensed vs. non-lensed scenes.
# =========================================================================================

class LensFind(Recipe):
  """Binary lens finding at Euclid VIS settings (64x64); label 1 = lensed.

  Every scene has a lens galaxy: Sersic light, magnitude U(18, 21), R_sersic U(0.3, 1.0)",
  n U(2, 5), axis ratio U(0.6, 1), angle U(0, pi), centre U(-0.1, 0.1)".
    lensed      SIE theta_E U(0.8, 2.0)" (axis ratio U(0.5, 1)), shear U(0, 0.1) and a
                Sersic source (magnitude U(20, 23), R U(0.1, 0.5)", n U(0.5, 3), axis
                ratio U(0.5, 1)) within U(-0.3, 0.3) theta_E of the lens centre.
    non_lensed  half the scenes have no source; the other half the same source, not
                lensed (deflection 0), anywhere in U(-2.5, 2.5)".
  Noise: lenstronomy noise_for_model at the Euclid VIS preset (noise=False: none).
  """
  name = 'lensfind'
  class_names = LENSFIND_CLASSES

  def __init__(self, *, num_pix=64, classes=None, noise=True, supersampling=1):
    super().__init__(num_pix=num_pix, classes=classes, noise=noise, supersampling=supersampling)
    self.inst = instrument_lib.EUCLID_VIS.replace(num_pix=self.num_pix,
                                                  supersampling=self.supersampling)

  def scene(self, key, label):
    draw = priors.UniformStream(key, 32)
    u = draw.uniform
    zp = self.inst.zero_point
    is_lensed = label == LENSFIND_CLASSES.index('lensed')
    lens_cx, lens_cy = u(-0.1, 0.1), u(-0.1, 0.1)
    ll_mag, ll_r, ll_n = u(18.0, 21.0), u(0.3, 1.0), u(2.0, 5.0)
    ll_e1, ll_e2 = draw.ellipticity(0.6, 1.0)
    theta_e = u(0.8, 2.0)
    e1, e2 = draw.ellipticity(0.5, 1.0)
    gamma, gamma_angle = u(0.0, 0.1), u(0.0, jnp.pi)
    src_mag, src_r, src_n = u(20.0, 23.0), u(0.1, 0.5), u(0.5, 3.0)
    src_e1, src_e2 = draw.ellipticity(0.5, 1.0)
    lensed_offset = theta_e * u(-0.3, 0.3, (2,))
    unlensed_pos = u(-2.5, 2.5, (2,))
    has_source = is_lensed | (draw.unit() < 0.5)
    src_pos = jnp.where(is_lensed, jnp.stack([lens_cx, lens_cy]) + lensed_offset, unlensed_pos)
    src_amp = jnp.where(has_source, light.amplitude_from_magnitude(src_mag, src_r, src_n, zp), 0.0)
    params = {
        'lens': _sie(theta_e, e1, e2, lens_cx, lens_cy),
        'shear': _shear(gamma * jnp.cos(2 * gamma_angle), gamma * jnp.sin(2 * gamma_angle)),
        'deflection_scale': jnp.where(is_lensed, 1.0, 0.0).astype(jnp.float32),
        'source': _sersic(src_amp[None, None], src_r, src_n, src_e1, src_e2, src_pos[0],
                          src_pos[1]),
        'lens_light': _sersic(light.amplitude_from_magnitude(ll_mag, ll_r, ll_n, zp)[None, None],
                              ll_r, ll_n, ll_e1, ll_e2, lens_cx, lens_cy),
        'psf_sigma': jnp.full((1,), self.inst.psf_sigma, jnp.float32),
        'exposure': jnp.float32(self.inst.total_exposure),
    }
    labels = {'label': label, 'axion_mass': jnp.float32(0.0), 'n_subhalos': jnp.int32(0),
              'sub_mass_fraction': jnp.float32(0.0),
              'theta_e': jnp.where(is_lensed, theta_e, 0.0)}
    return params, labels

  def render(self, params):
    return render_lib.render(params, self.inst)

  def observe(self, key, clean, params):
    if not self.noise:
      return clean
    return clean + instrument_lib.gaussian_noise(key, clean, self.inst.background_noise,
                                                 params['exposure'])


# =========================================================================================
# Registry.
# =========================================================================================

RECIPES = {cls.name: cls for cls in (ModelI, ModelII, ModelIII, ModelIV, Randomized, LensFind)}

# Default arcsec/pixel of each recipe (`Recipe.pixel_scale`), readable without building
# one (configs use it to declare their model grid).
PIXEL_SCALES = {
    'model_i': instrument_lib.MODEL_I.pixel_scale,
    'model_ii': instrument_lib.EUCLID_VIS.pixel_scale,
    'model_iii': instrument_lib.HST_WFC3_F160W.pixel_scale,
    'model_iv': instrument_lib.EUCLID_VIS.pixel_scale,
    'randomized': instrument_lib.EUCLID_VIS.pixel_scale,
    'lensfind': instrument_lib.EUCLID_VIS.pixel_scale,
}


def names() -> tuple:
  return tuple(RECIPES)


def valid_overrides(name) -> tuple:
  """The keyword overrides `get(name, ...)` accepts."""
  signature = inspect.signature(RECIPES[name].__init__)
  return tuple(p for p in signature.parameters if p != 'self')


def get(name: str, **overrides: Any) -> Recipe:
  """The recipe `name` with keyword overrides (e.g. num_pix=32, classes=('cdm',)).

  Raises errors.UserError (a ValueError) naming an unknown recipe or override and listing
  the valid ones.
  """
  if name not in RECIPES:
    raise errors.UserError(f'Unknown simulation recipe {name!r}; valid recipes are '
                           f'{list(RECIPES)}.' + errors.did_you_mean(name, RECIPES))
  valid = valid_overrides(name)
  unknown = sorted(set(overrides) - set(valid))
  if unknown:
    raise ValueError(f'Unknown override(s) {unknown} for recipe {name!r}; valid overrides are '
                     f'{list(valid)}.')
  return RECIPES[name](**overrides)


__all__ = ['LABEL_KEYS', 'Recipe', 'RECIPES', 'get', 'names', 'valid_overrides']
