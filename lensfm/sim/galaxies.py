"""Galaxy populations of the realistic sky: lens galaxies (mass + light) and sources.

Every sampler takes a `priors.UniformStream` and returns fixed-shape arrays (jit/vmap).
Light comes as `light` Sersic dicts with 'amp' [C, K] (C bands, K components; amp = 0 is
absent). The relations used, one per quantity:

  lens velocity dispersion  Choi, Park & Vogeley (2007, ApJ 658, 884) velocity dispersion
                            function of early types: sigma* = 161 km/s, alpha = 2.32,
                            beta = 2.67.
  lens redshift             uniform in comoving volume (as LensPop, Collett 2015, ApJ 811, 20).
  Einstein radius           singular isothermal sphere: 4 pi (sigma / c)^2 D_ls / D_s.
  lens luminosity           Faber-Jackson L ~ sigma^4, M_r = -21.4 at 200 km/s, 0.4 mag
                            scatter (Bernardi et al. 2003, AJ 125, 1849, their sigma-L).
  lens size                 Shen et al. (2003, MNRAS 343, 978) early types:
                            log10(R_e / kpc) = -0.26 M_r - 5.06, 0.12 dex scatter.
  lens shape                light axis ratio = mass axis ratio x (1 + N(0, 0.1)), position
                            angle = mass angle + N(0, 10 deg) (Bolton et al. 2008, ApJ
                            682, 964: SLACS light and mass align to ~10 deg).
  source redshift           Smail et al. (1994, MNRAS 270, 245) n(z) ~ z^2 exp(-(z/z0)^1.5),
                            z0 = 1.0, above the lens.
  source magnitude          faint galaxy counts dN/dm ~ 10^(0.33 m) (Metcalfe et al.
                            2001, MNRAS 323, 795), between survey-dependent limits.
  source size               star-forming size-luminosity-redshift relation of Shibuya,
                            Ouchi & Harikane (2015, ApJS 219, 15): R_e ~ L^0.27 (1+z)^-1.2,
                            1 kpc at L*_{z=3} (M_UV = -21.0) and z = 4, 0.2 dex scatter;
                            flat f_nu spectrum (K correction -2.5 log10(1+z)).
  clumps                    0-4 star-forming clumps, each 3-10% of the body's flux, radius
                            0.1-0.5 kpc, within 1.5 R_e (Guo et al. 2015, ApJ 800, 39).
  colours                   the observed-frame tables below.
"""
import math

import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from lensfm.sim import cosmology
from lensfm.sim import light

COSMO = cosmology.FlatLambdaCDM(h0=70.0, om0=0.3)
ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi
C_KM_S = cosmology.C_SI / 1e3

# Filter of each survey band (surveys.PRESETS names) for the colour tables.
FILTERS = {
    'euclid_vis': 'VIS', 'euclid_nisp_y': 'Y', 'euclid_nisp_j': 'J', 'euclid_nisp_h': 'H',
    'hst_acs_f814w': 'F814W', 'hst_wfc3_f160w': 'H', 'jwst_nircam_f150w': 'H',
    'lsst_u': 'u', 'lsst_g': 'g', 'lsst_r': 'r', 'lsst_i': 'i', 'lsst_z': 'z', 'lsst_y': 'y',
    'hsc_g': 'g', 'hsc_r': 'r', 'hsc_i': 'i', 'hsc_z': 'z', 'hsc_y': 'y',
}
# Observed-frame AB colours m_band - m_i. Ellipticals: a z ~ 0.5 luminous red galaxy
# (g - r ~ 1.7, r - i ~ 0.75 as on the LRG tracks of Eisenstein et al. 2001, AJ 122, 2267;
# redder bands and Euclid/HST filters approximate, from the same old-population SED).
ELLIPTICAL_COLOURS = {'u': 3.5, 'g': 2.45, 'r': 0.75, 'i': 0.0, 'z': -0.4, 'y': -0.6,
                      'VIS': 0.25, 'F814W': 0.0, 'Y': -0.65, 'J': -0.95, 'H': -1.25}
# Star-forming sources at z ~ 1-3: nearly flat f_nu (approximate), clumps bluer still.
STAR_FORMING_COLOURS = {'u': 0.6, 'g': 0.3, 'r': 0.15, 'i': 0.0, 'z': -0.1, 'y': -0.15,
                        'VIS': 0.05, 'F814W': 0.0, 'Y': -0.2, 'J': -0.3, 'H': -0.4}
CLUMP_COLOURS = {'u': 0.0, 'g': 0.0, 'r': 0.0, 'i': 0.0, 'z': 0.0, 'y': 0.0,
                 'VIS': 0.0, 'F814W': 0.0, 'Y': 0.0, 'J': 0.0, 'H': 0.0}


def colours(table, band_names):
  """m_band - m_i for each band, numpy float32 [C]."""
  return np.asarray([table[FILTERS[b]] for b in band_names], np.float32)


# --- inverse-CDF tables (host numpy, read with jnp.interp inside jit) --------------------

def _inverse_cdf_table(grid, pdf, num=512):
  cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
  cdf /= cdf[-1]
  u = np.linspace(0.0, 1.0, num)
  return u.astype(np.float32), np.interp(u, cdf, grid).astype(np.float32)


def _comoving_distance_np(z):
  zs = np.linspace(0.0, z, 257)
  inv_e = 1.0 / np.sqrt(COSMO.om0 * (1 + zs)**3 + 1 - COSMO.om0)
  # The trapezoid rule by hand: np.trapezoid needs numpy >= 2 (setup.py allows 1.26).
  return COSMO.hubble_distance_mpc * np.sum(0.5 * (inv_e[1:] + inv_e[:-1]) * np.diff(zs))


def velocity_dispersion_table(sigma_min=180.0, sigma_max=400.0):
  """Choi et al. 2007 VDF, phi(sigma) ~ (sigma/sigma*)^alpha exp(-(sigma/sigma*)^beta) / sigma."""
  grid = np.linspace(sigma_min, sigma_max, 2048)
  x = grid / 161.0
  return _inverse_cdf_table(grid, x**2.32 * np.exp(-x**2.67) / grid)


def lens_redshift_table(z_min=0.2, z_max=1.0):
  """Uniform in comoving volume: p(z) ~ D_c(z)^2 / E(z)."""
  grid = np.linspace(z_min, z_max, 512)
  dc = np.array([_comoving_distance_np(z) for z in grid])
  return _inverse_cdf_table(grid, dc**2 / np.sqrt(COSMO.om0 * (1 + grid)**3 + 1 - COSMO.om0))


def source_redshift_table(z_max=4.0, z0=1.0):
  """Smail et al. 1994 n(z) ~ z^2 exp(-(z/z0)^1.5) on (0, z_max]."""
  grid = np.linspace(1e-3, z_max, 2048)
  return _inverse_cdf_table(grid, grid**2 * np.exp(-(grid / z0)**1.5))


def draw_from_table(u, table):
  return jnp.interp(u, jnp.asarray(table[0]), jnp.asarray(table[1]))


def distance_modulus(z):
  return 5.0 * jnp.log10(cosmology.luminosity_distance(COSMO, z)) + 25.0


def kpc_to_arcsec(r_kpc, z):
  return r_kpc / (1e3 * cosmology.angular_diameter_distance(COSMO, z)) * ARCSEC_PER_RAD


def sis_einstein_radius(sigma_kms, z_lens, z_source):
  """4 pi (sigma / c)^2 D_ls / D_s, arcsec (0 if the source is not behind the lens)."""
  d_s = cosmology.angular_diameter_distance(COSMO, z_source)
  d_ls = cosmology.angular_diameter_distance(COSMO, z_lens, z_source)
  return 4.0 * jnp.pi * (sigma_kms / C_KM_S)**2 * jnp.maximum(d_ls, 0.0) / d_s * ARCSEC_PER_RAD


# --- lens galaxy light ----------------------------------------------------------------

def sersic_dict(amp, r, n, e1, e2, cx, cy):
  k = amp.shape[-1]
  geom = [jnp.broadcast_to(jnp.asarray(v, jnp.float32), (k,)) for v in (r, n, e1, e2, cx, cy)]
  return dict(zip(light.SERSIC_KEYS, [jnp.asarray(amp, jnp.float32)] + geom))


def _e1e2(q, angle):
  e = (1.0 - q) / (1.0 + q)
  return e * jnp.cos(2.0 * angle), e * jnp.sin(2.0 * angle)


def normal(draw, shape=()):
  """Standard normal draws from the stream (inverse CDF, erfinv)."""
  u = jnp.clip(draw.unit(shape), 1e-6, 1.0 - 1e-6)
  return jnp.sqrt(2.0) * jsp.erfinv(2.0 * u - 1.0)


def lens_light(draw, sigma_kms, z_lens, q_mass, angle_mass, center, zero_points, band_names,
               two_components=True):
  """Elliptical-galaxy light aligned with the mass; Sersic dict, amp [C, 2] (the second
  component, an n = 1 envelope at 2-3 R_e with 0-30% of the flux, has amp 0 when
  two_components is False). Returns (light dict, i-band apparent magnitude)."""
  abs_mag = -21.4 - 10.0 * jnp.log10(sigma_kms / 200.0) + 0.4 * normal(draw)
  # Observed i from rest-frame r: a K + evolution term ~ z (approximate, early types).
  mag_i = abs_mag + distance_modulus(z_lens) + z_lens
  r_e_kpc = 10.0**(-0.26 * abs_mag - 5.06 + 0.12 * normal(draw))
  r_e = kpc_to_arcsec(r_e_kpc, z_lens)
  n_bulge = draw.uniform(3.0, 5.0)
  q = jnp.clip(q_mass * (1.0 + 0.1 * normal(draw)), 0.3, 1.0)
  angle = angle_mass + jnp.deg2rad(10.0) * normal(draw)
  e1, e2 = _e1e2(q, angle)
  envelope_frac = jnp.where(two_components, draw.uniform(0.0, 0.3), 0.0)
  r_env = r_e * draw.uniform(2.0, 3.0)
  mags = (mag_i + jnp.asarray(colours(ELLIPTICAL_COLOURS, band_names)))[:, None] - 2.5 * jnp.log10(
      jnp.maximum(jnp.stack([1.0 - envelope_frac, envelope_frac]), 1e-30))
  radii, indices = jnp.stack([r_e, r_env]), jnp.stack([n_bulge, jnp.float32(1.0)])
  amp = light.amplitude_from_magnitude(mags, radii, indices, jnp.asarray(zero_points)[:, None])
  amp = amp * jnp.stack([1.0, jnp.where(envelope_frac > 0, 1.0, 0.0)])
  return sersic_dict(amp, radii, indices, e1, e2, center[0], center[1]), mag_i


# --- sources --------------------------------------------------------------------------

def source_size_kpc(abs_mag_uv, z_source, scatter):
  """Shibuya et al. 2015: R_e = 6.9 kpc (L / L*)^0.27 (1 + z)^-1.2 (1 kpc at L*, z = 4)."""
  lum = 10.0**(-0.4 * (abs_mag_uv + 21.0))
  return 6.9 * lum**0.27 * (1.0 + z_source)**-1.2 * 10.0**scatter


def magnitude_counts(u, m_bright, m_faint, slope=0.33):
  """Inverse CDF of dN/dm ~ 10^(slope m) on [m_bright, m_faint]."""
  a, b = 10.0**(slope * m_bright), 10.0**(slope * m_faint)
  return jnp.log10(a + u * (b - a)) / slope


def source(draw, z_source, center, zero_points, band_names, mag_range=(21.0, 25.5),
           max_clumps=4):
  """A star-forming source: Sersic body + up to max_clumps Gaussian (n = 0.5) clumps.
  Sersic dict with amp [C, 1 + max_clumps]. Returns (dict, i-band magnitude of the body)."""
  mag_i = magnitude_counts(draw.unit(), *mag_range)
  abs_uv = mag_i - distance_modulus(z_source) + 2.5 * jnp.log10(1.0 + z_source)
  r_e = kpc_to_arcsec(source_size_kpc(abs_uv, z_source, 0.2 * normal(draw)), z_source)
  n_body = draw.uniform(0.5, 2.0)
  e1, e2 = _e1e2(draw.uniform(0.3, 1.0), draw.uniform(0.0, jnp.pi))
  # Clumps: count ~ min(Poisson(1.5), max_clumps) by inverse CDF; positions in 1.5 R_e.
  n_clumps = jnp.minimum(
      jnp.sum(draw.unit() > jnp.cumsum(jnp.exp(-1.5) * 1.5**jnp.arange(max_clumps)
                                        / jnp.cumprod(jnp.maximum(jnp.arange(max_clumps), 1)))),
      max_clumps)
  present = jnp.arange(max_clumps) < n_clumps
  frac = jnp.where(present, draw.uniform(0.03, 0.1, (max_clumps,)), 0.0)
  r_clump = kpc_to_arcsec(draw.uniform(0.1, 0.5, (max_clumps,)), z_source)
  rad = 1.5 * r_e * jnp.sqrt(draw.unit((max_clumps,)))
  ang = draw.uniform(0.0, 2.0 * jnp.pi, (max_clumps,))
  body_colour = jnp.asarray(colours(STAR_FORMING_COLOURS, band_names))
  clump_colour = jnp.asarray(colours(CLUMP_COLOURS, band_names))
  body_mag = (mag_i + body_colour)[:, None]
  clump_mag = (mag_i + clump_colour)[:, None] - 2.5 * jnp.log10(jnp.maximum(frac, 1e-30))[None]
  radii = jnp.concatenate([r_e[None], r_clump])
  indices = jnp.concatenate([n_body[None], jnp.full((max_clumps,), 0.5)])
  mags = jnp.concatenate([body_mag, clump_mag], axis=1)
  amp = light.amplitude_from_magnitude(mags, radii, indices, jnp.asarray(zero_points)[:, None])
  amp = amp * jnp.concatenate([jnp.ones(1), present.astype(jnp.float32)])[None]
  cx = center[0] + jnp.concatenate([jnp.zeros(1), rad * jnp.cos(ang)])
  cy = center[1] + jnp.concatenate([jnp.zeros(1), rad * jnp.sin(ang)])
  e1s = jnp.concatenate([e1[None], jnp.zeros(max_clumps)])
  e2s = jnp.concatenate([e2[None], jnp.zeros(max_clumps)])
  return sersic_dict(amp, radii, indices, e1s, e2s, cx, cy), mag_i, n_clumps


def banded_light(light_params, x, y):
  """Surface brightness [..., C] of a Sersic dict with amp [C, K] at x, y [...]."""
  geometry = dict(light_params, amp=jnp.ones_like(light_params['R_sersic']))
  per_component = light.sersic_ellipse(x[..., None], y[..., None], **geometry)
  return jnp.einsum('...k,ck->...c', per_component, light_params['amp'])


def gaussian_ring(x, y, amp, radius, width, e1, e2, center_x, center_y):
  """A ring galaxy: amp [C] * exp(-(R - radius)^2 / (2 width^2)), R the product-average
  elliptical radius; [H, W, C]. (Collisional ring galaxies, a lens-finding contaminant.)"""
  r = light.product_average_radius(x, y, e1, e2, center_x, center_y)
  return jnp.exp(-0.5 * ((r - radius) / width)**2)[..., None] * amp
