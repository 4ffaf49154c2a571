"""Loading what a checkpoint holds: its config, its parameters, a model to use.

  load_config(path)              the ConfigDict the run was trained with;
  load_params(path, subtree)     params[subtree] (default the encoder), config, step;
  load_encoder(path)             (encoder params, config): what `init_from` uses;
  load_trained(path)             every parameter and the objective's `extra` state (a
                                 downstream model: encoder and head);
  export_encoder(path, out_dir)  the encoder alone as a checkpoint of its own (shipping).

What a run may ask of a checkpoint (its grid, normalisation, objective; how its backbone
must match) is `lensfm.train.contract`, built on these.

`path` is a workdir, its checkpoints/ directory, a checkpoints/<step> directory, or the
name of a checkpoint shipped in lensfm/weights/ ('lensfm:tiny').
Only the requested subtrees are read from disk (never the optimizer state), as numpy
arrays, so loading a ViT-H encoder costs its own size in memory.
"""
import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lensfm import errors
from lensfm.train import checkpoint as ckpt_lib
from lensfm import utils


@dataclasses.dataclass
class Trained:
  params: Any            # The whole params tree (numpy).
  extra: Any             # The objective's extra state ({} if it has none).
  config: ml_collections.ConfigDict  # The config it was trained with.
  step: int
  path: str              # The checkpoint step directory.


# Named checkpoints shipped inside the package: 'lensfm:tiny' -> lensfm/weights/tiny/.
NAMED_PREFIX = "lensfm:"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "weights")


def named_checkpoints() -> list[str]:
  """Names of the checkpoints shipped in lensfm/weights/ ('tiny', ...)."""
  if not os.path.isdir(WEIGHTS_DIR):
    return []
  return sorted(d for d in os.listdir(WEIGHTS_DIR)
                if os.path.isdir(os.path.join(WEIGHTS_DIR, d, "checkpoints")))


def resolve(path: str) -> str:
  """'lensfm:NAME' -> the shipped checkpoint's directory; any other path unchanged."""
  if not str(path).startswith(NAMED_PREFIX):
    return path
  name = str(path)[len(NAMED_PREFIX):]
  if name not in named_checkpoints():
    raise errors.MissingFileError(f"No named checkpoint {path!r}: lensfm ships "
                            f"{[NAMED_PREFIX + n for n in named_checkpoints()]} (in "
                            f"{WEIGHTS_DIR}).")
  return os.path.join(WEIGHTS_DIR, name)


def find_checkpoint(path: str) -> tuple[str, int]:
  """Resolves 'lensfm:NAME', a workdir, a checkpoints/ dir or a step dir to
  (checkpoints dir, step)."""
  path = os.path.abspath(os.path.expanduser(resolve(path)))
  if not os.path.isdir(path):
    raise errors.MissingFileError(
        f"Checkpoint path {path} does not exist (expected a workdir, its checkpoints/ "
        f"directory or a checkpoints/<step> directory).")
  base_name = os.path.basename(path.rstrip("/"))
  if base_name.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base_name)
  for directory in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(directory):
      steps = [int(d) for d in os.listdir(directory)
               if d.isdigit() and os.path.isdir(os.path.join(directory, d, "state"))]
      if steps:
        return directory, max(steps)
  raise errors.MissingFileError(f"No checkpoint found under {path} (looked for "
                                "checkpoints/<step>/state).")


def load_config(path: str) -> ml_collections.ConfigDict:
  """The ConfigDict a checkpoint (or workdir) was trained with."""
  directory, step = find_checkpoint(path)
  with open(os.path.join(directory, str(step), "config", "metadata")) as f:
    return ml_collections.ConfigDict(json.load(f))


def read_state(path: str, select=None) -> tuple[Any, Any, int]:
  """(state, config, step): the parts of the train state that `select(tree)` keeps (a
  subtree of the checkpoint's metadata tree; default all of it), as numpy arrays."""
  directory, step = find_checkpoint(path)
  # A damaged file is named (ChecksumError) rather than silently read.
  ckpt_lib.verify_checksums(os.path.join(directory, str(step)))
  config = load_config(os.path.join(directory, str(step)))
  with ocp.CheckpointManager(directory, item_handlers=ckpt_lib.item_handlers()) as manager:
    meta = manager.item_metadata(step)["state"]
    tree = meta.tree if hasattr(meta, "tree") else meta
    if not tree:
      raise errors.UserError(f"Checkpoint {directory}/{step} holds no saved state (an "
                             f"incomplete or foreign checkpoint); expected a lensfm run's.")
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
  """(encoder params, pretraining config): a pretrained backbone for your own code;
  `path` may be a shipped name such as 'lensfm:tiny'."""
  params, config, _ = load_params(path, "encoder")
  return params, config


def export_encoder(path: str, out_dir: str, *, max_file_bytes: int = 16 * 2**20) -> str:
  """Writes the encoder of checkpoint `path` (params/encoder only, no optimizer state)
  as a checkpoint of its own in out_dir (out_dir/checkpoints/<step>, loadable like any
  workdir) with every file at most `max_file_bytes`, plus out_dir/config.json.

  Written to a temporary directory next to out_dir and moved into place when complete;
  other files in out_dir (e.g. a model card) are kept.
  """
  encoder, config, step = load_params(path, "encoder")
  out_dir = os.path.abspath(out_dir)
  tmp = f"{out_dir}.tmp-{os.getpid()}"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  # Arrays in chunks, and OCDBT data files capped, so no file exceeds the limit.
  save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=max_file_bytes // 4),
                           encoder)
  with ocp.CheckpointManager(os.path.join(tmp, "checkpoints"),
                             item_handlers=ckpt_lib.item_handlers(),
                             options=ocp.CheckpointManagerOptions(create=True)) as manager:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave({"params": {"encoder": encoder}},
                                  save_args={"params": {"encoder": save_args}},
                                  ocdbt_target_data_file_size=max_file_bytes // 2),
        data=ocp.args.JsonSave({}), config=ocp.args.JsonSave(config.to_dict())), force=True)
    manager.wait_until_finished()
  ckpt_lib.write_checksums(os.path.join(tmp, "checkpoints", str(step)))  # Checked on load.
  utils.write_json_atomically(os.path.join(tmp, "config.json"), config.to_dict())
  too_big = [(f, os.path.getsize(os.path.join(d, f))) for d, _, files in os.walk(tmp)
             for f in files if os.path.getsize(os.path.join(d, f)) > max_file_bytes]
  if too_big:
    shutil.rmtree(tmp)
    raise ValueError(f"Exported files exceed {max_file_bytes} bytes: {too_big}.")
  os.makedirs(out_dir, exist_ok=True)
  old = os.path.join(out_dir, "checkpoints")
  if os.path.exists(old):
    shutil.move(old, f"{tmp}.old")
  os.replace(os.path.join(tmp, "checkpoints"), old)
  os.replace(os.path.join(tmp, "config.json"), os.path.join(out_dir, "config.json"))
  shutil.rmtree(tmp)
  shutil.rmtree(f"{tmp}.old", ignore_errors=True)
  return out_dir


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
