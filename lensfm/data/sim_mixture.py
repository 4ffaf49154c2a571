"""Endless same-lens observations from a mixture of instruments: `config.data.source =
'sim_mixture'`, for pretraining.

Every example is one mass model of `lensfm.sim.same_lens` observed `views` times (1 or
2), each time by an instrument drawn from `families` (Model I, II, III-like cameras and
a randomized camera) with its own source, PSF, noise, exposure and orientation. Each
native observation is mapped onto the model's grid (`image_size` x `pixel_scale`) and
normalised, all on device inside one jitted batch function laid out with the batch
sharding, so the model always sees what a real instrument's image would look like on
its grid (`grid.map_to_grid`, as every downstream input path). Randomness and
resumption as in `sim_source` (batch = f(seed, split, step)).

config.data fields (defaults: `DEFAULTS`):
  source: 'sim_mixture'.
  image_size, pixel_scale: the model grid (pixels, arcsec/px).
  channels: 1.
  normalize: as `sim_source` (per image).
  views: 1 or 2: with 2, batches also hold 'image_pair', a second observation
    of the same lens (same-lens positive pairs for SimCLR / BYOL / DINO).
  families: comma-separated `same_lens.FAMILIES` names ('' = all).
  classes: comma-separated class names ('' = no_sub,cdm,axion).
  clean_fraction: share of noise-free views.
  realistic_fraction: share of each batch (rounded to whole examples; default 0) made of
    realistic-sky same-lens pairs (`lensfm.sim.realistic_pairs`: one EPL + subhalos /
    vortex system, each view its own lens light, source, neighbours, survey (one band),
    orientation and noise); they come last in the batch, their 'family' is
    len(families) + their first view's index in `realistic_pairs.VIEWS`.
  realistic_surveys: comma-separated surveys of those views ('' = all of VIEWS:
    euclid, hst, jwst, lsst, hsc).

Batches: 'image' [B, H, W, 1], 'image_pair' (views=2), 'label', 'latents' [B, K] and
'latent_mask' [B, K] (standardised simulator latents of the first view, see
`same_lens.LATENTS`), 'native_pixel_scale' [B], 'family' [B], the physical label keys
('axion_mass', 'n_subhalos', 'sub_mass_fraction', 'theta_e') and 'mask'.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lensfm import errors
from lensfm.data import grid
from lensfm.data import sim_source
from lensfm.data import transforms
from lensfm.sim import realistic_pairs
from lensfm.sim import same_lens
from lensfm import utils

SOURCE_NAME = "sim_mixture"
DEFAULTS = dict(image_size=None, pixel_scale=None, channels=1,
                normalize=transforms.DEFAULT_NORMALIZE, views=1, families="", classes="",
                clean_fraction=0.25, realistic_fraction=0.0, realistic_surveys="")


def _names(value, default) -> tuple:
  if not value:
    return tuple(default)
  if isinstance(value, str):
    return tuple(v.strip() for v in value.split(",") if v.strip())
  return tuple(value)


def simulator(data_config) -> same_lens.SameLens:
  """The SameLens simulator that fills config.data's grid."""
  data_config = utils.with_defaults(data_config, DEFAULTS)
  size, scale = data_config.image_size, data_config.pixel_scale
  if not size or not scale:
    raise errors.UserError(f"config.data.source='{SOURCE_NAME}' needs config.data.image_size and "
                     f"config.data.pixel_scale (got {size!r} and {scale!r}).")
  if data_config.channels != 1:
    raise errors.UserError(f"config.data.source='{SOURCE_NAME}' makes single-band images; "
                     f"config.data.channels={data_config.channels} must be 1.")
  return same_lens.SameLens(
      field_of_view=float(size) * float(scale),
      families=_names(data_config.families, same_lens.DEFAULT_FAMILIES),
      classes=_names(data_config.classes, same_lens.CLASSES),
      clean_fraction=float(data_config.clean_fraction))


def realistic_simulator(data_config, global_batch_size: int):
  """(RealisticPairs or None, how many examples of each batch it makes)."""
  data_config = utils.with_defaults(data_config, DEFAULTS)
  fraction = float(data_config.realistic_fraction)
  if not 0.0 <= fraction <= 1.0:
    raise errors.UserError(f"config.data.realistic_fraction={fraction} must lie in [0, 1].")
  count = int(round(fraction * global_batch_size))
  if not count:
    return None, 0
  surveys = _names(data_config.realistic_surveys, [v[0] for v in realistic_pairs.VIEWS])
  known = [v[0] for v in realistic_pairs.VIEWS]
  unknown = [name for name in surveys if name not in known]
  if unknown:
    raise errors.UserError(f"config.data.realistic_surveys: unknown {unknown}; valid: {known}.")
  size, scale = data_config.image_size, data_config.pixel_scale
  sim = realistic_pairs.RealisticPairs(field_of_view=float(size) * float(scale),
                                       views=tuple(known.index(n) for n in surveys))
  return sim, count


def to_model_grid(native, native_scale, image_size: int, pixel_scale: float,
                  min_native_scale: float):
  """One native observation [N, N, C] at `native_scale` (traced) -> [S, S, C] on the
  model grid with `grid.map_to_grid`, the operator every downstream input path uses. The
  native field always covers the model's, so no padding reaches the output."""
  return grid.map_to_grid(native, native_scale, image_size, pixel_scale,
                          key=jax.random.PRNGKey(0), sky_level=0., sky_sigma=0.,
                          min_src_scale=min_native_scale)


@functools.lru_cache(maxsize=16)
def _batch_function(sim, views: int, image_size: int, pixel_scale: float,
                    normalize: str, global_batch_size: int, sharding, realistic=None,
                    num_realistic: int = 0):
  """Jitted fn(base_key, step) -> batch; shared by equal settings (e.g. other seeds)."""

  def one(key):
    out = sim.sample_example(key, views)
    mapped = jax.vmap(lambda n, s: to_model_grid(n, s, image_size, pixel_scale,
                                                 sim.min_pixel_scale))(
        out["native"], out["pixel_scale"])
    mapped = jax.vmap(lambda im: transforms.normalize(im, normalize))(mapped)
    example = {"image": mapped[0], "label": out["label"], "latents": out["latents"][0],
               "latent_mask": out["latent_mask"][0], "family": out["family"][0],
               "native_pixel_scale": out["pixel_scale"][0]}
    if views == 2:
      example["image_pair"] = mapped[1]
    for k in ("axion_mass", "n_subhalos", "sub_mass_fraction", "theta_e"):
      example[k] = out[k]
    return example

  def to_grid(native, native_scale):
    mapped = grid.map_to_grid(native, native_scale, image_size, pixel_scale,
                              key=jax.random.PRNGKey(0), sky_level=0., sky_sigma=0.)
    return transforms.normalize(mapped, normalize)

  def realistic_part(keys):
    out = realistic.sample(None, num_realistic, views, image_size, to_grid, keys=keys)
    example = {"image": out["image"][:, 0], "label": out["label"],
               "latents": out["latents"][:, 0], "latent_mask": out["latent_mask"][:, 0],
               "family": len(sim.families) + out["view_kind"][:, 0],
               "native_pixel_scale": out["native_pixel_scale"][:, 0]}
    if views == 2:
      example["image_pair"] = out["image"][:, 1]
    for k in ("axion_mass", "n_subhalos", "sub_mass_fraction", "theta_e"):
      example[k] = out[k]
    return example

  def batch_at(base_key, step):
    keys = transforms.sharded_example_keys(jax.random.fold_in(base_key, step),
                                           global_batch_size, sharding)
    num_mixture = global_batch_size - num_realistic
    batch = jax.vmap(one)(keys[:num_mixture]) if num_mixture else None
    if num_realistic:
      extra = realistic_part(keys[num_mixture:])
      batch = extra if batch is None else jax.tree.map(
          lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), batch, extra)
    batch["mask"] = jnp.ones((global_batch_size,), jnp.bool_)
    return batch

  return jax.jit(batch_at, out_shardings=sharding)


class MixtureInput(sim_source.StepIndexedInput):
  """Endless same-lens batches; see the module docstring."""

  def __init__(self, sim, *, views: int, image_size: int, pixel_scale: float,
               normalize: str, global_batch_size: int, sharding, seed: int, split: str,
               realistic=None, num_realistic: int = 0):
    self._step = 0
    self._base_key = jax.random.fold_in(jax.random.PRNGKey(int(seed)),
                                        sim_source.split_id(split))
    self._make_batch = _batch_function(sim, int(views), int(image_size), float(pixel_scale),
                                       normalize, int(global_batch_size), sharding,
                                       realistic, int(num_realistic))

  def batch_at(self, step: int):
    return self._make_batch(self._base_key, np.uint32(step))

  def abstract_batch(self):
    return jax.eval_shape(self._make_batch, self._base_key, np.uint32(0))


def make(data_config, *, global_batch_size: int, sharding, seed: int,
         split: str = "train", single_pass: bool = False) -> MixtureInput:
  """The 'sim_mixture' source; endless whatever `single_pass` (evaluations take a fixed
  number of batches)."""
  del single_pass
  data_config = utils.with_defaults(data_config, DEFAULTS)
  views = int(data_config.views)
  if views not in (1, 2):
    raise errors.UserError(f"config.data.views={views}: expected 1 or 2 observations per lens.")
  normalize = data_config.normalize
  if normalize == "standardize":
    raise errors.UserError(f"config.data.normalize='standardize' is not available for "
                     f"source '{SOURCE_NAME}'; use 'zscore' (per image).")
  transforms.check_normalize(normalize)
  realistic, num_realistic = realistic_simulator(data_config, global_batch_size)
  return MixtureInput(simulator(data_config), views=views,
                      image_size=data_config.image_size,
                      pixel_scale=data_config.pixel_scale, normalize=normalize,
                      global_batch_size=global_batch_size, sharding=sharding, seed=seed,
                      split=split, realistic=realistic, num_realistic=num_realistic)
