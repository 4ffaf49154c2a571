"""Lensing-aware augmented views for contrastive and self-distillation objectives.

Views are made on device inside the jitted loss, per example (vmapped) from the step's
key, so the accelerator never waits for a host pipeline and the views of example i
depend only on (step key, i), not on how the batch is split over devices. Each view is

  a centred crop (with a small jitter of its centre), rotated by any angle and shifted
  by a sub-pixel amount, resampled once to the view's size
  -> the lensing-safe augmentations of `lensfm.data.transforms` (rot90, flips, PSF
     blur, re-drawn noise at varied levels, normalisation, intensity scaling), with
     that module's building blocks and ranges and in its order (the order physics
     applies them).
The random choices of all views are drawn in one call (plus one normal field for the
noise) rather than one call per augmentation as `transforms.make_transform` does:
each random call site costs about a second of XLA compile time on CPU.

Why centred crops: the lens galaxy sits at the image centre and the arcs lie within an
Einstein radius or so of it, so a crop around the centre keeps the arcs, while the
random crops of natural-image methods would often cut them out and ask the network
to match a view with arcs to one without. The crop's size is the knob: global views
keep most of the field, DINO's local views keep the central region, where the arcs are.

config.objective.views fields (all optional; the objective's defaults otherwise):
  source: 'augment' (default: every view is an augmentation of the batch's 'image') or
    'same_lens': the two global views are two observations of the same lens by
    different instruments, 'image' and 'image_pair' of the 'sim_mixture' data source
    (config.data.views=2), with the augmentations below applied on top (usually none:
    the simulator already varied the source, instrument and orientation); DINO's local
    views are crops of the two observations in turn.
  augment: names from `transforms.AUGMENTATIONS`, comma-separated
    (default 'rotate,flip,shift,blur,noise,scale').
  normalize: normalisation applied after blur and noise (default 'none': the input
    batches are already normalised by the data pipeline).
  global_crop_scale: (lo, hi), the crop's side as a fraction of the image side, drawn
    uniformly per view (default (0.8, 1.0)).
  global_size: side of global views in pixels (default the image size).
  local_crop_scale: (lo, hi) for DINO's local views (default (0.45, 0.7): at Model II's
    0.101"/px the arcs lie ~8-10 px from the centre, so even the smallest crop of a
    64 px image, 29 px wide, keeps the ring with the largest jitter. A 32 px cut-out
    at the same pixel scale is half the field, and needs (0.8, 1.0)).
  local_size: side of local views (default half the image size).
  num_local_crops: local views per image (DINO only; default 4).
  crop_jitter: largest offset of a crop's centre from the image centre, as a fraction
    of the image side (default 0.03, ~2 px at 64 px: the lens centre is known to a
    pixel or so, and a couple of pixels of offset do not push the arcs out of the crop).
"""
import dataclasses
import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from lensfm.data import transforms
from lensfm import errors

DEFAULT_AUGMENT = "rotate,flip,shift,blur,noise,scale"
SOURCES = ("augment", "same_lens")
_FIELDS = ("source", "augment", "normalize", "global_crop_scale", "global_size", "local_crop_scale",
           "local_size", "num_local_crops", "crop_jitter")


@dataclasses.dataclass(frozen=True)
class Crop:
  """A centred crop of `scale` (lo, hi) times the image side, resized to `size` px."""
  size: int
  scale: tuple[float, float]
  jitter: float

  def is_identity(self, image_size: int) -> bool:
    return self.size == image_size and self.scale == (1., 1.) and self.jitter == 0.


@dataclasses.dataclass(frozen=True)
class ViewConfig:
  """config.objective.views, parsed and validated (see the module docstring)."""
  source: str
  augment: tuple[str, ...]
  normalize: str
  global_crop: Crop
  local_crop: Crop
  num_local_crops: int


def _scale_range(value, key: str) -> tuple[float, float]:
  try:
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise errors.UserError(f"config.objective.views.{key}={value!r}: expected (lo, hi).") from None
  if not 0. < lo <= hi <= 1.:
    raise errors.UserError(f"config.objective.views.{key}={value!r}: expected 0 < lo <= hi <= 1 "
                           f"(fractions of the image side).")
  return lo, hi


def _positive_int(value, key: str) -> int:
  if int(value) != value or value < 1:
    raise errors.UserError(f"config.objective.views.{key}={value!r}: expected a positive integer.")
  return int(value)


def parse_views(views_config: Optional[Mapping[str, Any]], image_size: int,
                **defaults) -> ViewConfig:
  """config.objective.views (+ the objective's `defaults`) -> ViewConfig, validated."""
  given = dict(views_config.to_dict() if hasattr(views_config, "to_dict")
               else (views_config or {}))
  unknown = sorted(set(given) - set(_FIELDS))
  if unknown:
    raise errors.UserError(
        f"config.objective.views has unknown fields {unknown}; known: {_FIELDS}.")
  v = {"source": "augment", "augment": DEFAULT_AUGMENT, "normalize": "none",
       "global_crop_scale": (0.8, 1.),
       "global_size": image_size, "local_crop_scale": (0.45, 0.7),
       "local_size": image_size // 2, "num_local_crops": 4, "crop_jitter": 0.03}
  v.update(defaults)
  v.update(given)
  if v["source"] not in SOURCES:
    raise errors.UserError(
        f"config.objective.views.source={v['source']!r} is not one of {SOURCES}.")
  augment = transforms.parse_augment(v["augment"])
  transforms.check_normalize(v["normalize"])
  jitter = float(v["crop_jitter"])
  if not 0. <= jitter <= 0.25:
    raise errors.UserError(f"config.objective.views.crop_jitter={jitter}: expected a fraction of "
                           f"the image side in [0, 0.25] (larger offsets would lose the arcs).")
  num_local = int(v["num_local_crops"])
  if num_local < 0:
    raise errors.UserError(f"config.objective.views.num_local_crops={num_local} must be >= 0.")
  return ViewConfig(
      source=v["source"], augment=augment, normalize=v["normalize"],
      global_crop=Crop(_positive_int(v["global_size"], "global_size"),
                       _scale_range(v["global_crop_scale"], "global_crop_scale"), jitter),
      local_crop=Crop(_positive_int(v["local_size"], "local_size"),
                      _scale_range(v["local_crop_scale"], "local_crop_scale"), jitter),
      num_local_crops=num_local)


# One uniform number per random choice of a view, drawn for the whole batch at once:
# every random call site costs about a second of XLA compilation on CPU, so drawing
# them together (plus one normal field for the noise) keeps the jitted step's compile
# time down. Partitionable threefry makes the draws independent of the sharding.
_CHOICES = ("crop_scale", "crop_dy", "crop_dx", "angle", "shift_dy", "shift_dx", "rot90",
            "flip_lr", "flip_ud", "blur_sigma", "noise_level", "intensity")
_U = {name: i for i, name in enumerate(_CHOICES)}


def crop_and_resize(image: jax.Array, scale: jax.Array, offset: jax.Array, size: int,
                    angle: jax.Array = 0., shift: jax.Array = (0., 0.)) -> jax.Array:
  """One bilinear resampling: a crop of side `scale` * H centred at the image centre +
  `offset` (dy, dx) px, rotated by `angle` (counter-clockwise, as
  `transforms.affine_resample`) and shifted by `shift` (dy, dx) px, to [size, size, C].
  Outside the image the edge pixels extend ('nearest'): at the corners of a rotated
  view this repeats the sky at the image border, whereas reflecting (as
  `transforms.affine_resample` does) mirrors the arcs themselves into the corners
  when the ring fills much of the field, as in 32 px Model II cut-outs."""
  height, width = image.shape[:2]
  step = scale * jnp.asarray(height, jnp.float32) / size  # Input pixels per output pixel.
  grid = (jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.) * step
  yy, xx = jnp.meshgrid(grid, grid, indexing="ij")
  y, x = yy - shift[0], xx - shift[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  # The same convention as transforms.affine_resample (rows grow downwards).
  src_y = cos * y + sin * x + (height - 1) / 2. + offset[0]
  src_x = -sin * y + cos * x + (width - 1) / 2. + offset[1]

  def resample_channel(channel):
    return jax.scipy.ndimage.map_coordinates(channel, (src_y, src_x), order=1, mode="nearest")

  return jax.vmap(resample_channel, in_axes=-1, out_axes=-1)(image)


def _log_uniform(u: jax.Array, low: float, high: float) -> jax.Array:
  return jnp.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _symmetric(u: jax.Array, half_width) -> jax.Array:
  return (2. * u - 1.) * half_width


def view_from_draws(u: jax.Array, noise: Optional[jax.Array], image: jax.Array,
                    view_config: ViewConfig, crop: Crop) -> jax.Array:
  """One view of `image` [H, W, C] given its uniform draws `u` [len(_CHOICES)] and a
  standard-normal field `noise` [size, size, C] (None without 'noise').

  Order as in `transforms.make_transform` (physics): geometry (crop, rotation, shift
  in one interpolation; then rot90/flips, exact) -> PSF blur -> detector noise ->
  normalisation -> intensity scaling; ranges are transforms' constants.
  """
  names = set(view_config.augment)
  h = image.shape[0]
  scale = crop.scale[0] + (crop.scale[1] - crop.scale[0]) * u[_U["crop_scale"]]
  offset = _symmetric(u[jnp.array([_U["crop_dy"], _U["crop_dx"]])], crop.jitter * h)
  angle = _symmetric(u[_U["angle"]], math.pi) if "rotate" in names else 0.
  shift = (_symmetric(u[jnp.array([_U["shift_dy"], _U["shift_dx"]])], transforms.MAX_SHIFT_PX)
           if "shift" in names else jnp.zeros((2,)))
  if not (crop.is_identity(h) and names.isdisjoint({"rotate", "shift"})):
    image = crop_and_resize(image, scale, offset, crop.size, angle, shift)
  if "rot90" in names:
    image = transforms.rot90(image, jnp.floor(4. * u[_U["rot90"]]).astype(jnp.int32))
  if "flip" in names:
    image = jnp.where(u[_U["flip_lr"]] < 0.5, image[:, ::-1], image)
    image = jnp.where(u[_U["flip_ud"]] < 0.5, image[::-1, :], image)
  if "blur" in names:
    image = transforms.gaussian_blur(image, u[_U["blur_sigma"]] * transforms.MAX_BLUR_SIGMA_PX)
  if "noise" in names:
    level = _log_uniform(u[_U["noise_level"]], transforms.MIN_NOISE_LEVEL,
                         transforms.MAX_NOISE_LEVEL)
    image = image + level * jnp.max(jnp.abs(image)) * noise
  image = transforms.normalize(image, view_config.normalize)
  if "scale" in names:
    image = image * _log_uniform(u[_U["intensity"]], transforms.MIN_INTENSITY_SCALE,
                                 transforms.MAX_INTENSITY_SCALE)
  return image


def make_views(key: jax.Array, images: jax.Array, view_config: ViewConfig, crop: Crop,
               num_views: int) -> jax.Array:
  """[B, H, W, C] -> [B, num_views, s, s, C]: independent views of every image.

  The views of an example stay next to it (view axis second), so reshaping to
  [B * num_views, ...] for the encoder keeps each device's examples on that device.
  """
  b, c = images.shape[0], images.shape[-1]
  u_key, noise_key = jax.random.split(key)
  u = jax.random.uniform(u_key, (b, num_views, len(_CHOICES)))
  noise = (jax.random.normal(noise_key, (b, num_views, crop.size, crop.size, c))
           if "noise" in view_config.augment else None)
  view = lambda u_, n_, image: view_from_draws(u_, n_, image, view_config, crop)
  per_example = jax.vmap(view, in_axes=(0, 0 if noise is not None else None, None))
  return jax.vmap(per_example)(u, noise, images.astype(jnp.float32))


def make_views_of(key: jax.Array, images: jax.Array, view_config: ViewConfig,
                  crop: Crop) -> jax.Array:
  """[B, V, H, W, C] -> [B, V, s, s, C]: one augmented view of each given image."""
  b, v, c = images.shape[0], images.shape[1], images.shape[-1]
  if not view_config.augment and crop.is_identity(images.shape[2]):
    return images.astype(jnp.float32)
  u_key, noise_key = jax.random.split(key)
  u = jax.random.uniform(u_key, (b, v, len(_CHOICES)))
  noise = (jax.random.normal(noise_key, (b, v, crop.size, crop.size, c))
           if "noise" in view_config.augment else None)
  view = lambda u_, n_, image: view_from_draws(u_, n_, image, view_config, crop)
  per_example = jax.vmap(view, in_axes=(0, 0 if noise is not None else None, 0))
  return jax.vmap(per_example)(u, noise, images.astype(jnp.float32))


def observations(batch, view_config: ViewConfig) -> jax.Array:
  """The two observations [B, 2, H, W, C] of each lens ('same_lens' views)."""
  if "image_pair" not in batch:
    raise errors.UserError("config.objective.views.source='same_lens' needs batches with "
                     "'image_pair': use config.data.source='sim_mixture' with "
                     "config.data.views=2.")
  del view_config
  return jnp.stack([batch["image"], batch["image_pair"]], axis=1)


def global_views(key: jax.Array, batch, view_config: ViewConfig, num_views: int = 2):
  """[B, num_views, s, s, C]: augmentations of 'image', or the same-lens observations."""
  if view_config.source == "same_lens":
    if num_views != 2:
      raise errors.UserError(f"same_lens views come in pairs; {num_views} global views asked.")
    return make_views_of(key, observations(batch, view_config), view_config,
                         view_config.global_crop)
  return make_views(key, batch["image"], view_config, view_config.global_crop, num_views)


def local_views(key: jax.Array, batch, view_config: ViewConfig, num_views: int):
  """[B, num_views, l, l, C]: local crops of 'image' (or of the two observations in turn)."""
  if view_config.source == "same_lens":
    pairs = observations(batch, view_config)
    images = pairs[:, jnp.arange(num_views) % 2]
    return make_views_of(key, images, view_config, view_config.local_crop)
  return make_views(key, batch["image"], view_config, view_config.local_crop, num_views)


def placeholder_views(images: jax.Array, crop: Crop) -> jax.Array:
  """Zeros shaped like a batch of views, for `init` (parameters depend on shapes only,
  and compiling the view pipeline into initialisation would only cost time)."""
  return jnp.zeros((images.shape[0], crop.size, crop.size, images.shape[-1]), jnp.float32)


def flatten_views(views: jax.Array) -> jax.Array:
  """[B, V, ...] -> [B * V, ...] (example-major, see make_views)."""
  return views.reshape(views.shape[0] * views.shape[1], *views.shape[2:])
