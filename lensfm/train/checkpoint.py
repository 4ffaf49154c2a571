"""Checkpoints through orbax: asynchronous, atomic, keep-N, resumable, and loadable.

Layout: WORKDIR/config.json (the run's config), WORKDIR/checkpoints/<step>/ with items
  state:  the train state pytree (params, opt_state, extra, step, counters),
  data:   the input iterator's state (JSON) so a resumed run sees the same batches,
  config: the config again (JSON), so a checkpoint directory stands on its own.
Orbax writes each step into a temporary directory and renames it when complete, so a
crash mid-save never leaves a half checkpoint under a step's name. A finished-looking
step whose files were damaged later (truncated, disk full) is detected on restore:
the run falls back to the newest intact step, moves the damaged one aside (never
deleting anything) and says so.
"""
import json
import os
import shutil
import time
from typing import Any, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

_ITEMS = ("state", "data", "config")


def _handlers():
  return {"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
          "config": ocp.JsonCheckpointHandler()}


def write_json_atomically(path: str, obj: Any) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)


class Checkpointer:
  """Saves and restores train state; only process 0 prints, all processes write."""

  def __init__(self, workdir: str, *, max_to_keep: Optional[int] = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._manager = self._new_manager()

  def _new_manager(self):
    return ocp.CheckpointManager(self.directory, options=self._options,
                                 item_handlers=_handlers())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict, config_dict: dict, *, force: bool = False):
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config_dict)), force=force)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()

  def restore_latest_intact(self, abstract_state) -> Optional[tuple[int, Any, dict]]:
    """Restores the newest step that reads back completely.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings (what the
    arrays should become). Returns (step, state, data_state) or None if no
    checkpoint exists. Damaged steps are moved to `checkpoints_damaged/`.
    """
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype),
        abstract_state)
    damaged = []
    restored = None
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        items = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args),
            data=ocp.args.JsonRestore()))
        restored = (step, items["state"], dict(items["data"] or {}))
        break
      except Exception as e:  # pylint: disable=broad-except
        # Any failure to read a step (missing or truncated files, bad metadata, shape
        # mismatch) means that step cannot be trusted; older ones may still be fine.
        damaged.append(step)
        if jax.process_index() == 0:
          logging.warning("Checkpoint step %d in %s could not be restored (%s: %s); "
                          "trying an older one.", step, self.directory, type(e).__name__,
                          str(e).splitlines()[0][:300])
    if damaged:
      self._quarantine(damaged, kept=restored[0] if restored else None)
    return restored

  def _quarantine(self, steps, kept):
    """Moves damaged steps aside so that new saves at those steps can happen."""
    self._manager.close()
    if jax.process_index() == 0:
      aside = os.path.join(os.path.dirname(self.directory), "checkpoints_damaged")
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        if os.path.exists(src):
          shutil.move(src, dst)
      msg = (f"Skipped damaged checkpoint step(s) {steps} (moved to {aside}); "
             + (f"resuming from step {kept}." if kept is not None else "no intact checkpoint "
                "remains, starting from scratch."))
      logging.warning(msg)
      print(f"WARNING: {msg}", flush=True)
    _sync_processes("lensfm_quarantine")
    self._manager = self._new_manager()


def _sync_processes(name: str):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def find_checkpoint(path: str) -> tuple[str, int]:
  """Resolves a workdir, a checkpoints/ dir or a step dir to (checkpoints dir, step)."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"Checkpoint path {path} does not exist (expected a workdir, "
                            f"its checkpoints/ directory or a checkpoints/<step> directory).")
  base = os.path.basename(path.rstrip("/"))
  if base.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base)
  for directory in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(directory):
      steps = [int(d) for d in os.listdir(directory)
               if d.isdigit() and os.path.isdir(os.path.join(directory, d, "state"))]
      if steps:
        return directory, max(steps)
  raise FileNotFoundError(f"No checkpoint found under {path} (looked for checkpoints/<step>/state).")


def load_config(path: str):
  """The ConfigDict a checkpoint (or workdir) was trained with."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  directory, step = find_checkpoint(path)
  with open(os.path.join(directory, str(step), "config", "metadata")) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_params(path: str, subtree: str = "encoder") -> tuple[Any, Any, int]:
  """Loads `params[subtree]` (default: the backbone) from a checkpoint as numpy arrays.

  `path` is a workdir, its checkpoints/ dir or a checkpoints/<step> dir. Returns
  (params, config, step). Only the requested parameters are read from disk, not the
  optimizer state, so loading a ViT-H encoder costs its own size in memory.
  """
  directory, step = find_checkpoint(path)
  config = load_config(os.path.join(directory, str(step)))
  with ocp.CheckpointManager(directory, item_handlers=_handlers()) as manager:
    meta = manager.item_metadata(step)["state"]
    tree = meta.tree if hasattr(meta, "tree") else meta
    if subtree not in tree.get("params", {}):
      raise KeyError(f"Checkpoint {directory}/{step} has no params/{subtree}; it has "
                     f"{sorted(tree.get('params', {}))}.")
    target = {"params": {subtree: jax.tree.map(lambda m: np.zeros(m.shape, m.dtype),
                                               tree["params"][subtree])}}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    items = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        target, restore_args=restore_args, partial_restore=True)))
  return items["state"]["params"][subtree], config, step


def load_encoder(path: str) -> tuple[Any, Any]:
  """Public entry for downstream tasks: (encoder params, pretraining config)."""
  params, config, _ = load_params(path, "encoder")
  return params, config
