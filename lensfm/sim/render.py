"""Noise-free rendering of one lens scene from a fixed-shape parameter dict.

Scene parameters (one image; the recipes vmap over a leading batch axis):
  'lens':          SIE {'theta_e', 'e1', 'e2', 'center_x', 'center_y'} (scalars)
  'shear':         {'gamma1', 'gamma2'}
  'point_masses':  optional {'theta_e', 'center_x', 'center_y'} each [N]; theta_e = 0 is
                   absent (CDM subhalos).
  'vortex':        optional {'theta_e_total', 'half_length', 'angle', 'center_x',
                   'center_y'}: the published vortex, VORTEX_POINTS equal point masses
                   evenly on a segment (summed in closed form); theta_e_total = 0 is absent.
  'line_mass':     optional {'theta_e_total', 'half_length', 'angle', 'center_x',
                   'center_y'}: a uniform-line vortex; theta_e_total = 0 is absent.
  'tnfw':          optional {'Rs', 'alpha_Rs', 'r_trunc', 'center_x', 'center_y'} each [M].
  'deflection_scale': scalar multiplying every deflection (reduced-deflection convention).
  'source':        Sersic dict with 'amp' [C, K] (per band) and the geometry keys [K].
  'lens_light':    optional Sersic dict, same layout.
  'psf_sigma':     [C] PSF sigma in arcsec per band.

The pytree structure (which optional keys exist, N, M, K, C) is static: it is fixed by
the recipe, so one jit compiles a batch that can mix every class.
"""
import functools

import jax
import jax.numpy as jnp

from lensfm.sim import instrument as instrument_lib
from lensfm.sim import light
from lensfm.sim import profiles

# Point masses in the published vortex (DeepLens.make_vortex's `res`).
VORTEX_POINTS = 100


def deflection(params, x, y):
  """Total deflection (alpha_x, alpha_y) at x, y of the scene's mass components."""
  lens = params['lens']
  ax, ay = profiles.sie(x, y, lens['theta_e'], lens['e1'], lens['e2'], lens['center_x'],
                        lens['center_y'])
  sx, sy = profiles.external_shear(x, y, params['shear']['gamma1'], params['shear']['gamma2'])
  ax, ay = ax + sx, ay + sy
  if 'point_masses' in params and params['point_masses']['theta_e'].shape[-1]:
    pm = params['point_masses']
    px, py = profiles.point_masses(x, y, pm['theta_e'], pm['center_x'], pm['center_y'])
    ax, ay = ax + px, ay + py
  if 'vortex' in params:
    v = params['vortex']
    vx, vy = profiles.point_mass_string(x, y, v['theta_e_total'], v['half_length'], v['angle'],
                                        VORTEX_POINTS, v['center_x'], v['center_y'])
    ax, ay = ax + vx, ay + vy
  ax, ay = add_line_mass(params, x, y, ax, ay)
  if 'tnfw' in params and params['tnfw']['Rs'].shape[-1]:
    tx, ty = profiles.sum_over_components(profiles.tnfw, x, y, params['tnfw'])
    ax, ay = ax + tx, ay + ty
  scale = params.get('deflection_scale', 1.0)
  return ax * scale, ay * scale


def _banded_light(light_params, x, y):
  """Surface brightness [H, W, C]: unit-amplitude profiles [H, W, K] mixed by amp [C, K]."""
  geometry = dict(light_params, amp=jnp.ones_like(light_params['R_sersic']))
  per_component = light.sersic_ellipse(x[..., None], y[..., None], **geometry)
  return jnp.einsum('hwk,ck->hwc', per_component, light_params['amp'])


def surface_brightness(params, x, y):
  """Lensed source plus lens light, [H, W, C] surface brightness at image-plane x, y."""
  ax, ay = deflection(params, x, y)
  image = _banded_light(params['source'], x - ax, y - ay)
  if 'lens_light' in params:
    image = image + _banded_light(params['lens_light'], x, y)
  return image


def render(params, inst: instrument_lib.Instrument, max_psf_sigma=None):
  """Noise-free image [H, W, C] in counts/s per pixel (lenstronomy ImageModel.image units).

  Surface brightness at (sub-)pixel centres, averaged to pixels, times pixel area, then
  convolved with the truncated Gaussian PSF. max_psf_sigma (arcsec, static) sizes the
  kernel when params['psf_sigma'] varies per image; by default the instrument's sigma.
  """
  x, y = instrument_lib.pixel_grid(inst.num_pix, inst.pixel_scale, inst.supersampling)
  # dtype=float: float32 normally, float64 under jax.enable_x64.
  image = surface_brightness(params, jnp.asarray(x, dtype=float), jnp.asarray(y, dtype=float))
  image = instrument_lib.downsample(image, inst.supersampling) * inst.pixel_scale**2
  max_sigma_pix = (max_psf_sigma or inst.psf_sigma) / inst.pixel_scale
  max_radius = max(instrument_lib.gaussian_radius_pixels(max_sigma_pix, inst.psf_truncation), 1)
  sigma_pix = params['psf_sigma'] / inst.pixel_scale
  return instrument_lib.convolve_gaussian(image, sigma_pix, inst.psf_truncation, max_radius)


def _turn(x, y, cos, sin):
  return cos * x - sin * y, sin * x + cos * y


DEEPLENSE_PARTS = ('lens', 'point_masses', 'vortex', 'line_mass', 'tnfw', 'source', 'lens_light')


def rotate_scene(params, angle, parts=DEEPLENSE_PARTS):
  """The scene rigidly rotated counter-clockwise by `angle` (radians) about the optical
  axis: the centre of every component named in `parts` turns, ellipticities and shear
  (spin 2) by 2 angle, line-like substructure angles by angle. Rendering it gives the
  rotated sky, not a resampled image.
  """
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  cos2, sin2 = jnp.cos(2 * angle), jnp.sin(2 * angle)
  out = dict(params)
  for name in parts:
    if name not in params:
      continue
    part = dict(params[name])
    part['center_x'], part['center_y'] = _turn(part['center_x'], part['center_y'], cos, sin)
    if 'e1' in part:
      part['e1'], part['e2'] = _turn(part['e1'], part['e2'], cos2, sin2)
    if 'angle' in part:
      part['angle'] = part['angle'] + angle
    out[name] = part
  shear = dict(params['shear'])
  shear['gamma1'], shear['gamma2'] = _turn(shear['gamma1'], shear['gamma2'], cos2, sin2)
  out['shear'] = shear
  return out


# Optional deflection components and the leaf whose zeros mean "absent" (their deflection
# is then exactly zero): the DeepLense CDM point masses and the 100-mass vortex.
ABSENT_WHEN_ZERO = (('point_masses', 'theta_e'), ('vortex', 'theta_e_total'))


def render_skipping_absent(render_one, params, group=16):
  """jax.vmap(render_one)(params) for a batch [N, ...], equal image for image, with each
  component of ABSENT_WHEN_ZERO left out of the groups of `group` examples that all lack
  it: examples are sorted by the components they have and each group is rendered by the
  branch without the others (lax.switch in lax.map, so skipped work is not done, unlike a
  vmapped where). For hosts: the groups run one after another, not sharded.
  """
  optional = [(name, leaf) for name, leaf in ABSENT_WHEN_ZERO if name in params]
  n = jax.tree.leaves(params)[0].shape[0]
  if not optional or n % group:
    return jax.vmap(render_one)(params)
  present = jnp.stack([jnp.any(params[name][leaf].reshape(n, -1) != 0, axis=1)
                       for name, leaf in optional], axis=1)
  code = (present * (1 << jnp.arange(len(optional)))).sum(axis=1)
  order = jnp.argsort(code, stable=True)
  grouped = jax.tree.map(lambda v: v[order].reshape((n // group, group) + v.shape[1:]), params)
  group_code = jax.lax.reduce(code[order].reshape(n // group, group), 0, jax.lax.bitwise_or, (1,))

  def keeping(kept):  # Branch `kept`: bit i set = optional component i is rendered.
    drop = {name for i, (name, _) in enumerate(optional) if not kept >> i & 1}
    return lambda p: jax.vmap(render_one)({k: v for k, v in p.items() if k not in drop})

  branches = [keeping(kept) for kept in range(1 << len(optional))]
  images = jax.lax.map(lambda args: jax.lax.switch(args[1], branches, args[0]),
                       (grouped, group_code))
  images = images.reshape((n,) + images.shape[2:])
  return images[jnp.argsort(order)]


def add_line_mass(params, x, y, ax, ay):
  """(ax, ay) plus the deflection of params['line_mass'], when the scene has one."""
  if 'line_mass' not in params:
    return ax, ay
  lm = params['line_mass']
  lx, ly = profiles.uniform_line_mass(x, y, lm['theta_e_total'], lm['half_length'],
                                      lm['angle'], lm['center_x'], lm['center_y'])
  return ax + lx, ay + ly


# --- sums over the components that are present -------------------------------------------

def sum_present(profile, x, y, params, leaf='alpha_Rs', chunk=8):
  """`profiles.sum_over_components(profile, x, y, params)` for components [N] of which
  those with params[leaf] == 0 are absent (deflect exactly 0), evaluating only the present
  ones: they are compacted (slot order kept) and summed `chunk` at a time in a loop whose
  length is set by how many are present. Under vmap the batch is folded into one call
  (custom_vmap), so a batch costs the total number of present components over its
  examples, not batch x N (a vmapped loop would step every example as often as the
  fullest one). Absent slots are masked out, so their other leaves need not be finite
  (except in the fallback below).
  x, y: one grid shared by the batch; a batched grid falls back to the dense sum.
  Forward only (no gradients): for renderers, not for fits.
  """
  summer = _present_summer(profile, leaf, int(chunk))
  rows = jax.tree.map(lambda v: jnp.asarray(v)[None], params)
  ax, ay = summer(rows, jnp.asarray(x), jnp.asarray(y))
  return ax[0], ay[0]


def _sum_present_rows(profile, leaf, chunk, params, x, y):
  """(ax, ay) [R, *x.shape] of params [R, N]: the loop of `sum_present` over all rows."""
  rows, num = params[leaf].shape
  flat = {k: jnp.asarray(v).reshape(-1) for k, v in params.items()}
  present = flat[leaf] != 0
  count = present.sum()
  order = jnp.argsort(jnp.where(present, 0, 1), stable=True)
  order = jnp.concatenate([order, jnp.zeros((chunk,), order.dtype)])   # tail of the last chunk
  shape = jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y))
  dtype = jnp.result_type(x, y, *flat.values())
  expand = (slice(None),) + (None,) * len(shape)

  def add_chunk(i, acc):
    idx = jax.lax.dynamic_slice(order, (i * chunk,), (chunk,))
    valid = (i * chunk + jnp.arange(chunk)) < count
    part = {k: v[idx][expand] for k, v in flat.items()}
    ax, ay = profile(x[None], y[None], **part)
    mask = valid[expand]
    row = idx // num
    return (acc[0].at[row].add(jnp.where(mask, ax, 0.0).astype(dtype)),
            acc[1].at[row].add(jnp.where(mask, ay, 0.0).astype(dtype)))

  zeros = jnp.zeros((rows,) + shape, dtype)
  return jax.lax.fori_loop(0, (count + chunk - 1) // chunk, add_chunk, (zeros, zeros))


@functools.lru_cache(maxsize=None)
def _present_summer(profile, leaf, chunk):
  """custom_vmap fn(params [R, N], x, y) -> (ax, ay) [R, ...] for `sum_present`."""

  @jax.custom_batching.custom_vmap
  def summer(params, x, y):
    return _sum_present_rows(profile, leaf, chunk, params, x, y)

  @summer.def_vmap
  def summer_vmap(axis_size, in_batched, params, x, y):
    params_batched, x_batched, y_batched = in_batched
    params = jax.tree.map(
        lambda v, b: v if b else jnp.broadcast_to(v, (axis_size,) + v.shape),
        params, params_batched)
    if x_batched or y_batched:   # a grid per example: the dense sum per example and row
      x = x if x_batched else jnp.broadcast_to(x, (axis_size,) + x.shape)
      y = y if y_batched else jnp.broadcast_to(y, (axis_size,) + y.shape)
      dense = lambda p, xi, yi: jax.vmap(
          lambda q: profiles.sum_over_components(profile, xi, yi, q))(p)
      return jax.vmap(dense)(params, x, y), (True, True)
    rows = params[leaf].shape[1]
    folded = jax.tree.map(lambda v: v.reshape((axis_size * rows,) + v.shape[2:]), params)
    ax, ay = summer(folded, x, y)
    unfold = lambda a: a.reshape((axis_size, rows) + a.shape[1:])
    return (unfold(ax), unfold(ay)), (True, True)

  return summer


def map_present(fn, present, operand, shared, chunk=8):
  """fn(operand, shared) where `present`, else zeros of its shape: under vmap only the
  present examples are computed (compacted, `chunk` at a time, in a loop as long as they
  need; the batch folded into one call by custom_vmap, as `sum_present`). `shared` (e.g.
  the pixel grid) is the same for every example; batched, it falls back to computing
  every example. fn must be a stable (module-level) function. Forward only.
  """
  mapper = _present_mapper(fn, int(chunk))
  rows = jax.tree.map(lambda v: jnp.asarray(v)[None], operand)
  out = mapper(jnp.asarray(present, bool)[None], rows, shared)
  return jax.tree.map(lambda v: v[0], out)


def _map_present_rows(fn, chunk, present, operand, shared):
  rows = present.shape[0]
  one = jax.tree.map(lambda v: v[0], operand)
  out_shape = jax.eval_shape(lambda o: fn(o, shared), one)
  count = present.sum()
  order = jnp.argsort(jnp.where(present, 0, 1), stable=True)
  order = jnp.concatenate([order, jnp.zeros((chunk,), order.dtype)])

  def add_chunk(i, acc):
    idx = jax.lax.dynamic_slice(order, (i * chunk,), (chunk,))
    valid = (i * chunk + jnp.arange(chunk)) < count
    part = jax.tree.map(lambda v: v[idx], operand)
    res = jax.vmap(lambda o: fn(o, shared))(part)
    return jax.tree.map(
        lambda a, r: a.at[idx].add(jnp.where(valid.reshape((chunk,) + (1,) * (r.ndim - 1)),
                                             r, 0).astype(a.dtype)), acc, res)

  zeros = jax.tree.map(lambda s: jnp.zeros((rows,) + s.shape, s.dtype), out_shape)
  return jax.lax.fori_loop(0, (count + chunk - 1) // chunk, add_chunk, zeros)


@functools.lru_cache(maxsize=None)
def _present_mapper(fn, chunk):
  """custom_vmap fn(present [R], operand [R, ...], shared) for `map_present`."""

  @jax.custom_batching.custom_vmap
  def mapper(present, operand, shared):
    return _map_present_rows(fn, chunk, present, operand, shared)

  @mapper.def_vmap
  def mapper_vmap(axis_size, in_batched, present, operand, shared):
    present_batched, operand_batched, shared_batched = in_batched
    grow = lambda v, b: v if b else jnp.broadcast_to(v, (axis_size,) + v.shape)
    present = grow(present, present_batched)
    operand = jax.tree.map(grow, operand, operand_batched)
    if any(jax.tree.leaves(shared_batched)):   # per-example shared: compute every example
      shared = jax.tree.map(grow, shared, shared_batched)
      def dense(p, o, s):
        res = jax.vmap(lambda oo: fn(oo, s))(o)
        return jax.tree.map(
            lambda r: jnp.where(p.reshape(p.shape + (1,) * (r.ndim - 1)), r, 0), res)
      out = jax.vmap(dense)(present, operand, shared)
      return out, jax.tree.map(lambda _: True, out)
    rows = present.shape[1]
    fold = lambda v: v.reshape((axis_size * rows,) + v.shape[2:])
    out = mapper(fold(present), jax.tree.map(fold, operand), shared)
    out = jax.tree.map(lambda v: v.reshape((axis_size, rows) + v.shape[1:]), out)
    return out, jax.tree.map(lambda _: True, out)

  return mapper
