"""Normalisations and lensing-safe augmentations, written once in jax.numpy.

Everything here is a pure function of jax arrays, so the same code runs
  * on device, inside the jitted batch functions of `sim_source` and `pipeline`;
  * in other engineers' objectives (e.g. contrastive views), per example, with
    a key;
  * on the host: call it on numpy arrays placed on a CPU device
    (`jax.device_put(x, jax.devices('cpu')[0])`); jax runs a computation where
    its inputs live.

Per-example functions take `(key, image)` with `image` float [H, W, C] and
return an image of the same shape; the batch helpers (`batch_transform`,
`make_batch_transform`) vmap them over a leading batch axis with one key per
example.

Normalisations (`normalize(image, method, stats)`):
  'zscore':      (x - mean) / std, per image over all pixels and channels (keeps the
                 colour ratios of multi-band images): zero mean, unit variance. The
                 default (DEFAULT_NORMALIZE): a ViT's patch embedding needs inputs of
                 unit scale (on 'minmax' images the position embeddings outweigh
                 the image content).
  'minmax':      (x - min) / (max - min), per image over all pixels and channels
                 (keeps the colour ratios of multi-band images) -> [0, 1].
  'asinh':       asinh(x / (a * peak)) / asinh(1 / a), peak = max |x| of the
                 image, a = `ASINH_SOFTENING`: linear below a * peak and
                 logarithmic above, so faint arcs a few per cent of the peak get
                 a large share of the output range; the peak maps to 1.
  'standardize': (x - mean) / std with per-channel dataset statistics
                 (`stats = {'mean': [C], 'std': [C]}`).
  'none':        unchanged.
`denormalize(values, image, method, stats)` maps values in the normalised units of
`image` (e.g. its super-resolved version) back to the units `image` came in.

Augmentations (names used by `config.data.augment`), all of which keep the
physics of a lens (the class and the label keys do not change under them):
  'rot90':  a random multiple of 90 degrees (with 'flip': the dihedral group D4);
            needs square images.
  'flip':   random left-right and up-down flips, each with probability 1/2.
  'rotate': rotation about the image centre by a uniform angle in [-pi, pi),
            bilinear interpolation, reflecting boundary (the sky background
            continues instead of black corners).
  'shift':  a sub-pixel shift, uniform in [-MAX_SHIFT_PX, MAX_SHIFT_PX] per axis
            (the lens centre is known only to a pixel in real data).
  'blur':   Gaussian PSF blur with sigma uniform in [0, MAX_BLUR_SIGMA_PX] px.
  'noise':  fresh Gaussian noise with sigma = level * max |x|, level log-uniform
            in [MIN_NOISE_LEVEL, MAX_NOISE_LEVEL] (varied depth/exposure).
  'scale':  intensity scaling by a log-uniform factor in
            [MIN_INTENSITY_SCALE, MAX_INTENSITY_SCALE].

`make_transform` composes them in the order physics applies them: geometry
(sky) -> PSF blur -> detector noise -> normalisation -> intensity scaling. The
scaling comes after the normalisation because a per-image normalisation such as
'minmax' would undo it; 'rotate' and 'shift' together interpolate once, not
twice, so the image is not blurred twice.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from lensfm import errors

NORMALIZATIONS = ("zscore", "minmax", "asinh", "standardize", "none")
DEFAULT_NORMALIZE = "zscore"
AUGMENTATIONS = ("rot90", "flip", "rotate", "shift", "noise", "blur", "scale")

ASINH_SOFTENING = 0.02
MAX_SHIFT_PX = 1.0
MAX_BLUR_SIGMA_PX = 1.0
BLUR_RADIUS_PX = 4  # Kernel of 2 * 4 + 1 taps: 4 sigma of the widest blur.
MIN_NOISE_LEVEL = 1e-3
MAX_NOISE_LEVEL = 5e-2
MIN_INTENSITY_SCALE = 0.8
MAX_INTENSITY_SCALE = 1.25
_EPS = 1e-12

ExampleFn = Callable[[jax.Array, jax.Array], jax.Array]


# -- normalisations ----------------------------------------------------------------


def zscore(image: jax.Array) -> jax.Array:
  """Scales one image to zero mean and unit variance (a constant image becomes 0)."""
  mean = jnp.mean(image)
  std = jnp.sqrt(jnp.mean(jnp.square(image - mean)))
  return (image - mean) / jnp.maximum(std, _EPS)


def minmax(image: jax.Array) -> jax.Array:
  """Scales one image to [0, 1] (a constant image becomes 0)."""
  lo, hi = jnp.min(image), jnp.max(image)
  return (image - lo) / jnp.maximum(hi - lo, _EPS)


def asinh_stretch(image: jax.Array,
                  softening: float = ASINH_SOFTENING) -> jax.Array:
  """Arcsinh stretch relative to the image's peak; the peak maps to 1."""
  peak = jnp.maximum(jnp.max(jnp.abs(image)), _EPS)
  return jnp.arcsinh(image / (softening * peak)) / math.asinh(1.0 / softening)


def standardize(image: jax.Array, mean, std) -> jax.Array:
  """(x - mean) / std with per-channel (or scalar) dataset statistics."""
  mean = jnp.asarray(mean, image.dtype)
  std = jnp.asarray(std, image.dtype)
  return (image - mean) / jnp.maximum(std, _EPS)


def check_normalize(method: str, stats: Optional[Mapping] = None) -> None:
  """Raises a clear ValueError for an unknown method or missing statistics."""
  if method not in NORMALIZATIONS:
    raise errors.UserError(f"config.data.normalize={method!r} is not one of "
                           f"{NORMALIZATIONS}.")
  if method == "standardize" and (
      not stats or "mean" not in stats or "std" not in stats):
    raise ValueError("normalize='standardize' needs dataset statistics "
                     "{'mean': [C], 'std': [C]}; got " f"{stats!r}.")


def normalize(image: jax.Array, method: str,
              stats: Optional[Mapping] = None) -> jax.Array:
  """Applies the normalisation named by `method` (see the module docstring)."""
  check_normalize(method, stats)
  if method == "zscore":
    return zscore(image)
  if method == "minmax":
    return minmax(image)
  if method == "asinh":
    return asinh_stretch(image)
  if method == "standardize":
    return standardize(image, stats["mean"], stats["std"])
  return image


def _affine(image: jax.Array, method: str, stats: Optional[Mapping]):
  """(offset, scale) with normalize(image) = (image - offset) / scale, for the affine
  methods ('asinh' is not affine: None)."""
  if method == "zscore":
    mean = jnp.mean(image)
    return mean, jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(image - mean))), _EPS)
  if method == "minmax":
    lo = jnp.min(image)
    return lo, jnp.maximum(jnp.max(image) - lo, _EPS)
  if method == "standardize":
    return (jnp.asarray(stats["mean"], jnp.float32),
            jnp.maximum(jnp.asarray(stats["std"], jnp.float32), _EPS))
  if method == "none":
    return 0., 1.
  return None


def _map_like(values: jax.Array, image: jax.Array, method: str, stats: Optional[Mapping],
              inverse: bool) -> jax.Array:
  """The map that normalises `image`, or its inverse, applied to `values`."""
  check_normalize(method, stats)
  image = jnp.asarray(image, jnp.float32)
  values = jnp.asarray(values, jnp.float32)
  affine = _affine(image, method, stats)
  if affine is None:  # asinh, relative to the image's peak.
    peak = jnp.maximum(jnp.max(jnp.abs(image)), _EPS)
    norm = math.asinh(1.0 / ASINH_SOFTENING)
    if inverse:
      return jnp.sinh(values * norm) * ASINH_SOFTENING * peak
    return jnp.arcsinh(values / (ASINH_SOFTENING * peak)) / norm
  offset, scale = affine
  return values * scale + offset if inverse else (values - offset) / scale


def denormalize(values: jax.Array, image: jax.Array, method: str,
                stats: Optional[Mapping] = None) -> jax.Array:
  """Inverse of `normalize(image, method, stats)` applied to `values`, which are in the
  normalised units of `image` (any spatial size: statistics are per image or dataset)."""
  return _map_like(values, image, method, stats, inverse=True)


def normalize_like(values: jax.Array, image: jax.Array, method: str,
                   stats: Optional[Mapping] = None) -> jax.Array:
  """`values` in the normalised units of `image`: the map `normalize(image, ...)` applies
  to `image`, applied to `values` (e.g. an LR image normalised by its HR image's map, so
  the pair keeps its relative brightness). The inverse of `denormalize`."""
  return _map_like(values, image, method, stats, inverse=False)


# -- geometry ----------------------------------------------------------------------


def rot90(image: jax.Array, k: jax.Array) -> jax.Array:
  """Rotates by k * 90 degrees (k traced, so no recompilation per k)."""
  if image.shape[0] != image.shape[1]:
    raise ValueError(f"rot90 needs square images; got shape {image.shape}.")
  branches = [functools.partial(jnp.rot90, k=i, axes=(0, 1)) for i in range(4)]
  return jax.lax.switch(jnp.asarray(k, jnp.int32) % 4, branches, image)


def random_rot90(key: jax.Array, image: jax.Array) -> jax.Array:
  return rot90(image, jax.random.randint(key, (), 0, 4))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
  """Flips left-right and up-down, each with probability 1/2."""
  flip_lr, flip_ud = jax.random.bernoulli(key, 0.5, (2,))
  image = jnp.where(flip_lr, image[:, ::-1], image)
  return jnp.where(flip_ud, image[::-1, :], image)


def affine_resample(image: jax.Array, angle: jax.Array,
                    shift: jax.Array) -> jax.Array:
  """Rotates by `angle` (radians, counter-clockwise) about the centre, then
  shifts by `shift` = (dy, dx) pixels, with one bilinear interpolation.

  Each output pixel p reads the input at R(-angle) (p - c - shift) + c; the
  boundary reflects, so corners are filled with sky, not zeros.
  """
  height, width = image.shape[:2]
  cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
  yy, xx = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  y, x = yy - cy - shift[0], xx - cx - shift[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  # Image rows grow downwards, so a counter-clockwise turn on the sky
  # flips the sign of the sine term compared with the textbook matrix.
  src_y = cos * y + sin * x + cy
  src_x = -sin * y + cos * x + cx

  def resample_channel(channel):
    return jax.scipy.ndimage.map_coordinates(
        channel, (src_y, src_x), order=1, mode="reflect")

  return jax.vmap(resample_channel, in_axes=-1, out_axes=-1)(image)


def random_angle(key: jax.Array) -> jax.Array:
  return jax.random.uniform(key, (), minval=-jnp.pi, maxval=jnp.pi)


def random_shift_px(key: jax.Array, max_shift: float = MAX_SHIFT_PX):
  return jax.random.uniform(key, (2,), minval=-max_shift, maxval=max_shift)


# -- instrument --------------------------------------------------------------------


def gaussian_kernel_1d(sigma: jax.Array,
                       radius: int = BLUR_RADIUS_PX) -> jax.Array:
  """Normalised Gaussian taps; sigma -> 0 gives the identity (a delta)."""
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  sigma = jnp.maximum(sigma, 1e-3)
  taps = jnp.exp(-0.5 * (offsets / sigma) ** 2)
  return taps / jnp.sum(taps)


def _convolve_axis(image: jax.Array, taps: jax.Array, axis: int) -> jax.Array:
  """'same' 1-D convolution along `axis` with reflected borders."""
  radius = (taps.shape[0] - 1) // 2
  pad = [(0, 0)] * image.ndim
  pad[axis] = (radius, radius)
  padded = jnp.pad(image, pad, mode="reflect")
  size = image.shape[axis]
  return sum(taps[i] * jax.lax.slice_in_dim(padded, i, i + size, axis=axis)
             for i in range(taps.shape[0]))


def gaussian_blur(image: jax.Array, sigma: jax.Array,
                  radius: int = BLUR_RADIUS_PX) -> jax.Array:
  """Separable Gaussian PSF blur of every channel (sigma in pixels)."""
  taps = gaussian_kernel_1d(sigma, radius)
  return _convolve_axis(_convolve_axis(image, taps, 0), taps, 1)


def random_blur(key: jax.Array, image: jax.Array,
                max_sigma: float = MAX_BLUR_SIGMA_PX) -> jax.Array:
  sigma = jax.random.uniform(key, (), minval=0.0, maxval=max_sigma)
  return gaussian_blur(image, sigma)


def _log_uniform(key, low: float, high: float) -> jax.Array:
  return jnp.exp(jax.random.uniform(key, (), minval=math.log(low),
                                    maxval=math.log(high)))


def random_noise(key: jax.Array, image: jax.Array,
                 min_level: float = MIN_NOISE_LEVEL,
                 max_level: float = MAX_NOISE_LEVEL) -> jax.Array:
  """Adds fresh Gaussian noise, sigma = level * peak, level log-uniform.

  Relative to the image's own peak so the same levels make sense for counts
  (Model I), fluxes and normalised images.
  """
  level_key, noise_key = jax.random.split(key)
  peak = jnp.max(jnp.abs(image))
  sigma = _log_uniform(level_key, min_level, max_level) * peak
  return image + sigma * jax.random.normal(noise_key, image.shape, image.dtype)


def random_intensity_scale(key: jax.Array, image: jax.Array,
                           low: float = MIN_INTENSITY_SCALE,
                           high: float = MAX_INTENSITY_SCALE) -> jax.Array:
  return image * _log_uniform(key, low, high)


# -- composition -------------------------------------------------------------------


def parse_augment(augment) -> tuple[str, ...]:
  """'rot90,flip' or ['rot90', 'flip'] -> ('rot90', 'flip'); '' -> ()."""
  if augment is None:
    return ()
  if isinstance(augment, str):
    names = [n.strip() for n in augment.split(",")]
  else:
    names = [str(n).strip() for n in augment]
  names = tuple(n for n in names if n)
  unknown = [n for n in names if n not in AUGMENTATIONS]
  if unknown:
    raise errors.UserError(f"config.data.augment has unknown augmentations {unknown}; "
                           f"known: {AUGMENTATIONS}.")
  return names


def make_transform(normalize_method: str = "none", augment=(),
                   stats: Optional[Mapping] = None) -> ExampleFn:
  """Returns fn(key, image) -> image: augmentations, then normalisation.

  Args:
    normalize_method: one of NORMALIZATIONS.
    augment: names from AUGMENTATIONS (comma-separated string or sequence).
      The order is fixed by physics (see the module docstring), not by the
      order given.
    stats: {'mean': [C], 'std': [C]} for 'standardize'.
  """
  names = set(parse_augment(augment))
  check_normalize(normalize_method, stats)
  geometric = names & {"rotate", "shift"}

  def transform(key: jax.Array, image: jax.Array) -> jax.Array:
    image = jnp.asarray(image, jnp.float32)
    keys = dict(zip(AUGMENTATIONS, jax.random.split(key, len(AUGMENTATIONS))))
    if "rot90" in names:
      image = random_rot90(keys["rot90"], image)
    if "flip" in names:
      image = random_flip(keys["flip"], image)
    if geometric:
      angle = random_angle(keys["rotate"]) if "rotate" in names else 0.0
      shift = (random_shift_px(keys["shift"]) if "shift" in names
               else jnp.zeros((2,)))
      image = affine_resample(image, jnp.asarray(angle, jnp.float32), shift)
    if "blur" in names:
      image = random_blur(keys["blur"], image)
    if "noise" in names:
      image = random_noise(keys["noise"], image)
    image = normalize(image, normalize_method, stats)
    if "scale" in names:
      image = random_intensity_scale(keys["scale"], image)
    return image

  return transform


def example_keys(key: jax.Array, batch_size: int) -> jax.Array:
  """One key per example (with partitionable threefry, splitting is local)."""
  return jax.random.split(key, batch_size)


def auto_axes_twin(sharding):
  """The same layout on a twin mesh whose axes are all Auto: a sharding
  constraint inside jit needs Auto axes, and computing with Explicit axes
  would make every op of the simulator spell out its output sharding."""
  mesh = sharding.mesh
  auto = jax.sharding.AxisType.Auto
  if all(t == auto for t in getattr(mesh, "axis_types", ())):
    return sharding
  twin = jax.sharding.Mesh(mesh.devices, mesh.axis_names,
                           axis_types=(auto,) * len(mesh.axis_names))
  return jax.sharding.NamedSharding(twin, sharding.spec)


def constrain_to(x: jax.Array, sharding) -> jax.Array:
  """Lays `x` out with `sharding` inside jit, for meshes of either axis type
  (the jit's out_shardings then gives the outputs the caller's sharding)."""
  if sharding is None:
    return x
  return jax.lax.with_sharding_constraint(x, auto_axes_twin(sharding))


def sharded_example_keys(key: jax.Array, batch_size: int,
                         sharding=None) -> jax.Array:
  """Per-example keys laid out like the batch, so that each device draws
  (and then computes) only its own examples."""
  return constrain_to(example_keys(key, batch_size), sharding)


def batch_transform(fn: ExampleFn, key: jax.Array,
                    images: jax.Array) -> jax.Array:
  """Applies a per-example fn(key, image) to [B, H, W, C] with B keys."""
  return jax.vmap(fn)(example_keys(key, images.shape[0]), images)


def make_batch_transform(normalize_method: str = "none", augment=(),
                         stats: Optional[Mapping] = None
                         ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Batch version of `make_transform`: fn(key, images [B,H,W,C])."""
  return functools.partial(batch_transform,
                           make_transform(normalize_method, augment, stats))


def image_statistics(images, axis: Sequence[int] = (0, 1, 2)) -> dict:
  """Per-channel mean/std of a batch [B, H, W, C], as lists (JSON-able)."""
  images = jnp.asarray(images, jnp.float32)
  return {"mean": [float(v) for v in jnp.mean(images, axis=tuple(axis))],
          "std": [float(v) for v in jnp.std(images, axis=tuple(axis))]}
