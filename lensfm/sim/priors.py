"""Small on-device samplers shared by the recipes (all fixed-shape, jit/vmap friendly)."""
import jax
import jax.numpy as jnp


def uniform(key, low, high, shape=()):
  """U(low, high) float32."""
  return jax.random.uniform(key, shape, jnp.float32, low, high)


def log_uniform(key, log10_low, log10_high, shape=()):
  """10^U(log10_low, log10_high)."""
  return 10.0**uniform(key, log10_low, log10_high, shape)


def power_law(key, low, high, slope, shape=()):
  """Draws from dN/dm ~ m^slope on [low, high] by inverse CDF (slope -1 is the log-uniform limit).

  Same formula as DeepLense `draw_old_cdm_sub_masses`; computed in log space so that
  m^(slope+1) of 1e10 does not lose float32 precision. `slope` may be traced.
  """
  u = jax.random.uniform(key, shape, jnp.float32)
  p = slope + 1.0
  log_lo, log_hi = jnp.log(low), jnp.log(high)
  # (lo^p + (hi^p - lo^p) u)^(1/p), written as lo * (1 + (exp(p (log_hi - log_lo)) - 1) u)^(1/p).
  # At slope -1 (p = 0) the law is log-uniform; the general formula is 0/0 there.
  near_log = jnp.abs(p) < 1e-4
  p_safe = jnp.where(near_log, 1.0, p)
  ratio = jnp.expm1(p_safe * (log_hi - log_lo))
  log_m = jnp.where(near_log, log_lo + u * (log_hi - log_lo),
                    log_lo + jnp.log1p(ratio * u) / p_safe)
  return jnp.exp(log_m)


def ellipticity(key, q_low, q_high):
  """(e1, e2) of an ellipse with axis ratio U(q_low, q_high) and angle U(0, pi)."""
  k_q, k_phi = jax.random.split(key)
  q = uniform(k_q, q_low, q_high)
  phi = uniform(k_phi, 0.0, jnp.pi)
  e = (1.0 - q) / (1.0 + q)
  return e * jnp.cos(2.0 * phi), e * jnp.sin(2.0 * phi)


def polar_offset(key, r_low, r_high, shape=()):
  """Positions at radius U(r_low, r_high), angle U(0, 2 pi); DeepLense's (r sin, r cos)."""
  k_r, k_t = jax.random.split(key)
  r = uniform(k_r, r_low, r_high, shape)
  theta = uniform(k_t, 0.0, 2.0 * jnp.pi, shape)
  return r * jnp.sin(theta), r * jnp.cos(theta)


def select_class(label, index, value, other):
  """`value` where label == index else `other` (broadcast over trailing axes)."""
  return jnp.where(label == index, value, other)
