"""On-device samplers shared by the recipes (fixed-shape, jit/vmap friendly).

Every scene draws ONE vector of uniforms (`UniformStream`) and transforms slices of it:
each separate jax.random call inlines a threefry hash into the program, and dozens of
them made the recipes take many seconds to compile on CPU.
"""
import math

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp


class UniformStream:
  """Hands out consecutive slices of one U(0, 1) draw of static `size`."""

  def __init__(self, key, size):
    self._u = jax.random.uniform(key, (size,), jnp.float32)
    self._next = 0

  @classmethod
  def from_uniforms(cls, u):
    """A stream over given U(0, 1) draws u [size] (e.g. one row of a vmapped block)."""
    stream = cls.__new__(cls)
    stream._u, stream._next = u, 0
    return stream

  def unit(self, shape=()):
    """U(0, 1) of the given (static) shape."""
    n = math.prod(shape)
    if self._next + n > self._u.shape[0]:
      raise ValueError(f'UniformStream of size {self._u.shape[0]} exhausted; make it larger.')
    out = self._u[self._next:self._next + n].reshape(shape)
    self._next += n
    return out

  def uniform(self, low, high, shape=()):
    """U(low, high)."""
    return low + (high - low) * self.unit(shape)

  def log_uniform(self, log10_low, log10_high, shape=()):
    """10^U(log10_low, log10_high)."""
    return 10.0**self.uniform(log10_low, log10_high, shape)

  def power_law(self, low, high, slope, shape=()):
    return power_law(self.unit(shape), low, high, slope)

  def poisson(self, rate, max_count):
    return poisson_inverse_cdf(self.unit(), rate, max_count)

  def ellipticity(self, q_low, q_high):
    """(e1, e2) of an ellipse with axis ratio U(q_low, q_high) and angle U(0, pi)."""
    q = self.uniform(q_low, q_high)
    phi = self.uniform(0.0, jnp.pi)
    return ellipticity(q, phi)

  def polar_offset(self, r_low, r_high, shape=()):
    """Radius U(r_low, r_high), angle U(0, 2 pi), as DeepLense's (r sin t, r cos t)."""
    r = self.uniform(r_low, r_high, shape)
    theta = self.uniform(0.0, 2.0 * jnp.pi, shape)
    return r * jnp.sin(theta), r * jnp.cos(theta)


def ellipticity(q, phi):
  """lenstronomy (e1, e2) from axis ratio and position angle."""
  e = (1.0 - q) / (1.0 + q)
  return e * jnp.cos(2.0 * phi), e * jnp.sin(2.0 * phi)


def power_law(u, low, high, slope):
  """Inverse CDF of dN/dm ~ m^slope on [low, high] at uniforms u (slope may be traced).

  DeepLense's `draw_old_cdm_sub_masses` formula (lo^p + (hi^p - lo^p) u)^(1/p), p =
  slope + 1, rewritten as lo * (1 + ((hi/lo)^p - 1) u)^(1/p) in logs so float32 keeps
  its precision; slope = -1 is the log-uniform limit.
  """
  p = slope + 1.0
  log_lo, log_hi = math.log(low), math.log(high)
  near_log = jnp.abs(p) < 1e-4
  p_safe = jnp.where(near_log, 1.0, p)
  ratio = jnp.expm1(p_safe * (log_hi - log_lo))
  log_m = jnp.where(near_log, log_lo + u * (log_hi - log_lo),
                    log_lo + jnp.log1p(ratio * u) / p_safe)
  return jnp.exp(log_m)


def poisson_inverse_cdf(u, rate, max_count):
  """Poisson(rate) truncated at max_count, by inverse CDF of one uniform (int32).

  Exact below max_count; cheap to compile, unlike jax.random.poisson's rejection loop.
  """
  k = jnp.arange(max_count + 1, dtype=jnp.float32)
  log_pmf = k * jnp.log(rate) - rate - jsp.gammaln(k + 1.0)
  cdf = jnp.cumsum(jnp.exp(log_pmf))
  return jnp.minimum(jnp.sum(cdf < u), max_count).astype(jnp.int32)
