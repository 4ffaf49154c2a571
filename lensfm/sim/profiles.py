"""Deflection fields of lens mass profiles, in lenstronomy's parameterisations.

Every profile is `alpha(x, y, **params) -> (alpha_x, alpha_y)` in arcsec, pure jnp,
broadcasting over x, y and the parameters, so it jits, vmaps and differentiates.
Singular points (profile centres, the vortex line) are softened by tiny floors so values
and gradients stay finite; agreement with lenstronomy is only claimed away from them.
"""
import jax
import jax.numpy as jnp

# Radii below this (arcsec) are floored: keeps 1/r finite at a pixel that hits a centre.
_R_FLOOR = 1e-9
# sqrt(1 - q^2) is floored here: below it the SIE formulas equal their SIS limit.
_ROUND_EPS = 1e-6


def _safe_norm(x, y, floor=_R_FLOOR):
  """sqrt(x^2 + y^2) floored at `floor`, with finite gradients at the origin."""
  r2 = x * x + y * y
  return jnp.sqrt(jnp.maximum(r2, floor * floor))


def ellipticity_to_q_angle(e1, e2):
  """lenstronomy's (e1, e2) -> (axis ratio q, position angle phi), with safe gradients.

  q = (1 - |e|) / (1 + |e|), phi = atan2(e2, e1) / 2; |e| is capped at 0.9999 as in
  lenstronomy. At e = 0 the angle is arbitrary; it is set to 0 without NaN gradients.
  """
  e2sq = e1 * e1 + e2 * e2
  is_round = e2sq < 1e-24
  e1_safe = jnp.where(is_round, 1.0, e1)
  e2_safe = jnp.where(is_round, 0.0, e2)
  c = jnp.where(is_round, 0.0, jnp.sqrt(jnp.where(is_round, 1.0, e2sq)))
  c = jnp.minimum(c, 0.9999)
  q = (1.0 - c) / (1.0 + c)
  phi = jnp.arctan2(e2_safe, e1_safe) / 2.0
  return q, phi, c


def _rotate(x, y, angle):
  """Coordinates in a frame rotated counter-clockwise by `angle` (lenstronomy util.rotate)."""
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  return x * cos + y * sin, -x * sin + y * cos


def sis(x, y, theta_e, center_x=0.0, center_y=0.0):
  """Singular isothermal sphere: alpha = theta_E (x, y) / r."""
  dx, dy = x - center_x, y - center_y
  r = _safe_norm(dx, dy)
  return theta_e * dx / r, theta_e * dy / r


def sie(x, y, theta_e, e1, e2, center_x=0.0, center_y=0.0):
  """Singular isothermal ellipsoid, lenstronomy 'SIE' convention.

  theta_e is the product-average Einstein radius; the Kormann/Keeton scale is
  b = theta_e * sqrt(q) (Keeton & Kochanek 1998 eq. 8 with s -> 0).
  """
  q, phi, c = ellipticity_to_q_angle(e1, e2)
  b = theta_e * jnp.sqrt(q)
  # sqrt(1 - q^2) without cancellation: with q = (1-c)/(1+c), 1 - q^2 = 4c / (1+c)^2.
  # Floored at _ROUND_EPS: arctan(eps t)/eps and arctanh(eps t)/eps are then t to float
  # precision (their O(eps^2) terms vanish), which is the round (SIS) limit; no branches,
  # which also keeps this cheap to compile.
  eps = jnp.maximum(2.0 * jnp.sqrt(jnp.maximum(c, 0.25 * _ROUND_EPS**2)) / (1.0 + c), _ROUND_EPS)
  xr, yr = _rotate(x - center_x, y - center_y, phi)
  psi = _safe_norm(q * xr, yr)
  ax = b * jnp.arctan(eps * xr / psi) / eps
  ay = b * jnp.arctanh(eps * yr / psi) / eps
  return _rotate(ax, ay, -phi)


def external_shear(x, y, gamma1, gamma2, ra_0=0.0, dec_0=0.0):
  """External shear, lenstronomy 'SHEAR': alpha = (g1 x + g2 y, g2 x - g1 y)."""
  dx, dy = x - ra_0, y - dec_0
  return gamma1 * dx + gamma2 * dy, gamma2 * dx - gamma1 * dy


def point_mass(x, y, theta_e, center_x=0.0, center_y=0.0):
  """Point mass, lenstronomy 'POINT_MASS': alpha = theta_E^2 (x, y) / r^2."""
  dx, dy = x - center_x, y - center_y
  r2 = jnp.maximum(dx * dx + dy * dy, _R_FLOOR**2)
  scale = theta_e * theta_e / r2
  return scale * dx, scale * dy


def sum_over_components(profile, x, y, params, method='auto', unroll=4):
  """Sum of `profile(x, y, **p)` over the trailing axis [N] of every array in `params`.

  'broadcast' evaluates all N at once on [..., N] arrays and reduces: one fused kernel on
  accelerators; on CPU XLA materialises the [H, W, N] intermediates, so 'scan'
  accumulates one component at a time instead (lax.scan, unrolled).
  'auto' picks 'scan' on CPU and 'broadcast' elsewhere. Both are jit/vmap/grad-able.
  """
  if method == 'auto':
    method = 'scan' if jax.default_backend() == 'cpu' else 'broadcast'
  if method == 'broadcast':
    ax, ay = profile(x[..., None], y[..., None], **params)
    return ax.sum(-1), ay.sum(-1)
  if method != 'scan':
    raise ValueError(f'unknown method {method!r}; use auto, scan or broadcast')
  shape = jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y))
  zeros = jnp.zeros(shape, jnp.result_type(x, y, *params.values()))

  def add_one(carry, p):
    dx, dy = profile(x, y, **p)
    return (carry[0] + dx, carry[1] + dy), None

  # Components on the leading axis for scan: [..., N] -> [N, ...].
  stacked = {k: jnp.moveaxis(jnp.asarray(v), -1, 0) for k, v in params.items()}
  (ax, ay), _ = jax.lax.scan(add_one, (zeros, zeros), stacked, unroll=unroll)
  return ax, ay


def point_masses(x, y, theta_e, center_x, center_y, method='auto'):
  """Sum of point masses; theta_e/centres have a trailing axis [N] (zero theta_e = absent).

  x, y are the image-plane coordinates (e.g. [H, W]); the parameters are [N]. Used for
  CDM subhalos and the published vortex (a string of point masses).
  """
  params = {'theta_e': theta_e, 'center_x': center_x, 'center_y': center_y}
  params = dict(zip(params, jnp.broadcast_arrays(*params.values())))
  return sum_over_components(point_mass, x, y, params, method)


def _cot_pi(z):
  """cot(pi z) for complex z, without overflow at large |Im z|.

  cot(t) = i (q + 1) / (q - 1) with q = exp(2 i t); for Im z >= 0, |q| <= 1. Lower
  half-plane by conjugate symmetry.
  """
  upper = jnp.imag(z) >= 0
  zu = jnp.where(upper, z, jnp.conj(z))
  q = jnp.exp(2j * jnp.pi * zu)
  cot = 1j * (q + 1.0) / (q - 1.0)
  return jnp.where(upper, cot, jnp.conj(cot))


def _digamma_complex(z, shift_steps=10, large=10.0):
  """psi(z) for complex z with Re z >= 0.5 (upward recurrence, then the asymptotic series)."""
  # psi(z) = psi(z + n) - sum_{j<n} 1/(z + j): shift until |z| >= `large`.
  acc = jnp.zeros_like(z)
  for _ in range(shift_steps):
    small = jnp.abs(z) < large
    acc = acc - jnp.where(small, 1.0 / z, 0.0)
    z = jnp.where(small, z + 1.0, z)
  inv = 1.0 / z
  inv2 = inv * inv
  series = (jnp.log(z) - 0.5 * inv
            - inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 / 240.0))))
  return series + acc


def _harmonic_window(a, n):
  """sum_{k=0}^{n-1} 1 / (a - k) for complex a, = psi(a + 1) - psi(a + 1 - n).

  Arguments with Re < 0.5 are reflected (psi(z) = psi(1 - z) - pi cot(pi z)); the cot
  terms cancel exactly when both are reflected (cot has period pi) and otherwise reduce
  to pi cot(pi a), evaluated on a's fractional part for float32 accuracy.
  """
  reflect_hi = jnp.real(a) + 1.0 < 0.5
  reflect_lo = jnp.real(a) + 1.0 - n < 0.5
  psi_hi = _digamma_complex(jnp.where(reflect_hi, -a, a + 1.0))
  psi_lo = _digamma_complex(jnp.where(reflect_lo, n - a, a + 1.0 - n))
  a_frac = a - jnp.round(jnp.real(a))
  cot_term = jnp.where(reflect_lo & ~reflect_hi, jnp.pi * _cot_pi(a_frac), 0.0)
  return psi_hi - psi_lo + cot_term


def point_mass_string(x, y, theta_e_total, half_length, angle, num_points=100,
                      center_x=0.0, center_y=0.0, method='sum'):
  """The published axion vortex: `num_points` equal point masses evenly on a segment.

  Total mass corresponds to Einstein radius theta_e_total (theta_E^2 adds linearly with
  mass), spread over [-L, L] along direction `angle` through (center_x, center_y), like
  `DeepLens.make_vortex` (np.linspace(-L, L, num_points)).

  method='sum' (default) adds the N point masses (`point_masses`, scan on CPU).
  method='digamma' sums them in closed form: with complex coordinates,
  alpha = theta^2 / conj(z - z_k), and for evenly spaced z_k = c + u (k h - L),
    sum_k 1/(w - (k h - L)) = [psi(a + 1) - psi(a + 1 - N)] / h,  a = (w + L) / h,
  w = conj(u) (z - c) (the digamma recurrence). Its cost does not grow with N.
  """
  if method == 'sum':
    s = jnp.linspace(-1.0, 1.0, num_points) * jnp.asarray(half_length)[..., None]
    angle_ = jnp.asarray(angle)[..., None]
    cx = jnp.asarray(center_x)[..., None] + s * jnp.cos(angle_)
    cy = jnp.asarray(center_y)[..., None] + s * jnp.sin(angle_)
    theta_each = jnp.asarray(theta_e_total)[..., None] / jnp.sqrt(float(num_points))
    return point_masses(x, y, jnp.broadcast_to(theta_each, cx.shape), cx, cy)
  if method != 'digamma':
    raise ValueError(f'unknown method {method!r}; use digamma or sum')
  half_length = jnp.maximum(half_length, _R_FLOOR)
  spacing = 2.0 * half_length / (num_points - 1)
  along, across = _rotate(x - center_x, y - center_y, angle)
  a = (along + half_length) / spacing + 1j * (across / spacing)
  # A pixel exactly on a mass is a pole; nudge it off like the point mass's radius floor.
  a = a + 1j * (_R_FLOOR / spacing) * (across == 0)
  total = _harmonic_window(a, num_points) / spacing
  theta2_each = theta_e_total * theta_e_total / num_points
  # alpha (rotated frame) = theta^2 * conj(sum 1/(w - s_k)); rotate back to the sky.
  return _rotate(theta2_each * jnp.real(total), -theta2_each * jnp.imag(total), -angle)


def uniform_line_mass(x, y, theta_e_total, half_length, angle, center_x=0.0, center_y=0.0):
  """A straight segment of uniform surface mass: the continuum limit of the vortex string.

  With a = coordinate along the line, b = across it, lambda = theta_e_total^2 / (2L):
    alpha_a = lambda/2 * ln(((a+L)^2 + b^2) / ((a-L)^2 + b^2))
    alpha_b = lambda * [atan2(b, a-L) - atan2(b, a+L)]   (the angle the segment subtends).
  Singular (logarithmically / by a jump) on the segment itself.
  """
  ar, br = _rotate(x - center_x, y - center_y, angle)
  half_length = jnp.maximum(half_length, _R_FLOOR)
  lam = theta_e_total * theta_e_total / (2.0 * half_length)
  floor2 = _R_FLOOR**2
  d_plus = jnp.maximum((ar + half_length)**2 + br * br, floor2)
  d_minus = jnp.maximum((ar - half_length)**2 + br * br, floor2)
  alpha_a = 0.5 * lam * (jnp.log(d_plus) - jnp.log(d_minus))
  alpha_b = lam * (jnp.arctan2(br, ar - half_length) - jnp.arctan2(br, ar + half_length))
  return _rotate(alpha_a, alpha_b, -angle)


# --- NFW family (lenstronomy 'NFW' and 'TNFW': Rs and alpha_Rs in arcsec) ---------------

def _nfw_rho0(rs, alpha_rs):
  """lenstronomy's alpha2rho0: alpha_Rs = 4 Rs^2 rho0 (1 + ln 1/2)."""
  return alpha_rs / (4.0 * rs * rs * (1.0 + jnp.log(0.5)))


def _nfw_arc(x):
  """arccosh(1/x)/sqrt(1-x^2) for x<1, arccos(1/x)/sqrt(x^2-1) for x>1, 1 at x=1.

  Both branches are one analytic function of s2 = 1 - x^2. It is written as
  arctanh(t)/t or arctan(t)/t with t = sqrt|(1-x)(1+x)| (no cancellation), and as a
  series in s2 near x=1, where lenstronomy's form loses precision (0/0).
  """
  s2 = (1.0 - x) * (1.0 + x)
  near_one = jnp.abs(s2) < 1e-4
  # sqrt only of values away from 0, so its gradient is finite at x = 1 too.
  t_safe = jnp.sqrt(jnp.where(near_one, 0.25, jnp.abs(s2)))
  # For x << 1, t rounds to 1 in float32 and arctanh(t) overflows: use arccosh(1/x).
  x_safe = jnp.where(near_one, 0.5, x)
  f_small_x = jnp.log((1.0 + t_safe) / x_safe) / t_safe
  f_lo = jnp.where(x < 0.5, f_small_x, jnp.arctanh(jnp.minimum(t_safe, 0.999)) / t_safe)
  f_hi = jnp.arctan(t_safe) / t_safe
  f_series = 1.0 + s2 / 3.0 + s2 * s2 / 5.0
  return jnp.where(near_one, f_series, jnp.where(x < 1.0, f_lo, f_hi))


def _nfw_g(x):
  """lenstronomy NFW._g: ln(x/2) + F(x) with F the arccosh/arccos term."""
  return jnp.log(x / 2.0) + _nfw_arc(x)


def nfw(x, y, Rs, alpha_Rs, center_x=0.0, center_y=0.0):  # pylint: disable=invalid-name
  """Navarro-Frenk-White halo, lenstronomy 'NFW' (spherical), angular units."""
  dx, dy = x - center_x, y - center_y
  rs = jnp.maximum(Rs, 1e-7)
  rho0 = _nfw_rho0(rs, alpha_Rs)
  r = _safe_norm(dx, dy, 1e-8)
  u = jnp.maximum(r / rs, 1e-6)
  a = 4.0 * rho0 * rs * _nfw_g(u) / (u * u)
  return a * dx, a * dy


def _nfw_F(x):  # pylint: disable=invalid-name
  """The TNFW paper's F(x): arctanh(sqrt(1-x^2))/sqrt(1-x^2) (x<1), arctan-form (x>1)."""
  return _nfw_arc(x)  # Same analytic function: arccosh(1/x) = arctanh(sqrt(1-x^2)).


def _tnfw_g(x, tau):
  """Baltz, Marshall & Oguri (2009) enclosed-mass function of the truncated NFW."""
  t2 = tau * tau
  root = jnp.sqrt(t2 + x * x)
  big_l = jnp.log(x / (tau + root))
  return t2 / (t2 + 1.0)**2 * (
      (t2 + 1.0 + 2.0 * (x * x - 1.0)) * _nfw_F(x) + tau * jnp.pi + (t2 - 1.0) * jnp.log(tau)
      + root * (-jnp.pi + big_l * (t2 - 1.0) / tau))


def tnfw(x, y, Rs, alpha_Rs, r_trunc, center_x=0.0, center_y=0.0):  # pylint: disable=invalid-name
  """Truncated NFW, lenstronomy 'TNFW' (BMO09, n=2 truncation), angular units.

  Like lenstronomy, alpha_Rs normalises the untruncated profile (rho0 ignores r_trunc),
  radii are floored at 1e-3 Rs.
  """
  dx, dy = x - center_x, y - center_y
  rho0 = _nfw_rho0(Rs, alpha_Rs)
  r = jnp.maximum(_safe_norm(dx, dy), 1e-3 * Rs)
  u = jnp.maximum(r / Rs, 1e-3)
  tau = r_trunc / Rs
  a = 4.0 * rho0 * Rs * _tnfw_g(u, tau) / (u * u)
  return a * dx, a * dy


PROFILES = {
    'SIE': sie,
    'SIS': sis,
    'SHEAR': external_shear,
    'POINT_MASS': point_mass,
    'NFW': nfw,
    'TNFW': tnfw,
    'LINE_MASS': uniform_line_mass,
    'POINT_MASS_STRING': point_mass_string,
}
