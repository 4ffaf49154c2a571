"""Dark substructure populations: subhalos and line-of-sight halos as truncated NFWs.

Fixed shapes for jit: up to `max_halos` slots are drawn; a mask (alpha_Rs = 0) switches
off the slots beyond the Poisson count and those a warm-dark-matter cut removes.

  mass function      dN/dm dA = sigma_sub / m0 (m / m0)^slope, slope -1.9, m0 = 1e8 Msun,
                     sigma_sub in kpc^-2 (the pyHalo convention, Gilman et al. 2020, MNRAS
                     491, 6077; sigma_sub ~ 0.01-0.05 kpc^-2 there), over [m_min, m_max].
  warm dark matter   thinning by (1 + (a m_hm / m)^b)^-c (Lovell et al. 2014, MNRAS 439,
                     300: a = 1, b = 1, c = 1.3); m_hm = 0 is CDM.
  concentration      Duffy et al. (2008, MNRAS 390, L64) M200c, full sample:
                     c = 5.71 (M / 2e12 h^-1 Msun)^-0.084 (1 + z)^-0.47, 0.11 dex scatter.
  truncation         Jacobi radius in an isothermal host of dispersion sigma_host:
                     r_t = (G m r3d^2 / (2 sigma_host^2))^(1/3) (Tormen, Diaferio & Syer
                     1998, MNRAS 299, 728, point-mass subhalo in an SIS), r3d from the
                     projected radius and a depth uniform in +-r_depth.
  line of sight      halos with the same mass function per unit area, at redshifts
                     uniform in comoving distance in (0, z_source), deflecting in the
                     Born (single-plane) approximation with their own D_ds / D_s.
"""
import math

import jax.numpy as jnp

from lensfm.sim import cosmology
from lensfm.sim import galaxies

SUBHALO_SLOPE = -1.9
PIVOT_MASS = 1e8
G_KPC_KMS2_MSUN = 4.30091e-6    # G in kpc (km/s)^2 / Msun


def expected_count(sigma_sub, area_kpc2, m_min, m_max, slope=SUBHALO_SLOPE, m0=PIVOT_MASS):
  """Mean number of halos in [m_min, m_max] over area_kpc2: the mass function's integral."""
  p = slope + 1.0
  return sigma_sub * area_kpc2 * ((m_max / m0)**p - (m_min / m0)**p) / p


def wdm_suppression(m, m_hm, a=1.0, b=1.0, c=1.3):
  """(1 + (a m_hm / m)^b)^-c: the fraction of CDM halos of mass m that survive in WDM."""
  return (1.0 + (a * m_hm / jnp.maximum(m, 1.0))**b)**-c


def duffy_concentration(m200, z, scatter=0.0, h=0.7):
  """Duffy et al. 2008 c200c(M200c, z), full relaxed+unrelaxed sample; scatter in dex."""
  return 5.71 * (m200 / (2e12 / h))**-0.084 * (1.0 + z)**-0.47 * 10.0**scatter


def jacobi_radius_kpc(m, r3d_kpc, sigma_host):
  return (G_KPC_KMS2_MSUN * m * r3d_kpc**2 / (2.0 * sigma_host**2))**(1.0 / 3.0)


def _poisson_count(u, rate, max_count):
  k = jnp.arange(max_count + 1, dtype=jnp.float32)
  log_pmf = k * jnp.log(jnp.maximum(rate, 1e-30)) - rate - jnp.cumsum(
      jnp.log(jnp.maximum(k, 1.0)))
  return jnp.minimum(jnp.sum(jnp.cumsum(jnp.exp(log_pmf)) < u), max_count).astype(jnp.int32)


def subhalos(draw, *, z_lens, z_source, center, sigma_host, max_halos, sigma_sub=0.025,
             radius_arcsec=2.0, m_min=1e6, m_max=1e10, m_hm=0.0, r_depth_kpc=100.0,
             cosmo=cosmology.PYHALO_WMAP9):
  """Subhalos projected within radius_arcsec of `center`: (tnfw, info). tnfw is the
  render's {'Rs', 'alpha_Rs', 'r_trunc', 'center_x', 'center_y'} [max_halos] in arcsec,
  dropped slots with alpha_Rs = 0; info {'mass' (Msun, 0 if dropped), 'concentration'
  [max_halos], 'count' (kept), 'expected' (the CDM Poisson mean)}."""
  kpc_per_arcsec = 1e3 * cosmology.angular_diameter_distance(cosmo, z_lens) * math.pi / 648000.0
  area = math.pi * radius_arcsec**2 * kpc_per_arcsec**2
  rate = expected_count(sigma_sub, area, m_min, m_max)
  n = _poisson_count(draw.unit(), rate, max_halos)
  m = draw.power_law(m_min, m_max, SUBHALO_SLOPE, (max_halos,))
  keep = (jnp.arange(max_halos) < n) & (draw.unit((max_halos,)) < wdm_suppression(m, m_hm))
  conc = duffy_concentration(m, z_lens, 0.11 * galaxies.normal(draw, (max_halos,)))
  rs, alpha_rs = cosmology.nfw_physical_to_angle(m, conc, z_lens, z_source, cosmo)
  r_proj = radius_arcsec * jnp.sqrt(draw.unit((max_halos,)))
  angle = draw.uniform(0.0, 2.0 * jnp.pi, (max_halos,))
  depth = draw.uniform(-r_depth_kpc, r_depth_kpc, (max_halos,))
  r3d = jnp.sqrt((r_proj * kpc_per_arcsec)**2 + depth**2)
  r_trunc = jacobi_radius_kpc(m, r3d, sigma_host) / kpc_per_arcsec
  tnfw = {'Rs': rs, 'alpha_Rs': jnp.where(keep, alpha_rs, 0.0),
          'r_trunc': jnp.maximum(r_trunc, 1e-3 * rs),
          'center_x': center[0] + r_proj * jnp.cos(angle),
          'center_y': center[1] + r_proj * jnp.sin(angle)}
  info = {'mass': jnp.where(keep, m, 0.0), 'concentration': conc,
          'count': keep.sum().astype(jnp.int32), 'expected': rate}
  return tnfw, info


def line_of_sight(draw, *, z_source, max_halos, number_density=0.0, radius_arcsec=3.0,
                  m_min=1e7, m_max=1e10, m_hm=0.0, cosmo=cosmology.PYHALO_WMAP9):
  """Line-of-sight field halos as untruncated-like TNFWs (r_trunc = 20 Rs), number_density
  per arcsec^2 above m_min (0: none); Born approximation. Returns (tnfw dict, count)."""
  rate = number_density * math.pi * radius_arcsec**2
  n = _poisson_count(draw.unit(), rate, max_halos)
  m = draw.power_law(m_min, m_max, SUBHALO_SLOPE, (max_halos,))
  keep = (jnp.arange(max_halos) < n) & (draw.unit((max_halos,)) < wdm_suppression(m, m_hm))
  # Uniform in comoving distance between 5% and 95% of the source's (not yet weighted by
  # the comoving volume D_c^2 dD_c nor the halo mass function's evolution).
  dc_s = cosmology.comoving_distance(cosmo, z_source)
  dc = draw.uniform(0.05, 0.95, (max_halos,)) * dc_s
  z_grid = jnp.linspace(0.0, 6.0, 256)
  z = jnp.interp(dc, cosmology.comoving_distance(cosmo, z_grid), z_grid)
  conc = duffy_concentration(m, z, 0.11 * galaxies.normal(draw, (max_halos,)))
  rs, alpha_rs = cosmology.nfw_physical_to_angle(m, conc, z, z_source, cosmo)
  r_proj = radius_arcsec * jnp.sqrt(draw.unit((max_halos,)))
  angle = draw.uniform(0.0, 2.0 * jnp.pi, (max_halos,))
  tnfw = {'Rs': rs, 'alpha_Rs': jnp.where(keep, alpha_rs, 0.0), 'r_trunc': 20.0 * rs,
          'center_x': r_proj * jnp.cos(angle), 'center_y': r_proj * jnp.sin(angle)}
  return tnfw, keep.sum().astype(jnp.int32)
