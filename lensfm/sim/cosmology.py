"""Flat Lambda-CDM distances and the mass -> Einstein-radius conversions the recipes use.

Everything is plain jnp so it can run inside jit (redshifts may be traced); recipe set-up,
which needs Python floats once, uses the numpy `*_host` twins at the end (same values, bit
for bit, with fewer XLA compilations).

Two DeepLense quirks live here on purpose (as in the public DeepLenseSim code that made
the released files; arXiv:1909.07346, 2008.12731, 2112.12121):
  * `einstein_radius_deeplense` uses LUMINOSITY distances and D_LS = D_S - D_L, and
    206265 arcsec/rad, exactly like `DeepLens.mass_to_radius`; the released files
    were made with it.
  * `reduced_deflection_scale`: Models II/III were rendered through lenstronomy's
    SimAPI with `lens_redshift_list` set (which switches on multi-plane mode) and
    `z_source_convention=2.5` while the source sits at z=1.0, so every deflection
    (given as a reduced deflection for a z=2.5 source) is rescaled by
    (D_LS/D_S)(z_s=1) / (D_LS/D_S)(z_s=2.5) ~= 0.634 for the pyHalo (WMAP9) cosmology.
"""
import dataclasses

import jax.numpy as jnp
import numpy as np

# Constants as astropy (CODATA 2018 / IAU 2015) gives them, in SI.
G_SI = 6.6743e-11
C_SI = 299792458.0
M_SUN_KG = 1.988409870698051e30
MPC_M = 3.085677581491367e22
# DeepLense's `mass_to_radius` uses this rounded value, not 180*3600/pi.
DEEPLENSE_RAD_TO_ARCSEC = 206265.0

# Gauss-Legendre nodes for the comoving-distance integral: the integrand 1/E(z) is
# smooth, so 64 nodes are exact to ~1e-14 relative for z < 10.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(64)


@dataclasses.dataclass(frozen=True)
class FlatLambdaCDM:
  """A flat Lambda-CDM cosmology without radiation (astropy's default Tcmb0=0)."""
  h0: float = 70.0   # km/s/Mpc
  om0: float = 0.3

  @property
  def hubble_distance_mpc(self):
    return C_SI / 1e3 / self.h0


# The cosmology of the DeepLense `DeepLens.mass_to_radius` conversion.
DEEPLENSE = FlatLambdaCDM(h0=70.0, om0=0.3)
# pyHalo's default (WMAP9) cosmology, which lenstronomy's SimAPI used for Models II/III.
PYHALO_WMAP9 = FlatLambdaCDM(h0=69.7, om0=0.0464 + 0.235)


def comoving_distance(cosmo: FlatLambdaCDM, z):
  """Line-of-sight comoving distance to redshift z, in Mpc."""
  z = jnp.asarray(z, dtype=float)
  zs = 0.5 * z[..., None] * (jnp.asarray(_GL_NODES) + 1.0)
  inv_e = 1.0 / jnp.sqrt(cosmo.om0 * (1.0 + zs)**3 + (1.0 - cosmo.om0))
  return cosmo.hubble_distance_mpc * 0.5 * z * jnp.sum(jnp.asarray(_GL_WEIGHTS) * inv_e, -1)


def luminosity_distance(cosmo: FlatLambdaCDM, z):
  """Luminosity distance in Mpc."""
  return (1.0 + z) * comoving_distance(cosmo, z)


def angular_diameter_distance(cosmo: FlatLambdaCDM, z1, z2=None):
  """Angular-diameter distance from z1 to z2 (or from 0 to z1), in Mpc (flat universe)."""
  if z2 is None:
    z1, z2 = 0.0, z1
  return (comoving_distance(cosmo, z2) - comoving_distance(cosmo, z1)) / (1.0 + z2)


def einstein_radius_deeplense(mass_msun, z_lens=0.5, z_source=1.0, cosmo=DEEPLENSE):
  """Einstein radius (arcsec) of a point mass, the way DeepLense computed it.

  theta = sqrt(4 G M / c^2 * D_LS / (D_L D_S)) with LUMINOSITY distances and
  D_LS = D_S - D_L (not the angular-diameter D_LS): a quirk that the released files carry.
  """
  d_l = luminosity_distance(cosmo, z_lens)
  d_s = luminosity_distance(cosmo, z_source)
  d_ls = d_s - d_l
  # Distances stay in Mpc (and G M_sun / c^2 is converted to Mpc) so float32 never
  # overflows: D_L * D_S in metres would be ~1e52.
  schwarzschild_half_mpc = G_SI * M_SUN_KG / C_SI**2 / MPC_M
  theta = jnp.sqrt(4.0 * schwarzschild_half_mpc * mass_msun * d_ls / (d_l * d_s))
  return theta * DEEPLENSE_RAD_TO_ARCSEC


def mass_from_einstein_radius_deeplense(theta_e, z_lens=0.5, z_source=1.0, cosmo=DEEPLENSE):
  """Inverse of `einstein_radius_deeplense`: the mass (Msun) whose radius is theta_e."""
  unit = einstein_radius_deeplense(1.0, z_lens, z_source, cosmo)
  return (theta_e / unit)**2


def reduced_deflection_scale(z_lens, z_source, z_source_convention, cosmo=PYHALO_WMAP9):
  """Factor turning deflections defined for `z_source_convention` into ones for `z_source`.

  This is what lenstronomy's multi-plane ray tracing applies for a single lens plane:
  (D_LS/D_S)(z_source) / (D_LS/D_S)(z_source_convention), angular-diameter distances.
  """
  def ratio(zs):
    return angular_diameter_distance(cosmo, z_lens, zs) / angular_diameter_distance(cosmo, zs)
  return ratio(z_source) / ratio(z_source_convention)


# --- Set-up constants as Python floats -------------------------------------------------
# The functions above evaluated for Python numbers with the same float32 operations, bit
# for bit, in numpy: eagerly each jnp operation compiles an XLA program of its own, which
# made recipe set-up a large part of a build command's start. The sums stay XLA reductions
# (their order sets the last bit); tests/test_sim_recipes.py checks the equality.

def _xla_sum(values: np.ndarray) -> np.ndarray:
  return np.asarray(jnp.sum(values, -1))


def _comoving_distance_host(cosmo: FlatLambdaCDM, z: float) -> np.float32:
  z = np.asarray(z, np.float32)
  zs = 0.5 * z[..., None] * (_GL_NODES.astype(np.float32) + 1.0)
  x = 1.0 + zs
  # x * (x * x): what jnp's `** 3` (lax.integer_pow) computes; numpy's would call pow.
  inv_e = 1.0 / np.sqrt(cosmo.om0 * (x * (x * x)) + (1.0 - cosmo.om0))
  return cosmo.hubble_distance_mpc * 0.5 * z * _xla_sum(_GL_WEIGHTS.astype(np.float32) * inv_e)


def _angular_diameter_distance_host(cosmo: FlatLambdaCDM, z1: float, z2=None) -> np.float32:
  if z2 is None:
    z1, z2 = 0.0, z1
  return ((_comoving_distance_host(cosmo, z2) - _comoving_distance_host(cosmo, z1))
          / np.float32(1.0 + z2))


def einstein_radius_deeplense_host(mass_msun: float, z_lens=0.5, z_source=1.0,
                                   cosmo=DEEPLENSE) -> float:
  """`einstein_radius_deeplense` of Python numbers, bit for bit, as a Python float."""
  d_l = np.float32(1.0 + z_lens) * _comoving_distance_host(cosmo, z_lens)
  d_s = np.float32(1.0 + z_source) * _comoving_distance_host(cosmo, z_source)
  schwarzschild_half_mpc = G_SI * M_SUN_KG / C_SI**2 / MPC_M
  theta = np.sqrt(np.float32(4.0 * schwarzschild_half_mpc * mass_msun) * (d_s - d_l)
                  / (d_l * d_s))
  return float(theta * np.float32(DEEPLENSE_RAD_TO_ARCSEC))


def mass_from_einstein_radius_deeplense_host(theta_e: float, z_lens=0.5, z_source=1.0,
                                             cosmo=DEEPLENSE) -> float:
  """`mass_from_einstein_radius_deeplense` of Python numbers, bit for bit."""
  ratio = np.float32(theta_e) / np.float32(
      einstein_radius_deeplense_host(1.0, z_lens, z_source, cosmo))
  return float(ratio * ratio)


def reduced_deflection_scale_host(z_lens: float, z_source: float, z_source_convention: float,
                                  cosmo=PYHALO_WMAP9) -> float:
  """`reduced_deflection_scale` of Python numbers, bit for bit, as a Python float."""
  def ratio(zs):
    return (_angular_diameter_distance_host(cosmo, z_lens, zs)
            / _angular_diameter_distance_host(cosmo, zs))
  return float(ratio(z_source) / ratio(z_source_convention))


# lenstronomy's critical density constant, h^2 Msun / Mpc^3 (Cosmo/nfw_param.py).
_RHO_CRIT_H2 = 2.77536627e11
_ARCSEC_RAD = np.pi / 180.0 / 3600.0
_LENSTRONOMY_G = 6.67384e-11
_LENSTRONOMY_MSUN = 1.9891e30
_LENSTRONOMY_MPC = 3.08567758e22


def nfw_physical_to_angle(m200, concentration, z_lens, z_source, cosmo: FlatLambdaCDM):
  """lenstronomy LensCosmo.nfw_physical2angle: (M200c [Msun], c) -> (Rs, alpha_Rs) arcsec."""
  h = cosmo.h0 / 100.0
  efunc2 = cosmo.om0 * (1.0 + z_lens)**3 + (1.0 - cosmo.om0)
  rho_crit = _RHO_CRIT_H2 * h * h * efunc2                      # Msun / Mpc^3, physical
  r200 = (3.0 * m200 / (4.0 * jnp.pi * rho_crit * 200.0))**(1.0 / 3.0)
  rs = r200 / concentration
  rho0 = 200.0 / 3.0 * rho_crit * concentration**3 / (
      jnp.log(1.0 + concentration) - concentration / (1.0 + concentration))
  d_d = angular_diameter_distance(cosmo, z_lens)
  d_s = angular_diameter_distance(cosmo, z_source)
  d_ds = angular_diameter_distance(cosmo, z_lens, z_source)
  # Sigma_crit = c^2 / (4 pi G) * D_s / (D_d D_ds), in Msun / Mpc^2, with lenstronomy's
  # own (older CODATA) constants so that the conversion matches it to float precision.
  sigma_crit = (C_SI**2 / (4.0 * np.pi * _LENSTRONOMY_G) * _LENSTRONOMY_MPC / _LENSTRONOMY_MSUN
                * d_s / (d_d * d_ds))
  rs_angle = rs / d_d / _ARCSEC_RAD
  alpha_rs = rho0 * 4.0 * rs * rs * (1.0 + np.log(0.5)) / sigma_crit / d_d / _ARCSEC_RAD
  return rs_angle, alpha_rs
