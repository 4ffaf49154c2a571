"""Lensing-aware augmented views for contrastive and self-distillation objectives.

Views are made on device inside the jitted loss, per example (vmapped) from the step's
key, so the accelerator never waits for a host pipeline and the views of example i
depend only on (step key, i), not on how the batch is split over devices. Each view is

  a centred crop (with a small jitter of its centre), resized to the view's size
  -> the per-example augmentations of `lensfm.data.transforms` (rotation by any angle,
     flips, sub-pixel shift, PSF blur, re-drawn noise at varied levels, normalisation,
     intensity scaling; in the order physics applies them, see that module).

Why centred crops: the lens galaxy sits at the image centre and the arcs lie within an
Einstein radius or so of it, so a crop around the centre keeps the arcs, while the
random crops of natural-image methods would often cut them out and ask the network
to match a view with arcs to one without. The crop's size is the knob: global views
keep most of the field, DINO's local views keep the central region, where the arcs are.

config.objective.views fields (all optional; the objective's defaults otherwise):
  augment: names from `transforms.AUGMENTATIONS`, comma-separated
    (default 'rotate,flip,shift,blur,noise,scale').
  normalize: normalisation applied after blur and noise (default 'none': the input
    batches are already normalised by the data pipeline).
  global_crop_scale: (lo, hi), the crop's side as a fraction of the image side, drawn
    uniformly per view (default (0.8, 1.0)).
  global_size: side of global views in pixels (default the image size).
  local_crop_scale: (lo, hi) for DINO's local views (default (0.35, 0.6)).
  local_size: side of local views (default half the image size).
  num_local_crops: local views per image (DINO only; default 4).
  crop_jitter: largest offset of a crop's centre from the image centre, as a fraction
    of the image side (default 0.05, ~3 px at 64 px: the lens centre is known to a
    pixel or so, and a few pixels of offset never push the arcs out of the crop).
"""
import dataclasses
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from lensfm.data import transforms

DEFAULT_AUGMENT = "rotate,flip,shift,blur,noise,scale"
_FIELDS = ("augment", "normalize", "global_crop_scale", "global_size", "local_crop_scale",
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
  augment: tuple[str, ...]
  normalize: str
  global_crop: Crop
  local_crop: Crop
  num_local_crops: int


def _scale_range(value, key: str) -> tuple[float, float]:
  try:
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"config.objective.views.{key}={value!r}: expected (lo, hi).") from None
  if not 0. < lo <= hi <= 1.:
    raise ValueError(f"config.objective.views.{key}={value!r}: expected 0 < lo <= hi <= 1 "
                     f"(fractions of the image side).")
  return lo, hi


def _positive_int(value, key: str) -> int:
  if int(value) != value or value < 1:
    raise ValueError(f"config.objective.views.{key}={value!r}: expected a positive integer.")
  return int(value)


def parse_views(views_config: Optional[Mapping[str, Any]], image_size: int,
                **defaults) -> ViewConfig:
  """config.objective.views (+ the objective's `defaults`) -> ViewConfig, validated."""
  given = dict(views_config.to_dict() if hasattr(views_config, "to_dict")
               else (views_config or {}))
  unknown = sorted(set(given) - set(_FIELDS))
  if unknown:
    raise ValueError(f"config.objective.views has unknown fields {unknown}; known: {_FIELDS}.")
  v = {"augment": DEFAULT_AUGMENT, "normalize": "none", "global_crop_scale": (0.8, 1.),
       "global_size": image_size, "local_crop_scale": (0.35, 0.6),
       "local_size": image_size // 2, "num_local_crops": 4, "crop_jitter": 0.05}
  v.update(defaults)
  v.update(given)
  augment = transforms.parse_augment(v["augment"])
  transforms.check_normalize(v["normalize"])
  jitter = float(v["crop_jitter"])
  if not 0. <= jitter <= 0.25:
    raise ValueError(f"config.objective.views.crop_jitter={jitter}: expected a fraction of "
                     f"the image side in [0, 0.25] (larger offsets would lose the arcs).")
  num_local = int(v["num_local_crops"])
  if num_local < 0:
    raise ValueError(f"config.objective.views.num_local_crops={num_local} must be >= 0.")
  return ViewConfig(
      augment=augment, normalize=v["normalize"],
      global_crop=Crop(_positive_int(v["global_size"], "global_size"),
                       _scale_range(v["global_crop_scale"], "global_crop_scale"), jitter),
      local_crop=Crop(_positive_int(v["local_size"], "local_size"),
                      _scale_range(v["local_crop_scale"], "local_crop_scale"), jitter),
      num_local_crops=num_local)


def crop_and_resize(image: jax.Array, scale: jax.Array, offset: jax.Array,
                    size: int) -> jax.Array:
  """Bilinear crop of side `scale` * H centred at the image centre + `offset` (dy, dx),
  in pixels, resampled to [size, size, C]; outside the image the boundary reflects."""
  height, width = image.shape[:2]
  step = scale * jnp.asarray(height, jnp.float32) / size  # Input pixels per output pixel.
  grid = (jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.) * step
  ys = grid[:, None] + (height - 1) / 2. + offset[0]
  xs = grid[None, :] + (width - 1) / 2. + offset[1]
  ys, xs = jnp.broadcast_arrays(ys, xs)

  def resample_channel(channel):
    return jax.scipy.ndimage.map_coordinates(channel, (ys, xs), order=1, mode="reflect")

  return jax.vmap(resample_channel, in_axes=-1, out_axes=-1)(image)


def random_centred_crop(key: jax.Array, image: jax.Array, crop: Crop) -> jax.Array:
  """A crop of a uniform scale in crop.scale, centre jittered by up to crop.jitter * H."""
  if crop.is_identity(image.shape[0]):
    return image
  scale_key, offset_key = jax.random.split(key)
  scale = jax.random.uniform(scale_key, (), minval=crop.scale[0], maxval=crop.scale[1])
  max_offset = crop.jitter * image.shape[0]
  offset = jax.random.uniform(offset_key, (2,), minval=-max_offset, maxval=max_offset)
  return crop_and_resize(image, scale, offset, crop.size)


def make_view_fn(view_config: ViewConfig, crop: Crop):
  """fn(key, image [H, W, C]) -> one augmented view [crop.size, crop.size, C]."""
  augment = transforms.make_transform(view_config.normalize, view_config.augment)

  def view(key, image):
    crop_key, augment_key = jax.random.split(key)
    return augment(augment_key, random_centred_crop(crop_key, image, crop))

  return view


def make_views(key: jax.Array, images: jax.Array, view_config: ViewConfig, crop: Crop,
               num_views: int) -> jax.Array:
  """[B, H, W, C] -> [B, num_views, s, s, C]: independent views of every image.

  The views of an example stay next to it (view axis second), so reshaping to
  [B * num_views, ...] for the encoder keeps each device's examples on that device.
  """
  view = make_view_fn(view_config, crop)
  keys = jax.random.split(key, (images.shape[0], num_views))
  per_example = lambda ks, image: jax.vmap(view, in_axes=(0, None))(ks, image)
  return jax.vmap(per_example)(keys, images.astype(jnp.float32))


def flatten_views(views: jax.Array) -> jax.Array:
  """[B, V, ...] -> [B * V, ...] (example-major, see make_views)."""
  return views.reshape(views.shape[0] * views.shape[1], *views.shape[2:])
