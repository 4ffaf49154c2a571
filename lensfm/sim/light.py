"""Surface-brightness profiles (lenstronomy 'SERSIC_ELLIPSE') and magnitude conversions.

A light model is a dict of arrays with a trailing component axis [K]:
  {'amp', 'R_sersic', 'n_sersic', 'e1', 'e2', 'center_x', 'center_y'}
Components with amp = 0 are absent, so shapes stay fixed under jit.
"""
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

SERSIC_KEYS = ('amp', 'R_sersic', 'n_sersic', 'e1', 'e2', 'center_x', 'center_y')
# lenstronomy floors radii at this smoothing scale (arcsec) inside the Sersic profile.
_SERSIC_SMOOTHING = 1e-4


def sersic_b_n(n):
  """lenstronomy's approximation b(n) = 1.9992 n - 0.3271 (floored at 1e-5)."""
  return jnp.maximum(1.9992 * n - 0.3271, 1e-5)


def product_average_radius(x, y, e1, e2, center_x, center_y):
  """Elliptical radius sqrt(q x'^2 + y'^2 / q), lenstronomy's product-average convention.

  Written with (e1, e2) directly (param_util.transform_e1e2_product_average), so no
  angles are involved and gradients are finite at e = 0.
  """
  dx, dy = x - center_x, y - center_y
  norm = jnp.sqrt(jnp.maximum(jnp.abs(1.0 - e1 * e1 - e2 * e2), 1e-6))
  xp = ((1.0 - e1) * dx - e2 * dy) / norm
  yp = (-e2 * dx + (1.0 + e1) * dy) / norm
  return jnp.sqrt(xp * xp + yp * yp)


def sersic_ellipse(x, y, amp, R_sersic, n_sersic, e1, e2,  # pylint: disable=invalid-name
                   center_x=0.0, center_y=0.0, max_r_frac=1000.0):
  """Elliptical Sersic surface brightness: amp * exp(-b_n ((R/R_sersic)^(1/n) - 1))."""
  r = jnp.maximum(product_average_radius(x, y, e1, e2, center_x, center_y), _SERSIC_SMOOTHING)
  r_sersic = jnp.maximum(R_sersic, _SERSIC_SMOOTHING)
  frac = r / r_sersic
  value = amp * jnp.exp(-sersic_b_n(n_sersic) * (frac**(1.0 / n_sersic) - 1.0))
  return jnp.where(frac <= max_r_frac, value, 0.0)


def sersic_total_flux(amp, R_sersic, n_sersic):  # pylint: disable=invalid-name
  """Total flux of a Sersic profile with product-average radius (lenstronomy total_flux)."""
  bn = sersic_b_n(n_sersic)
  return (amp * R_sersic**2 * 2.0 * jnp.pi * n_sersic * jnp.exp(bn) / bn**(2.0 * n_sersic)
          * jnp.exp(jsp.gammaln(2.0 * n_sersic)))


def magnitude_to_cps(magnitude, zero_point):
  """Counts per second of an object of this apparent magnitude (lenstronomy data_util)."""
  return 10.0**(-(magnitude - zero_point) / 2.5)


def amplitude_from_magnitude(magnitude, R_sersic, n_sersic,  # pylint: disable=invalid-name
                             zero_point):
  """The Sersic `amp` whose total flux is the magnitude's count rate.

  lenstronomy SimAPI.magnitude2amplitude.
  """
  return magnitude_to_cps(magnitude, zero_point) / sersic_total_flux(1.0, R_sersic, n_sersic)


def amplitude_from_magnitude_host(magnitude: float, R_sersic: float,  # pylint: disable=invalid-name
                                  n_sersic: float, zero_point: float) -> float:
  """`amplitude_from_magnitude` of Python numbers, bit for bit, as a Python float: the
  arithmetic in numpy float32, only exp, pow and lgamma as (eager) XLA operations, so
  recipe set-up compiles few programs (tests/test_sim_recipes.py checks the equality)."""
  bn = np.maximum(np.float32(1.9992 * n_sersic - 0.3271), np.float32(1e-5))
  xla = lambda value: np.asarray(value, np.float32)  # pylint: disable=unnecessary-lambda-assignment
  # sersic_total_flux(1.0, ...): the leading Python factors multiply in float64 first.
  total = (np.float32(1.0 * R_sersic**2 * 2.0 * np.pi * n_sersic) * xla(jnp.exp(bn))
           / xla(jnp.power(bn, 2.0 * n_sersic))
           * xla(jnp.exp(jsp.gammaln(np.float32(2.0 * n_sersic)))))
  return float(np.float32(magnitude_to_cps(magnitude, zero_point)) / total)
