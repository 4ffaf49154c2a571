"""Same lens, another observation: one mass model seen by several instruments.

    from lensfm.sim import same_lens
    sim = same_lens.SameLens(field_of_view=4.848)
    out = sim.sample(key, batch_size, num_views=2)   # pure; jit with sizes static

For every example ONE mass model is drawn (main lens, shear, and CDM subhalos or an
axion vortex or nothing), then `num_views` independent observations of it, each with
its own
  source       Sersic: magnitude, position, size, index, ellipticity;
  instrument   a family (Model I, II, III-like cameras or a randomized camera), its
               pixel scale, Gaussian PSF, exposure and noise (or none: the released
               Model II/III files are noise-free);
  orientation  the sky rotated by U(0, 2 pi) on the detector, plus a pointing offset of
               up to half a native pixel (rendered rotated, never resampled).
So a pair shares exactly the dark matter, and differs in everything a representation
that transfers across instruments should ignore.

Rendering of one view (all shapes static; the pixel scale, PSF and rotation traced):
  surface brightness on a fine grid (`fine_scale`, covering the field of view plus a
  margin) -> PSF -> integrated over the instrument's pixels (exact area sums of the fine
  pixels, `pixelate`) on a `native_pixels`-wide detector at the view's pixel scale ->
  detector noise. The caller maps the native image onto its model grid.

out (batch axis first):
  'native'       float32 [B, V, N, N, 1]: the observations (counts/s per native pixel).
  'pixel_scale'  float32 [B, V]: arcsec per native pixel of each view.
  'label'        int32 [B]: index into DEEPLENSE_CLASSES (no_sub, cdm, axion).
  'latents'      float32 [B, V, K], 'latent_mask' bool [B, V, K]: LATENTS of each view,
                 standardised with `LATENT_STATS` (mass-model entries equal across views).
  'family'       int32 [B, V]: index into the enabled families.
Mass-model latents are rotation invariant (magnitudes, not components), so they are the
same for every view of a lens.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lensfm import errors
from lensfm.sim import cosmology
from lensfm.sim import instrument as instrument_lib
from lensfm.sim import light
from lensfm.sim import priors
from lensfm.sim import profiles
from lensfm.sim import recipes

CLASSES = recipes.DEEPLENSE_CLASSES
MAX_SUBHALOS = 64
MASS_UNIFORMS = 4 * MAX_SUBHALOS + 16   # Uniforms one mass model uses (at most).
VIEW_UNIFORMS = 24                      # ... and one observation.
# Einstein radius (arcsec) of 1 Msun with DeepLense's conversion: theta(m) = UNIT * sqrt(m).
UNIT_THETA = cosmology.einstein_radius_deeplense_host(1.0, recipes.Z_LENS, recipes.Z_SOURCE)


@dataclasses.dataclass(frozen=True)
class Family:
  """An instrument family: a camera and the ranges its observations are drawn from.

  Background rms per pixel (counts/s) = sqrt(read_var / t^2 + sky / t + floor^2), with
  read_var = exposures * read_noise^2 and sky the sky counts/s per pixel; the source
  photon noise is Gaussian-approximated Poisson at exposure t.
  """
  name: str
  pixel_scale: tuple[float, float]     # arcsec / px
  psf_fwhm: tuple[float, float]        # arcsec
  zero_point: float                    # mag giving 1 count/s
  log10_exposure: tuple[float, float]  # total exposure, s
  read_var: float = 0.0                # e-^2 summed over the exposures
  sky_mag: float = 99.0                # mag / arcsec^2 (99: none)
  background_floor: float = 0.0        # counts/s per pixel


def _model_i_zero_point():
  """Zero point at which magnitude 20 gives Model I's amp = 20 (R = 0.25", n = 1)."""
  with jax.ensure_compile_time_eval():
    unit = light.amplitude_from_magnitude_host(20.0, 0.25, 1.0, 0.0)
  return 2.5 * math.log10(20.0 / unit)


_EUCLID, _HST = instrument_lib.EUCLID_VIS, instrument_lib.HST_WFC3_F160W
FAMILIES = {
    'model_i': Family('model_i', (0.05, 0.05), (0.087, 0.087), _model_i_zero_point(),
                      (3.0, 3.5), background_floor=0.01),
    'model_ii': Family('model_ii', (0.101, 0.101), (0.16, 0.16), _EUCLID.zero_point,
                       (math.log10(_EUCLID.total_exposure) - 0.5,
                        math.log10(_EUCLID.total_exposure) + 0.3),
                       _EUCLID.num_exposures * _EUCLID.read_noise**2, _EUCLID.sky_brightness),
    'model_iii': Family('model_iii', (0.08, 0.08), (0.08, 0.08), _HST.zero_point,
                        (math.log10(_HST.total_exposure) - 0.5,
                         math.log10(_HST.total_exposure) + 0.3),
                        _HST.num_exposures * _HST.read_noise**2, _HST.sky_brightness),
    'randomized': Family('randomized', (0.05, 0.15), (0.08, 0.25), _EUCLID.zero_point,
                         (2.7, 4.0), _EUCLID.num_exposures * _EUCLID.read_noise**2,
                         _EUCLID.sky_brightness),
}
DEFAULT_FAMILIES = tuple(FAMILIES)

# name: (where it applies, description). Order = the latent vector's order.
LATENTS = (
    ('n_subhalos', 'number of CDM subhalos (0 unless cdm)'),
    ('sub_mass_fraction', 'substructure / main-halo mass, x100 (0 for no_sub)'),
    ('log10_sub_mass_fraction', 'its log10 (cdm and axion only)'),
    ('log10_vortex_mass', 'vortex mass, log10 Msun (axion only)'),
    ('log10_vortex_length', 'vortex half-length, log10 arcsec (axion only)'),
    ('theta_e', 'Einstein radius, arcsec'),
    ('lens_ellipticity', '|e| of the main lens'),
    ('shear', '|gamma| of the external shear'),
    ('source_offset', 'source distance from the lens centre, arcsec (per view)'),
    ('source_log10_radius', 'log10 R_sersic / arcsec (per view)'),
    ('source_index', 'Sersic index (per view)'),
    ('source_ellipticity', '|e| of the source (per view)'),
)
LATENT_NAMES = tuple(name for name, _ in LATENTS)
MASS_LATENTS = LATENT_NAMES[:8]


@dataclasses.dataclass(frozen=True)
class SameLens:
  """Mass-model and observation priors, and the renderer; hashable (a static jit arg).

  field_of_view: side (arcsec) the caller's model grid sees; the fine grid covers it
    plus `margin` native pixels of the coarsest family on each side.
  families: names from FAMILIES, drawn uniformly per view.
  classes: drawn uniformly per lens.
  clean_fraction: probability that a view has no noise at all.
  """
  field_of_view: float
  families: tuple = DEFAULT_FAMILIES
  classes: tuple = CLASSES
  clean_fraction: float = 0.25
  fine_scale: float = 0.05
  margin: int = 2
  psf_truncation: float = 4.0

  def __post_init__(self):
    unknown = [f for f in self.families if f not in FAMILIES]
    if unknown or not self.families:
      raise errors.UserError(f'same_lens families {list(self.families)}: unknown {unknown}; '
                       f'valid: {list(FAMILIES)}.')
    bad = [c for c in self.classes if c not in CLASSES]
    if bad or not self.classes:
      raise errors.UserError(f'same_lens classes {list(self.classes)}: unknown {bad}; valid: '
                       f'{list(CLASSES)}.')

  # --- static geometry ------------------------------------------------------------------
  def _families(self):
    return [FAMILIES[f] for f in self.families]

  @property
  def min_pixel_scale(self):
    return min(f.pixel_scale[0] for f in self._families())

  @property
  def max_pixel_scale(self):
    return max(f.pixel_scale[1] for f in self._families())

  @property
  def native_pixels(self) -> int:
    """Detector side: the field of view at the finest pixel scale, plus the margin."""
    return int(math.ceil(self.field_of_view / self.min_pixel_scale)) + 2 * self.margin

  @property
  def fine_pixels(self) -> int:
    extent = self.field_of_view + 2 * self.margin * self.max_pixel_scale
    return int(math.ceil(extent / self.fine_scale))

  def _family_table(self):
    """[F, 10] per-family constants, gathered by a traced family index."""
    rows = []
    for f in self._families():
      sky = 10.0**(-(f.sky_mag - f.zero_point) / 2.5) if f.sky_mag < 90 else 0.0
      rows.append([f.pixel_scale[0], f.pixel_scale[1], f.psf_fwhm[0], f.psf_fwhm[1],
                   f.zero_point, f.log10_exposure[0], f.log10_exposure[1], f.read_var, sky,
                   f.background_floor])
    return jnp.asarray(rows, jnp.float32)

  # --- priors ---------------------------------------------------------------------------
  def sample_mass(self, draw, label):
    """One mass model (render.py's parameter layout) and its latents, for class `label`,
    from a UniformStream."""
    u = draw.uniform
    unit_theta = UNIT_THETA
    theta_e = u(0.6, 1.8)
    q, phi = u(0.5, 1.0), u(0.0, jnp.pi)
    e1, e2 = priors.ellipticity(q, phi)
    gamma, gamma_angle = u(0.0, 0.1), u(0.0, jnp.pi)
    lens_cx, lens_cy = u(-0.1, 0.1), u(-0.1, 0.1)
    main_mass = (theta_e / unit_theta)**2
    n_sub = draw.poisson(u(5.0, 50.0), MAX_SUBHALOS)
    masses = draw.power_law(1e6, 1e10, u(-1.95, -0.9), (MAX_SUBHALOS,))
    masses = jnp.where(jnp.arange(MAX_SUBHALOS) < n_sub, masses, 0.0)
    sub_x, sub_y = draw.polar_offset(0.25, 2.0, (MAX_SUBHALOS,))
    log10_vortex_mass = u(9.5, 11.0)
    log10_axion = u(*recipes.AXION_LOG10_MASS_RANGE)
    half_length = 0.03 * 10.0**(-22.0 - log10_axion)
    vortex_angle = u(0.0, 2.0 * jnp.pi)
    is_cdm = label == CLASSES.index('cdm')
    is_axion = label == CLASSES.index('axion')
    mass = {
        'lens': {'theta_e': theta_e, 'e1': e1, 'e2': e2, 'center_x': lens_cx,
                 'center_y': lens_cy},
        'shear': {'gamma1': gamma * jnp.cos(2 * gamma_angle),
                  'gamma2': gamma * jnp.sin(2 * gamma_angle)},
        'point_masses': {'theta_e': jnp.where(is_cdm, unit_theta * jnp.sqrt(masses), 0.0),
                         'center_x': lens_cx + sub_x, 'center_y': lens_cy + sub_y},
        'line_mass': {'theta_e_total': jnp.where(
            is_axion, unit_theta * jnp.sqrt(10.0**log10_vortex_mass), 0.0),
                      'half_length': half_length, 'angle': vortex_angle,
                      'center_x': lens_cx, 'center_y': lens_cy},
    }
    sub_mass = jnp.where(is_cdm, masses.sum(), jnp.where(is_axion, 10.0**log10_vortex_mass, 0.))
    fraction = sub_mass / main_mass
    n_sub = jnp.where(is_cdm, n_sub, 0)
    has_sub = is_cdm | is_axion
    latents = {
        'n_subhalos': (n_sub.astype(jnp.float32), True),
        'sub_mass_fraction': (100.0 * fraction, True),
        'log10_sub_mass_fraction': (jnp.log10(jnp.maximum(fraction, 1e-12)),
                                    has_sub & (fraction > 0)),
        'log10_vortex_mass': (log10_vortex_mass, is_axion),
        'log10_vortex_length': (jnp.log10(half_length), is_axion),
        'theta_e': (theta_e, True),
        'lens_ellipticity': ((1 - q) / (1 + q), True),
        'shear': (gamma, True),
    }
    return mass, latents, {'axion_mass': jnp.where(is_axion, 10.0**log10_axion, 0.0),
                           'n_subhalos': n_sub, 'sub_mass_fraction': fraction,
                           'theta_e': theta_e}

  def sample_observation(self, draw):
    """One observation's source, instrument and orientation, from a UniformStream."""
    u = draw.unit
    family = jnp.minimum(jnp.floor(u() * len(self.families)).astype(jnp.int32),
                         len(self.families) - 1)
    row = self._family_table()[family]
    lerp = lambda lo, hi, v: lo + (hi - lo) * v
    pixel_scale = lerp(row[0], row[1], u())
    fwhm = lerp(row[2], row[3], u())
    exposure = 10.0**lerp(row[5], row[6], u())
    clean = u() < self.clean_fraction
    magnitude = draw.uniform(19.5, 22.5)
    r_sersic = draw.log_uniform(math.log10(0.1), math.log10(0.6))
    n_sersic = draw.uniform(0.5, 4.0)
    q, phi = draw.uniform(0.5, 1.0), draw.uniform(0.0, jnp.pi)
    s_e1, s_e2 = priors.ellipticity(q, phi)
    offset_r = 0.5 * jnp.sqrt(u())  # Uniform in a 0.5" disc around the lens centre.
    offset_angle = draw.uniform(0.0, 2.0 * jnp.pi)
    rotation = draw.uniform(0.0, 2.0 * jnp.pi)
    pointing = draw.uniform(-0.5, 0.5, (2,)) * pixel_scale
    amp = light.amplitude_from_magnitude(magnitude, r_sersic, n_sersic, row[4])
    return {
        'family': family, 'pixel_scale': pixel_scale,
        'psf_sigma': fwhm * instrument_lib.FWHM_TO_SIGMA,
        'exposure': exposure, 'clean': clean, 'read_var': row[7], 'sky': row[8],
        'floor': row[9], 'rotation': rotation, 'pointing': pointing,
        'source': {'amp': amp, 'R_sersic': r_sersic, 'n_sersic': n_sersic, 'e1': s_e1,
                   'e2': s_e2, 'offset_x': offset_r * jnp.cos(offset_angle),
                   'offset_y': offset_r * jnp.sin(offset_angle)},
        'latents': {'source_offset': (offset_r, True),
                    'source_log10_radius': (jnp.log10(r_sersic), True),
                    'source_index': (n_sersic, True),
                    'source_ellipticity': ((1 - q) / (1 + q), True)},
    }

  # --- rendering ------------------------------------------------------------------------
  def render(self, normal, mass, obs):
    """The native observation [N, N, 1] of `mass` under `obs` (counts/s per pixel);
    normal: standard normal draws [2, N, N, 1] for the noise."""
    x, y = instrument_lib.pixel_grid(self.fine_pixels, self.fine_scale, dtype=np.float32)
    cos, sin = jnp.cos(obs['rotation']), jnp.sin(obs['rotation'])
    # Detector -> sky: rotate, then point; every component of the scene turns together.
    sky_x = cos * x - sin * y + obs['pointing'][0]
    sky_y = sin * x + cos * y + obs['pointing'][1]
    params = dict(mass, deflection_scale=jnp.float32(1.0))
    alpha_x, alpha_y = render_deflection(params, sky_x, sky_y)
    src = obs['source']
    lens = mass['lens']
    brightness = light.sersic_ellipse(
        sky_x - alpha_x, sky_y - alpha_y, src['amp'], src['R_sersic'], src['n_sersic'],
        src['e1'], src['e2'], lens['center_x'] + src['offset_x'],
        lens['center_y'] + src['offset_y'])
    fine = (brightness * self.fine_scale**2)[..., None]
    max_sigma = max(f.psf_fwhm[1] for f in self._families()) * instrument_lib.FWHM_TO_SIGMA
    radius = max(instrument_lib.gaussian_radius_pixels(max_sigma / self.fine_scale,
                                                       self.psf_truncation), 1)
    fine = instrument_lib.convolve_gaussian(fine, obs['psf_sigma'] / self.fine_scale,
                                            self.psf_truncation, radius)
    native = pixelate(fine, self.fine_scale, self.native_pixels, obs['pixel_scale'])
    return native + self.noise(normal, native, obs)

  def noise(self, normal, image, obs):
    t = obs['exposure']
    sky = obs['sky'] * obs['pixel_scale']**2
    background = jnp.sqrt(obs['read_var'] / t**2 + sky / t + obs['floor']**2)
    # lenstronomy noise_for_model: background + Gaussian-approximated photon noise.
    photon = jnp.sqrt(jnp.maximum(image * t, 0.0)) / t
    return jnp.where(obs['clean'], 0.0, normal[0] * background + normal[1] * photon)

  # --- the batch ------------------------------------------------------------------------
  def sample_example(self, key, num_views: int, label=None):
    """One lens and `num_views` observations of it (see the module docstring).

    Two random calls per example (uniforms, normals): each call site costs XLA compile
    time on CPU (see priors.py).
    """
    k_u, k_normal = jax.random.split(key)
    uniforms = jax.random.uniform(k_u, (1 + MASS_UNIFORMS + num_views * VIEW_UNIFORMS,))
    draw = priors.UniformStream.from_uniforms(uniforms[:1 + MASS_UNIFORMS])
    if label is None:
      allowed = jnp.asarray([CLASSES.index(c) for c in self.classes], jnp.int32)
      pick = jnp.floor(draw.unit() * len(self.classes)).astype(jnp.int32)
      label = allowed[jnp.minimum(pick, len(self.classes) - 1)]
    else:
      draw.unit()
    mass, mass_latents, physical = self.sample_mass(draw, label)
    n = self.native_pixels
    normals = jax.random.normal(k_normal, (num_views, 2, n, n, 1), jnp.float32)

    def one_view(view_uniforms, normal):
      obs = self.sample_observation(priors.UniformStream.from_uniforms(view_uniforms))
      latents = {**mass_latents, **obs['latents']}
      values = jnp.stack([jnp.asarray(latents[k][0], jnp.float32) for k in LATENT_NAMES])
      valid = jnp.stack([jnp.broadcast_to(jnp.asarray(latents[k][1]), ())
                         for k in LATENT_NAMES])
      return (self.render(normal, mass, obs), obs['pixel_scale'], obs['family'], values,
              valid)

    # vmapped, not unrolled: one traced renderer whatever num_views (compile time).
    images, scales, families, values, valid = jax.vmap(one_view)(
        uniforms[1 + MASS_UNIFORMS:].reshape(num_views, VIEW_UNIFORMS), normals)
    mean, std = (jnp.asarray(v, jnp.float32) for v in zip(*[LATENT_STATS[k]
                                                            for k in LATENT_NAMES]))
    return {'native': images, 'pixel_scale': scales,
            'family': families, 'label': jnp.asarray(label, jnp.int32),
            'latents': jnp.where(valid, (values - mean) / std, 0.0), 'latent_mask': valid,
            **{k: jnp.asarray(val) for k, val in physical.items()}}

  def sample(self, key, batch_size: int, num_views: int = 2):
    return jax.vmap(lambda k: self.sample_example(k, num_views))(
        jax.random.split(key, batch_size))


def render_deflection(params, x, y):
  """Deflection of the scene's SIE + shear + point masses + line mass at x, y."""
  lens = params['lens']
  ax, ay = profiles.sie(x, y, lens['theta_e'], lens['e1'], lens['e2'], lens['center_x'],
                        lens['center_y'])
  sx, sy = profiles.external_shear(x, y, params['shear']['gamma1'], params['shear']['gamma2'])
  pm = params['point_masses']
  px, py = profiles.point_masses(x, y, pm['theta_e'], pm['center_x'], pm['center_y'])
  lm = params['line_mass']
  lx, ly = profiles.uniform_line_mass(x, y, lm['theta_e_total'], lm['half_length'],
                                      lm['angle'], lm['center_x'], lm['center_y'])
  return ax + sx + px + lx, ay + sy + py + ly


def _overlaps(edges, num_cells):
  """[len(edges) - 1, num_cells]: length of [edges[a], edges[a+1]] inside cell [i, i+1]."""
  cells = jnp.arange(num_cells, dtype=jnp.float32)
  lo = jnp.maximum(edges[:-1, None], cells[None, :])
  hi = jnp.minimum(edges[1:, None], cells[None, :] + 1.0)
  return jnp.maximum(hi - lo, 0.0)


def pixelate(image, scale, num_pix: int, new_scale):
  """Flux in the pixels of a centred num_pix x num_pix grid of pitch `new_scale`.

  image [H, H, C] holds fluxes per pixel of pitch `scale`, centred too. Exact area sums
  of the piecewise-constant input (separable overlap weights, A image A^T); flux outside
  the input is zero. new_scale may be traced; shapes are static.
  """
  h = image.shape[0]
  edges = ((jnp.arange(num_pix + 1, dtype=jnp.float32) - num_pix / 2.0) * new_scale / scale
           + h / 2.0)
  weights = _overlaps(edges, h)
  return jnp.einsum('ai,ijc,bj->abc', weights, image, weights,
                    precision=jax.lax.Precision.HIGHEST)


def prior_statistics(num: int = 4096, seed: int = 1234):
  """(mean, std) of every latent under the default priors, from a fixed draw (no render)."""
  sim = SameLens(field_of_view=5.0)

  def one(key):
    draw = priors.UniformStream(key, 1 + MASS_UNIFORMS + VIEW_UNIFORMS)
    label = jnp.minimum(jnp.floor(draw.unit() * len(CLASSES)).astype(jnp.int32), 2)
    _, mass_latents, _ = sim.sample_mass(draw, label)
    latents = {**mass_latents, **sim.sample_observation(draw)['latents']}
    return ({n: jnp.asarray(latents[n][0], jnp.float32) for n in LATENT_NAMES},
            {n: jnp.broadcast_to(jnp.asarray(latents[n][1]), ()) for n in LATENT_NAMES})

  values, valid = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(seed), num))
  stats = {}
  for n in LATENT_NAMES:
    v = np.asarray(values[n])[np.asarray(valid[n])]
    stats[n] = (float(v.mean()), max(float(v.std()), 1e-3))
  return stats


# Standardisation of the latents: (mean, std) over the default priors, valid entries only;
# `prior_statistics()` recomputes them (tests check that they still match).
LATENT_STATS = {
    'n_subhalos': (9.0, 14.0),
    'sub_mass_fraction': (1.0, 1.5),
    'log10_sub_mass_fraction': (-2.0, 0.6),
    'log10_vortex_mass': (10.25, 0.433),
    'log10_vortex_length': (-0.52, 0.577),
    'theta_e': (1.2, 0.346),
    'lens_ellipticity': (0.17, 0.1),
    'shear': (0.05, 0.0289),
    'source_offset': (0.333, 0.118),
    'source_log10_radius': (-0.611, 0.225),
    'source_index': (2.25, 1.01),
    'source_ellipticity': (0.17, 0.1),
}
