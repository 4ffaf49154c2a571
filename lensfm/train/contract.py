"""A checkpoint's contract: resolve a checkpoint reference once, then ask the object.

  ckpt = contract.resolve("lensfm:tiny")  # a workdir, checkpoints/<step> or lensfm:NAME
  ckpt.config, ckpt.model_config          # what it was trained with
  ckpt.grid                               # model_input.Grid: size, pixel scale, channels
  ckpt.normalization                      # model_input.Normalization (statistics included)
  ckpt.objective_name                     # the objective it was trained with
  ckpt.encoder_params()                   # start from these weights: the encoder alone
  ckpt.downstream(task)                   # run this trained model: (trained, objective)
  ckpt.adopt(config)                      # a downstream config takes its backbone and grid
  ckpt.check_fits(config)                 # the one comparison of backbones and grids

A run refers to a checkpoint in one of two ways, with two config fields:
  init_from   start from these weights (finetune, knn, bench): a new model takes the
              checkpoint's backbone and grid, and (mode permitting) its encoder weights;
  checkpoint  run this trained model (evaluate, predict): model, head, grid and
              normalisation are all the checkpoint's.
`trained_model_ref(config, task)` reads the second, accepting the older spelling
`init_from` for it with a one-line deprecation message.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from typing import Any, Optional, Sequence

from absl import logging
from flax import traverse_util
import jax
import ml_collections
import numpy as np

from lensfm.data import model_input
from lensfm.data import sim_source
from lensfm.data import transforms
from lensfm import errors
from lensfm import utils
from lensfm import objectives
from lensfm.objectives import base
from lensfm.train import loading
from lensfm.train import precision

# Fields of config.model that change speed or memory, never the parameters: a run may
# set them as it likes whatever its checkpoint used.
SPEED_FIELDS = ("dtype", "remat", "attention_impl", "activation_dtype", "dot_output_dtype",
                "weight_grad_transpose")
# Fields of config.data that define the grid a checkpoint's encoder was trained on. The
# bands (channels) are the data's: an encoder adapts to them (`adapt_input_bands`).
GRID_FIELDS = ("image_size", "pixel_scale", "normalize")
# Parameters that see the image's bands: the first convolution of every backbone.
_INPUT_KERNEL = re.compile(r"^(patch_embed|stem/conv0|stem_conv)/kernel$")


@dataclasses.dataclass(frozen=True)
class Adoption:
  """What a downstream run takes from its init_from checkpoint (the grid, always)."""
  backbone: bool   # config.model becomes the checkpoint's.
  weights: bool    # The encoder starts from the checkpoint's parameters.


# Adaptation mode (config.mode) -> what it takes from init_from.
ADOPTION = {
    "finetune": Adoption(backbone=True, weights=True),
    "linear": Adoption(backbone=True, weights=True),
    "knn": Adoption(backbone=True, weights=True),
    "scratch": Adoption(backbone=True, weights=False),
    "resnet": Adoption(backbone=False, weights=False),
    "cnn": Adoption(backbone=False, weights=False),
}


def adoption(config) -> Adoption:
  mode = config.get("mode", "finetune")
  if mode not in ADOPTION:
    raise errors.UserError(f"config.mode={mode!r} is not one of {sorted(ADOPTION)}."
                           + errors.did_you_mean(mode, ADOPTION))
  return ADOPTION[mode]


def _as_json(config_part) -> dict:
  """Through JSON, as the checkpoint's copy went: tuples and lists compare equal."""
  return json.loads(json.dumps(utils.as_dict(config_part)))


class Checkpoint:
  """One resolved checkpoint (make it with `resolve`); each part is read at most once."""

  def __init__(self, ref: str, path: str, step: int):
    self.ref = str(ref)
    self.path = path
    self.step = step
    self.config = loading.load_config(self.path)

  def __repr__(self) -> str:
    return f"Checkpoint({self.ref!r}, step {self.step})"

  @property
  def model_config(self) -> ml_collections.ConfigDict:
    return self.config.model

  @property
  def objective_name(self) -> Optional[str]:
    return self.config.get("objective", {}).get("name", None)

  @property
  def grid(self) -> model_input.Grid:
    return model_input.Grid.of(self.config.data)

  @functools.cached_property
  def normalization(self) -> model_input.Normalization:
    return model_input.Normalization.of(self.config.data)

  def normalization_with(self, stats) -> model_input.Normalization:
    """The normalisation with statistics given by the user (e.g. the dataset is not here)."""
    return model_input.Normalization.of(self.config.data, stats) if stats else self.normalization

  # -- parameters -------------------------------------------------------------------
  def encoder_params(self, channels: Optional[int] = None) -> Any:
    """params['encoder'] as numpy arrays (never the optimizer state), for images of
    `channels` bands (default the checkpoint's; others by `adapt_input_bands`)."""
    params, _, _ = loading.load_params(self.path, "encoder")
    have = self.grid.channels
    if channels is None or int(channels) == have:
      return params
    if jax.process_index() == 0:
      print(f"{self.ref} was trained on {have} band(s); its input filters are averaged "
            f"over them and replicated for the data's {channels}.", flush=True)
    return adapt_input_bands(params, have, int(channels), self.ref)

  def downstream(self, task: str) -> tuple[loading.Trained, base.DownstreamObjective]:
    """(every parameter and extra state, the objective) of a fine-tuned checkpoint; a
    clear error for one without a downstream head (e.g. a pretraining run)."""
    objective = objectives.get_objective(self.config, precision.get_model(self.config.model))
    if not isinstance(objective, base.DownstreamObjective):
      raise errors.UserError(
          f"{task}: checkpoint {self.path} was trained with objective "
          f"{self.objective_name!r}, which has no downstream head. Give a fine-tuned "
          "workdir (objective 'classify', 'regress' or 'superres'), or fine-tune this one "
          "first with --config.init_from.")
    return loading.load_trained(self.path), objective

  # -- fitting a run to it ----------------------------------------------------------
  def check_backbone(self, model_config, fields: Optional[Sequence[str]] = None) -> None:
    """Fails with the differing fields when config.model is not this backbone
    (SPEED_FIELDS aside; only `fields` when given)."""
    pre, cur = _as_json(self.model_config), _as_json(model_config)
    names = set(pre) | set(cur) if fields is None else set(fields)
    diff = {k: (pre.get(k), cur.get(k)) for k in names - set(SPEED_FIELDS)
            if pre.get(k) != cur.get(k)}
    if diff:
      raise errors.UserError(
          f"Checkpoint {self.ref} has a different backbone: "
          + "; ".join(f"model.{k}: checkpoint {a!r} vs config {b!r}"
                      for k, (a, b) in sorted(diff.items()))
          + "." + _runlocal_hint(pre, cur))

  def check_overrides(self, config, overrides: Sequence[str]) -> None:
    """--config.model.FIELD overrides that contradict the backbone a run adopts are named,
    never silently replaced."""
    if not adoption(config).backbone:
      return
    fields = sorted({f.split(".", 2)[1] for f in overrides if f.startswith("model.")})
    try:
      self.check_backbone(config.model, fields)
    except errors.UserError as e:
      raise errors.UserError(f"{e} A run from init_from uses its checkpoint's backbone: "
                             "drop those --config.model overrides.") from None

  def check_fits(self, config) -> None:
    """Before anything compiles: config.model is this backbone (where the mode adopts it)
    and config.data has this grid's normalisation (the bands may differ: the encoder's
    input filters adapt, `adapt_input_bands`)."""
    if adoption(config).backbone:
      self.check_backbone(config.model)
    # An encoder only knows the input scale it was trained on.
    have = self.config.data.get("normalize", transforms.DEFAULT_NORMALIZE)
    want = config.data.get("normalize", transforms.DEFAULT_NORMALIZE)
    if have != want:
      raise errors.UserError(f"Checkpoint {self.ref} was trained on config.data.normalize="
                             f"{have!r} images, but this run has config.data.normalize="
                             f"{want!r}; pass --config.data.normalize={have} (or pretrain "
                             f"with {want!r}).")

  def adopt(self, config) -> ml_collections.ConfigDict:
    """A copy of a downstream config with this checkpoint's backbone (per config.mode;
    the config's SPEED_FIELDS kept) and grid (GRID_FIELDS); fresh modes clear init_from."""
    config = ml_collections.ConfigDict(config.to_dict())
    rule = adoption(config)
    changed = []
    if rule.backbone:
      model = self.model_config.to_dict()
      for keep in SPEED_FIELDS:
        if keep in config.model:
          model[keep] = config.model[keep]
      if model != config.model.to_dict():
        changed.append(f"model={model}")
      config.model = model
    for field in GRID_FIELDS:
      if field in self.config.data and config.data.get(field, None) != self.config.data[field]:
        changed.append(f"data.{field}={self.config.data[field]!r}")
        config.data[field] = self.config.data[field]
    _fit_resized_recipe(config.data)
    if not rule.weights:
      config.init_from = ""
    if changed:
      logging.info("Adopted from %s: %s", self.ref, ", ".join(changed))
      if jax.process_index() == 0:
        print(f"Adopted from {self.ref}: {', '.join(changed)}", flush=True)
    return config


def adapt_input_bands(encoder, have: int, want: int, where: str = "the encoder"):
  """The encoder for images of `want` bands instead of `have`: the first convolution's
  filters are averaged over the bands it knew and replicated over the new ones, scaled by
  have / want, so an image whose bands all equal one of the old images' gives the same
  activations as before. Every other parameter is unchanged."""
  flat = traverse_util.flatten_dict(encoder, sep="/")
  inputs = [k for k, v in flat.items() if _INPUT_KERNEL.match(k) and v.ndim == 4
            and v.shape[-2] == have]
  if len(inputs) != 1:
    raise errors.UserError(
        f"{where} was trained on {have} band(s) and this backbone has no single input "
        f"convolution to adapt to {want} (found {inputs}); use data with {have} band(s).")
  kernel = np.asarray(flat[inputs[0]], np.float32)
  mean = kernel.mean(axis=-2, keepdims=True) * (have / want)
  flat[inputs[0]] = np.repeat(mean, want, axis=-2).astype(flat[inputs[0]].dtype)
  return traverse_util.unflatten_dict(flat, sep="/")


def resolve(ref: str) -> Checkpoint:
  """The checkpoint `ref` names (a workdir, checkpoints/<step>, or 'lensfm:NAME'): its
  newest step now, as one object per step and process, so that main's checks, the task
  and the trainer share what was read."""
  directory, step = loading.find_checkpoint(str(ref))
  return _checkpoint(str(ref), f"{directory}/{step}", step)


@functools.lru_cache(maxsize=16)
def _checkpoint(ref: str, path: str, step: int) -> Checkpoint:
  return Checkpoint(ref, path, step)


def start_from(config) -> Optional[Checkpoint]:
  """config.init_from resolved, or None when the run starts from random weights."""
  ref = config.get("init_from", "")
  return resolve(ref) if ref else None


def trained_model_ref(config, task: str) -> str:
  """config.checkpoint, the trained model a task runs; config.init_from is its older
  spelling (said once, then used)."""
  ref, old = config.get("checkpoint", ""), config.get("init_from", "")
  if old and not ref:
    print(f"Note: --config.init_from for {task} is deprecated; name the trained model with "
          f"--config.checkpoint={old}.", flush=True)
    ref = old
  if not ref:
    raise errors.UserError(f"config.checkpoint must name the fine-tuned workdir (or "
                           f"checkpoints/<step>) to {task}.")
  return ref


def _runlocal_hint(pretrained: dict, current: dict) -> str:
  """A tiny explicit backbone (variant None) against a named variant: a runlocal run."""
  if pretrained.get("variant", "") is None and current.get("variant", None) is not None:
    return (" The checkpoint looks like a `:runlocal` run (a tiny backbone without a "
            "variant): fine-tune it with `:runlocal` too, e.g. "
            "--config=configs/finetune_classify.py:runlocal.")
  return ""


def _fit_resized_recipe(data_config) -> None:
  """A simulator recipe shrunk for speed (recipe_overrides.num_pix, e.g. runlocal) renders
  the adopted grid's whole field of view at its own pixel scale."""
  overrides = data_config.get("recipe_overrides", None)
  if data_config.get("source", None) not in ("sim", "sim_pool") or not overrides or \
      "num_pix" not in overrides or "pixel_scale" not in data_config:
    return
  recipe = sim_source.recipe_by_name(data_config.recipe, overrides)
  overrides.num_pix = int(round(data_config.image_size * data_config.pixel_scale
                                / recipe.pixel_scale))
