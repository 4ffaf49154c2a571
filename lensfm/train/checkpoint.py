"""Checkpoints through orbax: asynchronous, atomic, keep-N and resumable.

Layout: WORKDIR/config.json (the run's config), WORKDIR/checkpoints/<step>/ with items
  state:  the train state pytree (params, opt_state, extra, step, counters); every
          process writes and reads only its own shards (orbax, collectively);
  data:   the input iterator's state (JSON) so a resumed run sees the same batches:
          one state when every process's is the same (the simulator's {'step': n}),
          else {"per_process": [state of process 0, 1, ...]};
  config: the config again (JSON), so a checkpoint directory stands on its own.
The RNG state needs no item: step s draws from fold_in(base_rng, s). Reading a
checkpoint's parameters for other uses (init_from, evaluation) is `loading`'s job.

Orbax writes each step into `<step>.orbax-checkpoint-tmp*` and renames it when
complete, so a process killed mid-save (SIGKILL, disk full) never leaves a half
checkpoint under a step's name; such leftovers are removed when the next run starts
(they never were checkpoints). A finished-looking step whose files were damaged later
(truncated, deleted, unreadable) is detected on restore, by every process agreeing that
it read its part: the run falls back to the newest intact step, moves the damaged one
to WORKDIR/checkpoints_damaged/ (never deleting anything) and says which steps it
skipped and why.

Checksums: every step directory holds CHECKSUMS_FILE, the CRC-32 and size of each
file of the step, computed by process 0 in orbax's background thread once all
processes' files are written and before the step directory gets its final name, so
async saving is kept and a step never appears without its checksums (a save with
async_save=False writes them right after the save). Restoring checks them first
(each process a share of the files); a mismatch (a flipped bit, a truncated file) is
damage like any other: named, set aside, the previous intact step restored. A step
saved by a version of lensfm without checksums is restored unchecked.
"""
import collections
import glob
import json
import os
import shutil
import time
from typing import Any, Optional
import zlib

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from lensfm import errors
from lensfm import utils

# Key of the data item when processes' input states differ (e.g. grain, per host).
PER_PROCESS = "per_process"
CHECKSUMS_FILE = "lensfm_checksums.json"
# Orbax rewrites the step's own metadata (commit time) after the files are final.
_UNCHECKED = (CHECKSUMS_FILE, "_CHECKPOINT_METADATA")
_CHUNK = 1 << 24


class ChecksumError(ValueError):
  """A checkpoint file whose bytes are not those that were saved."""


def file_crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def write_checksums(step_dir: str) -> None:
  """Records {relative path: [size, crc32]} of every file under `step_dir`."""
  files = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel not in _UNCHECKED and ".tmp-" not in name:
        files[rel] = [os.path.getsize(path), file_crc32(path)]
  utils.write_json_atomically(os.path.join(step_dir, CHECKSUMS_FILE),
                        {"algorithm": "crc32", "files": files})


def verify_checksums(step_dir: str, share: tuple[int, int] = (0, 1)) -> bool:
  """Checks the files listed in CHECKSUMS_FILE (the `share` = (index, count) of them);
  raises ChecksumError naming the first bad file. False if the step has no checksums."""
  path = os.path.join(step_dir, CHECKSUMS_FILE)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    files = json.load(f)["files"]
  index, count = share
  for rel in sorted(files)[index::count]:
    size, crc = files[rel]
    full = os.path.join(step_dir, rel)
    if not os.path.exists(full):
      raise ChecksumError(f"{full} is missing")
    if os.path.getsize(full) != size:
      raise ChecksumError(f"{full} has {os.path.getsize(full)} bytes, {size} were saved")
    if file_crc32(full) != crc:
      raise ChecksumError(f"{full} does not match its checksum (its bytes changed "
                          f"after the save)")
  return True


def item_handlers():
  return {"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
          "config": ocp.JsonCheckpointHandler()}


class Checkpointer:
  """Saves and restores train state; every process calls every method (collectives)."""

  def __init__(self, workdir: str, *, max_to_keep: Optional[int] = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    # cleanup_tmp_directories: a save interrupted by a crash or a full disk leaves an
    # unfinished temporary directory that is no checkpoint and may be large.
    self._async = async_save
    self._saving = collections.deque()  # Steps whose checksums are still to write.
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        async_options=ocp.AsyncOptions(post_finalization_callback=self._write_checksums)
        if async_save else None)
    self._manager = self._new_manager()

  def _new_manager(self):
    return ocp.CheckpointManager(self.directory, options=self._options,
                                 item_handlers=item_handlers())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, data_state: dict, config_dict: dict):
    """Starts saving `step` (returns once the arrays are copied off the devices).

    The caller decides when to save; orbax's own policies (intervals, its preemption
    check) are bypassed with force=True so that they never skip or add a step.
    """
    data_item = _data_item(data_state)
    if self._async and jax.process_index() == 0:
      self._saving.append(step)
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave(data_item),
          config=ocp.args.JsonSave(config_dict)), force=True)
    except BaseException:
      if step in self._saving:
        self._saving.remove(step)
      raise
    if not self._async and jax.process_index() == 0:
      write_checksums(os.path.join(self.directory, str(step)))

  def _write_checksums(self):
    """Orbax's post-finalisation callback (process 0, background thread): every file
    of the oldest unfinished save is written and still in its temporary directory."""
    step = self._saving.popleft() if self._saving else None
    if step is None:
      return
    try:
      tmp = glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*"))
      target = tmp[0] if len(tmp) == 1 else os.path.join(self.directory, str(step))
      write_checksums(target)
    except OSError as e:  # The step stays restorable, only unchecked.
      logging.warning("Could not write checksums of checkpoint step %s: %s", step, e)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()

  def restore_latest_intact(self, abstract_state) -> Optional[tuple[int, Any, dict]]:
    """Restores the newest step that every process reads back completely.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings (what the
    arrays should become). Returns (step, state, this process's data state) or None
    if no checkpoint exists. Damaged steps are moved to `checkpoints_damaged/`.
    """
    damaged, restored = [], None
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored, reason = self._read_step(step, abstract_state), None
      except Exception as e:  # pylint: disable=broad-except
        # Any failure to read a step (missing or truncated files, bad metadata, shape
        # mismatch) means that step cannot be trusted; older ones may still be fine.
        restored, reason = None, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      # Each process reads only its own shards, so one may fail where others succeed:
      # all must agree, or they would resume from different steps.
      if _all_processes(reason is None):
        break
      restored = None
      damaged.append((step, reason or "another process could not read its part"))
    if damaged:
      self._quarantine(damaged, kept=restored[0] if restored else None)
    if restored is not None:
      restored = (restored[0], restored[1], _this_process_data(restored[2], restored[0]))
    return restored

  def _read_step(self, step, abstract_state):
    """Reads one step without orbax's end-of-restore barrier (a process that fails
    would leave the others waiting there); `restore_latest_intact` syncs instead."""
    path = epath.Path(self.directory) / str(step)
    verify_checksums(os.fspath(path), (jax.process_index(), jax.process_count()))
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype),
        abstract_state)
    handler = ocp.PyTreeCheckpointHandler()
    try:
      state = handler.restore(path / "state", args=ocp.args.PyTreeRestore(
          abstract_state, restore_args=restore_args))
    finally:
      handler.close()
    data = ocp.JsonCheckpointHandler().restore(path / "data", args=ocp.args.JsonRestore())
    if not isinstance(data, dict):
      raise ValueError(f"data item is {type(data).__name__}, expected a JSON object")
    return step, state, data

  def _quarantine(self, damaged, kept):
    """Moves damaged steps aside so that new saves at those steps can happen."""
    self._manager.close()
    if jax.process_index() == 0:
      aside = os.path.join(os.path.dirname(self.directory), "checkpoints_damaged")
      os.makedirs(aside, exist_ok=True)
      for step, _ in damaged:
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        if os.path.exists(src):
          shutil.move(src, dst)
      reasons = "; ".join(f"step {step}: {reason}" for step, reason in damaged)
      msg = (f"Skipped damaged checkpoint step(s) {[s for s, _ in damaged]} in "
             f"{self.directory} (moved to {aside}; {reasons}); "
             + (f"resuming from step {kept}." if kept is not None else "no intact checkpoint "
                "remains, starting from scratch."))
      logging.warning(msg)
      print(f"WARNING: {msg}", flush=True)
    _sync_processes("lensfm_quarantine")
    self._manager = self._new_manager()


def _data_item(data_state: dict) -> dict:
  """What the 'data' item holds: the one state all processes share, or each one's."""
  states = _gather_json(data_state)
  if all(s == states[0] for s in states):
    return states[0]
  return {PER_PROCESS: states}


def _this_process_data(item: dict, step: int) -> dict:
  if PER_PROCESS not in item:
    return item
  states = item[PER_PROCESS]
  if len(states) != jax.process_count():
    raise errors.UserError(
        f"Checkpoint step {step} holds input states of {len(states)} processes, but this "
        f"run has {jax.process_count()}: the input cannot continue exactly. Resume with "
        f"{len(states)} processes, or start a new workdir with config.init_from.")
  return states[jax.process_index()]


def _gather_json(obj) -> list:
  """Every process's JSON-able `obj`, in process order (a collective)."""
  if jax.process_count() == 1:
    return [obj]
  blob = np.frombuffer(json.dumps(obj, sort_keys=True).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.int32(blob.size))).reshape(-1)
  # Padded to a power of two so that growing states rarely need a new compilation.
  padded = np.zeros(1 << int(max(sizes.max(), 1) - 1).bit_length(), np.uint8)
  padded[:blob.size] = blob
  blobs = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(bytes(b[:n]).decode()) for b, n in zip(blobs, sizes)]


def _all_processes(ok: bool) -> bool:
  """True where `ok` holds on every process (a collective when there are several)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _sync_processes(name: str):
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
