"""Loading a trained (fine-tuned) model for evaluation and prediction.

`lensfm.train.checkpoint.load_params(path, subtree)` reads one subtree of the
parameters (the encoder, for `init_from`); a downstream model needs all of them (encoder
and head) and its `extra` state (e.g. the running feature statistics of a linear probe),
so this reads params/* and extra/* the same way: never the optimizer state, as numpy
arrays.
"""
import dataclasses
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lensfm.data import transforms
from lensfm.train import checkpoint as ckpt_lib
from lensfm.train import trainer as trainer_lib


@dataclasses.dataclass
class Trained:
  params: Any            # The whole params tree (numpy).
  extra: Any             # The objective's extra state ({} if it has none).
  config: ml_collections.ConfigDict  # The config it was trained with.
  step: int
  path: str              # The checkpoint step directory.


def _handlers():
  return {"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
          "config": ocp.JsonCheckpointHandler()}


def load_trained(path: str) -> Trained:
  """Reads params and config from a workdir, its checkpoints/ or a checkpoints/<step>."""
  directory, step = ckpt_lib.find_checkpoint(path)
  config = ckpt_lib.load_config(os.path.join(directory, str(step)))
  with ocp.CheckpointManager(directory, item_handlers=_handlers()) as manager:
    meta = manager.item_metadata(step)["state"]
    tree = meta.tree if hasattr(meta, "tree") else meta
    if "params" not in tree:
      raise KeyError(f"Checkpoint {directory}/{step} holds no params (it has {sorted(tree)}).")
    zeros = lambda t: jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), t)
    # An objective without extra state saved an empty dict, which has no leaves to read.
    parts = [k for k in ("params", "extra") if k in tree and jax.tree.leaves(tree[k])]
    target = {k: zeros(tree[k]) for k in parts}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    items = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        target, restore_args=restore_args, partial_restore=True)))
  state = items["state"]
  return Trained(state["params"], state.get("extra", {}), config, step,
                 os.path.join(directory, str(step)))


def check_downstream(trained: Trained, what: str) -> None:
  """Fails clearly when a checkpoint has no downstream head (e.g. a pretraining run)."""
  name = trained.config.get("objective", {}).get("name", None)
  if name not in ("classify", "regress", "superres"):
    raise ValueError(
        f"{what}: checkpoint {trained.path} was trained with objective {name!r}, which has "
        "no downstream head. Give a fine-tuned workdir (objective 'classify', 'regress' or "
        "'superres'), or fine-tune this one first with --config.init_from.")


# Input-grid fields a pretrained encoder fixes for whatever fine-tunes it.
GRID_FIELDS = ("image_size", "pixel_scale", "channels", "normalize")
# Adaptation modes that train a fresh network (init_from only lends its backbone/grid).
FRESH_MODES = ("scratch", "resnet")


def adopt_init_from(config) -> ml_collections.ConfigDict:
  """A copy of a downstream config that takes init_from's backbone and input grid.

  `--config.init_from=lensfm:tiny` (or any checkpoint) then just works with any downstream
  config: config.model becomes the checkpoint's backbone (the config's compute dtype and
  remat are kept) and config.data its grid (GRID_FIELDS). With config.mode 'scratch' the
  same backbone is trained from random weights (init_from is cleared after adopting);
  'resnet' keeps its ResNet-18 and adopts only the grid.
  """
  path = config.get("init_from", "")
  if not path:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  pre = ckpt_lib.load_config(path)  # FileNotFoundError naming the path if missing.
  mode = config.get("mode", "finetune")
  changed = []
  if mode != "resnet":
    model = pre.model.to_dict()
    for keep in ("dtype", "remat", "attention_impl"):
      if keep in config.model:
        model[keep] = config.model[keep]
    if model != config.model.to_dict():
      changed.append(f"model={model}")
    config.model = model
  for field in GRID_FIELDS:
    if field in pre.data and config.data.get(field, None) != pre.data[field]:
      changed.append(f"data.{field}={pre.data[field]!r}")
      config.data[field] = pre.data[field]
  if mode in FRESH_MODES:
    config.init_from = ""
    config.backbone_from = path
  if changed:
    logging.info("Adopted from %s: %s", path, ", ".join(changed))
    print(f"Adopted from {path}: {', '.join(changed)}", flush=True)
  return config


def check_init_from(config) -> None:
  """Before any compilation: the pretrained checkpoint exists and its backbone matches
  config.model (the trainer checks shapes again when it loads it)."""
  path = config.get("init_from", None)
  if not path:
    return
  pre = ckpt_lib.load_config(path)  # FileNotFoundError naming the path if missing.
  trainer_lib.check_same_backbone(pre.model, config.model, path)
  have, want = pre.data.get("channels", 1), config.data.get("channels", 1)
  if have != want:
    raise ValueError(f"Checkpoint {path} was trained on images with {have} channel(s), but "
                     f"config.data.channels={want}.")
  # An encoder only knows the input scale it was trained on: fine-tuning it on images
  # normalised otherwise starts from features it never learned to make.
  have = pre.data.get("normalize", transforms.DEFAULT_NORMALIZE)
  want = config.data.get("normalize", transforms.DEFAULT_NORMALIZE)
  if have != want:
    raise ValueError(f"Checkpoint {path} was trained on config.data.normalize={have!r} "
                     f"images, but this run has config.data.normalize={want!r}; pass "
                     f"--config.data.normalize={have} (or pretrain with {want!r}).")
