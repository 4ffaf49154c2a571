"""Loading what a checkpoint holds: its config, its parameters, a model to use.

  load_config(path)              the ConfigDict the run was trained with;
  load_params(path, subtree)     params[subtree] (default the encoder), config, step;
  load_encoder(path)             (encoder params, config): what `init_from` uses;
  load_trained(path)             every parameter and the objective's `extra` state (a
                                 downstream model: encoder and head);
  load_downstream(path, what)    (trained, objective) for evaluation and prediction;
  check_same_backbone, check_init_from: a checkpoint fits config.model and config.data.

`path` is a workdir, its checkpoints/ directory or a checkpoints/<step> directory.
Only the requested subtrees are read from disk (never the optimizer state), as numpy
arrays, so loading a ViT-H encoder costs its own size in memory.
"""
import dataclasses
import json
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lensfm import models
from lensfm import objectives
from lensfm.data import transforms
from lensfm.objectives import base
from lensfm.train import checkpoint as ckpt_lib


@dataclasses.dataclass
class Trained:
  params: Any            # The whole params tree (numpy).
  extra: Any             # The objective's extra state ({} if it has none).
  config: ml_collections.ConfigDict  # The config it was trained with.
  step: int
  path: str              # The checkpoint step directory.


def find_checkpoint(path: str) -> tuple[str, int]:
  """Resolves a workdir, a checkpoints/ dir or a step dir to (checkpoints dir, step)."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"Checkpoint path {path} does not exist (expected a workdir, "
                            f"its checkpoints/ directory or a checkpoints/<step> directory).")
  base_name = os.path.basename(path.rstrip("/"))
  if base_name.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base_name)
  for directory in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(directory):
      steps = [int(d) for d in os.listdir(directory)
               if d.isdigit() and os.path.isdir(os.path.join(directory, d, "state"))]
      if steps:
        return directory, max(steps)
  raise FileNotFoundError(f"No checkpoint found under {path} (looked for checkpoints/<step>/state).")


def load_config(path: str) -> ml_collections.ConfigDict:
  """The ConfigDict a checkpoint (or workdir) was trained with."""
  directory, step = find_checkpoint(path)
  with open(os.path.join(directory, str(step), "config", "metadata")) as f:
    return ml_collections.ConfigDict(json.load(f))


def read_state(path: str, select=None) -> tuple[Any, Any, int]:
  """(state, config, step): the parts of the train state that `select(tree)` keeps (a
  subtree of the checkpoint's metadata tree; default all of it), as numpy arrays."""
  directory, step = find_checkpoint(path)
  config = load_config(os.path.join(directory, str(step)))
  with ocp.CheckpointManager(directory, item_handlers=ckpt_lib.item_handlers()) as manager:
    meta = manager.item_metadata(step)["state"]
    tree = meta.tree if hasattr(meta, "tree") else meta
    wanted = tree if select is None else select(tree, f"{directory}/{step}")
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), wanted)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    items = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        target, restore_args=restore_args, partial_restore=select is not None)))
  return items["state"], config, step


def load_params(path: str, subtree: str = "encoder") -> tuple[Any, Any, int]:
  """(params[subtree], config, step) of a checkpoint (default: the backbone)."""

  def select(tree, where):
    if subtree not in tree.get("params", {}):
      raise KeyError(f"Checkpoint {where} has no params/{subtree}; it has "
                     f"{sorted(tree.get('params', {}))}.")
    return {"params": {subtree: tree["params"][subtree]}}

  state, config, step = read_state(path, select)
  return state["params"][subtree], config, step


def load_encoder(path: str) -> tuple[Any, Any]:
  """(encoder params, pretraining config): a pretrained backbone for your own code."""
  params, config, _ = load_params(path, "encoder")
  return params, config


def load_trained(path: str) -> Trained:
  """Every parameter and the `extra` state of a checkpoint, with its config."""

  def select(tree, where):
    if "params" not in tree:
      raise KeyError(f"Checkpoint {where} holds no params (it has {sorted(tree)}).")
    # An objective without extra state saved an empty dict, which has no leaves to read.
    return {k: tree[k] for k in ("params", "extra") if k in tree and jax.tree.leaves(tree[k])}

  state, config, step = read_state(path, select)
  directory, _ = find_checkpoint(path)
  return Trained(state["params"], state.get("extra", {}), config, step,
                 os.path.join(directory, str(step)))


def load_downstream(path: str, what: str) -> tuple[Trained, base.DownstreamObjective]:
  """(trained, objective) of a fine-tuned checkpoint; fails clearly for one without a
  downstream head (e.g. a pretraining run)."""
  trained = load_trained(path)
  model = models.get_model(trained.config.model)
  objective = objectives.get_objective(trained.config, model)
  if not isinstance(objective, base.DownstreamObjective):
    name = trained.config.get("objective", {}).get("name", None)
    raise ValueError(
        f"{what}: checkpoint {trained.path} was trained with objective {name!r}, which has "
        "no downstream head. Give a fine-tuned workdir (objective 'classify', 'regress' or "
        "'superres'), or fine-tune this one first with --config.init_from.")
  return trained, objective


def check_same_backbone(pretrained, current, path) -> None:
  """Fails with the differing fields when a checkpoint's backbone is not config.model's."""
  as_json = lambda c: json.loads(json.dumps(c.to_dict() if hasattr(c, "to_dict") else dict(c)))
  # Both through JSON, as the checkpoint's copy went: tuples and lists compare equal.
  pre, cur = as_json(pretrained), as_json(current)
  # Compute dtype and rematerialisation change speed, not parameters.
  ignore = {"dtype", "remat", "attention_impl"}
  diff = {k: (pre.get(k), cur.get(k)) for k in set(pre) | set(cur)
          if k not in ignore and pre.get(k) != cur.get(k)}
  if diff:
    raise ValueError(f"Checkpoint {path} has a different backbone: "
                     + ", ".join(f"model.{k}: checkpoint {a!r} vs config {b!r}"
                                 for k, (a, b) in sorted(diff.items())))


def check_init_from(config) -> None:
  """Before any compilation: the pretrained checkpoint exists and its backbone matches
  config.model (the trainer checks shapes again when it loads it)."""
  path: Optional[str] = config.get("init_from", None)
  if not path:
    return
  pre = load_config(path)  # FileNotFoundError naming the path if missing.
  check_same_backbone(pre.model, config.model, path)
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
