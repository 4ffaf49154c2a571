"""A run loses no work when killed, preempted, damaged or fed NaNs (CPU, real signals).

Runs are subprocesses of tests/helpers_fault.py (the `python -m lensfm.main` entry point
plus the test objective 'fault_probe', MAE with host-side hooks) with 8 fake CPU devices,
on the runlocal MAE config shrunk to 32x32 images and 6 steps, checkpointing every 2
steps. They share a persistent XLA cache, so only the first of them compiles. Every
interrupted run is compared with one uninterrupted run: whole train states (parameters,
optimizer moments, step, counters), bit for bit.
"""
import glob
import os
import random
import re
import shutil
import signal
import sys

import numpy as np
import pytest

import helpers_fault
import helpers_runs as runs
from lensfm.train import checkpoint
from lensfm.train import loading
from lensfm.train import trainer as trainer_lib
from lensfm.train import watchdog

# One worker builds this module's fixtures (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("fault_tolerance")

TOTAL = runs.TOTAL_STEPS


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return runs.shared_cache_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
  """Workdir of the uninterrupted run (checkpoints 2, 4, 6)."""
  workdir = tmp_path_factory.mktemp("reference")
  code, out = runs.run(runs.command(workdir), runs.environment(8, cache_dir),
                       workdir / "log.txt")
  assert code == 0, out[-3000:]
  assert runs.checkpoint_steps(workdir) == [2, 4, 6]
  return workdir


def test_sigkill_at_a_random_step_then_restart_is_bit_exact(reference, cache_dir, tmp_path):
  # A random step (printed on failure; LENSFM_TEST_KILL_AT=k repeats one): the kill may
  # land right after a step, or while that step's checkpoint is being written.
  kill_at = int(os.environ.get("LENSFM_TEST_KILL_AT", 0)) or random.randint(1, TOTAL - 1)
  why = f"SIGKILL after step {kill_at}"
  workdir = tmp_path / "run"
  proc = runs.launch(runs.command(workdir),
                     runs.environment(8, cache_dir, LENSFM_TEST_PAUSE_AT_STEP=kill_at),
                     tmp_path / "killed.txt")
  try:
    runs.wait_for_file(workdir / f"paused_at_{kill_at}", [proc])
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, why
  assert all(s <= kill_at for s in runs.checkpoint_steps(workdir)), why

  code, out = runs.run(runs.command(workdir), runs.environment(8, cache_dir),
                       tmp_path / "restart.txt")
  assert code == 0, f"{why}\n{out[-3000:]}"
  resumed = re.search(r"Resuming from checkpoint step (\d+)", out)
  resumed = int(resumed.group(1)) if resumed else 0  # 0: from scratch.
  # The last save due, or the one before if the kill cut that save off (orbax writes in
  # the background and finishes one save before it starts the next).
  last_due = kill_at - kill_at % 2
  assert resumed in (last_due, max(last_due - 2, 0)), f"{why}: resumed from {resumed}"
  assert runs.checkpoint_steps(workdir) == [2, 4, 6] and not runs.leftovers(workdir), why
  runs.assert_states_equal(workdir, reference)


# Covered in CI by test_first_ctrl_c_saves_... (the same save-at-the-next-boundary path)
# and tests/test_multiprocess.py's SIGTERM test (save, exit 0, resume, one row per step).
@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_exits_0_and_restart_finishes(reference, cache_dir,
                                                                    tmp_path):
  workdir = tmp_path / "run"
  # SIGTERM arrives during step 4's boundary, after its save decision: the run must save
  # at step 5 (no regular checkpoint there), not exit without saving, and exit 0.
  code, out = runs.run(runs.command(workdir),
                       runs.environment(8, cache_dir, LENSFM_TEST_SIGTERM_AT_STEP=4),
                       tmp_path / "preempted.txt")
  assert code == 0, out[-3000:]
  assert "Received SIGTERM: saved a checkpoint at step 5" in out, out[-3000:]
  assert runs.checkpoint_steps(workdir) == [2, 4, 5] and not runs.leftovers(workdir)
  assert [m["step"] for m in runs.metrics(workdir)] == [1, 2, 3, 4, 5]
  summary = runs.summary(workdir)
  assert summary["preempted"] is True and summary["final_step"] == 5

  code, out = runs.run(runs.command(workdir), runs.environment(8, cache_dir),
                       tmp_path / "restart.txt")
  assert code == 0, out[-3000:]
  assert "Resuming from checkpoint step 5" in out
  assert [m["step"] for m in runs.metrics(workdir)] == list(range(1, TOTAL + 1))
  assert runs.summary(workdir)["preempted"] is False
  runs.assert_states_equal(workdir, reference)


def test_first_ctrl_c_saves_at_the_next_step_exits_0_and_restart_is_bit_exact(
    reference, cache_dir, tmp_path):
  workdir = tmp_path / "run"
  # Ctrl-C during step 3's boundary: saved at step 4, exit 0, no traceback.
  code, out = runs.run(runs.command(workdir),
                       runs.environment(8, cache_dir, LENSFM_TEST_SIGINT_AT_STEP=3),
                       tmp_path / "interrupted.txt")
  assert code == 0, out[-3000:]
  assert "Ctrl-C: saving a checkpoint at the next step boundary" in out, out[-3000:]
  assert "Received SIGINT: saved a checkpoint at step 4" in out, out[-3000:]
  assert "KeyboardInterrupt" not in out
  assert runs.checkpoint_steps(workdir) == [2, 4] and not runs.leftovers(workdir)

  code, out = runs.run(runs.command(workdir), runs.environment(8, cache_dir),
                       tmp_path / "restart.txt")
  assert code == 0, out[-3000:]
  assert "Resuming from checkpoint step 4" in out
  runs.assert_states_equal(workdir, reference)


def test_second_ctrl_c_aborts_and_the_resumed_run_logs_each_step_once(reference, cache_dir,
                                                                    tmp_path):
  workdir = tmp_path / "run"
  # Two Ctrl-C during step 3's boundary: out at once, nothing saved after step 2, yet
  # steps 1-3 were logged (log_every=1).
  code, out = runs.run(runs.command(workdir),
                       runs.environment(8, cache_dir, LENSFM_TEST_SIGINT_AT_STEP=3,
                                        LENSFM_TEST_SIGINT_COUNT=2),
                       tmp_path / "aborted.txt")
  assert code == 130, out[-3000:]
  assert "Second Ctrl-C: aborting now, without saving." in out
  assert runs.checkpoint_steps(workdir) == [2]
  assert [m["step"] for m in runs.metrics(workdir)] == [1, 2, 3]

  code, out = runs.run(runs.command(workdir), runs.environment(8, cache_dir),
                       tmp_path / "restart.txt")
  assert code == 0, out[-3000:]
  assert "Resuming from checkpoint step 2" in out
  # Step 3 was logged by both runs: once in metrics.jsonl and TensorBoard.
  assert [m["step"] for m in runs.metrics(workdir)] == list(range(1, TOTAL + 1))
  assert runs.tensorboard_steps(workdir) == list(range(1, TOTAL + 1))
  runs.assert_states_equal(workdir, reference)


# Covered in CI by tests/test_multiprocess.py's stuck-rank test (the same watchdog, exit
# code and report) and tests/test_watchdog.py.
@pytest.mark.slow
def test_watchdog_ends_a_stuck_run_naming_the_step(cache_dir, tmp_path):
  workdir = tmp_path / "run"
  # The host is stuck after step 2 (as if in a collective that never returns).
  code, out = runs.run(runs.command(workdir, watchdog_seconds=45),
                       runs.environment(8, cache_dir, LENSFM_TEST_PAUSE_AT_STEP=2),
                       tmp_path / "stuck.txt", timeout=600)
  assert code == watchdog.WATCHDOG_EXIT_CODE, out[-3000:]
  # (On a heavily loaded machine step 2's first save alone may outlast the watchdog.)
  found = re.search(r"lensfm watchdog: process 0 of 1 .* is stuck: no step boundary for 45 s "
                    r".*last boundary: step 2, then (drawing pictures|saving checkpoint) ",
                    out)
  assert found, out[-3000:]
  if "drawing pictures" in found.group(0):
    assert "in _pause" in out  # The Python stacks show where.


# Covered in CI by test_each_kind_of_damage_... (truncated_array_file: detected, set aside,
# the previous step restored) and the SIGKILL test (a resumed run ends bit-exact).
@pytest.mark.slow
def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(reference, cache_dir,
                                                                   tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  # As a full disk or a dying process leaves it: the biggest array file cut in half.
  chunk = max(glob.glob(str(workdir / "checkpoints" / "6" / "state" / "**" / "d" / "*"),
                        recursive=True), key=os.path.getsize)
  truncated = os.path.getsize(chunk) // 2
  os.truncate(chunk, truncated)

  code, out = runs.run(runs.command(workdir), runs.environment(8, cache_dir),
                       tmp_path / "restart.txt")
  assert code == 0, out[-3000:]
  assert re.search(r"WARNING: Skipped damaged checkpoint step\(s\) \[6\] .*resuming from "
                   r"step 4\.", out), out[-3000:]
  assert "Resuming from checkpoint step 4" in out
  # The good checkpoints are all there, step 6 was saved again, the damaged one kept aside.
  assert runs.checkpoint_steps(workdir) == [2, 4, 6]
  aside = glob.glob(str(workdir / "checkpoints_damaged" / "6-*"))
  moved = os.path.join(aside[0], os.path.relpath(chunk, workdir / "checkpoints" / "6"))
  assert len(aside) == 1 and os.path.getsize(moved) == truncated
  runs.assert_states_equal(workdir, reference)


def _truncate_chunk(step_dir):
  chunk = max(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True),
              key=os.path.getsize)
  os.truncate(chunk, os.path.getsize(chunk) // 2)


def _flip_a_byte(step_dir):
  chunk = max(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True),
              key=os.path.getsize)
  with open(chunk, "r+b") as f:
    f.seek(os.path.getsize(chunk) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x10]))


DAMAGE = {
    "truncated_array_file": _truncate_chunk,
    "missing_tree_metadata": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
    "empty_manifest": lambda d: os.truncate(os.path.join(d, "state", "manifest.ocdbt"), 0),
    "missing_state_item": lambda d: shutil.rmtree(os.path.join(d, "state")),
    "invalid_data_json": lambda d: os.truncate(os.path.join(d, "data", "metadata"), 3),
    "emptied_step": lambda d: [shutil.rmtree(d), os.makedirs(d)],
    # A bit flip that leaves every file readable: only the checksums see it.
    "flipped_byte_in_array_file": _flip_a_byte,
}


@pytest.fixture(scope="module")
def abstract_state(reference):
  """What the reference run's state restores into (shapes and shardings; no compiling)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(sys.modules, "lensfm.objectives.fault_probe", helpers_fault)
    trainer = trainer_lib.Trainer(loading.load_config(reference), "/tmp/unused")
    return trainer.abstract_with_shardings()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_each_kind_of_damage_is_detected_and_set_aside(reference, abstract_state, tmp_path,
                                                       capsys, damage):
  # In-process and without training: the restore itself, against every kind of damage.
  workdir = tmp_path / "run"
  shutil.copytree(reference / "checkpoints", workdir / "checkpoints")
  DAMAGE[damage](str(workdir / "checkpoints" / "6"))
  # And a save that never finished (a process killed while writing it): not a step.
  os.makedirs(workdir / "checkpoints" / "8.orbax-checkpoint-tmp" / "state")

  ckpt = checkpoint.Checkpointer(str(workdir))
  try:
    step, state, data_state = ckpt.restore_latest_intact(abstract_state)
  finally:
    ckpt.close()
  assert step == 4 and data_state == {"step": 4}
  out = capsys.readouterr().out
  assert "Skipped damaged checkpoint step(s) [6]" in out and "resuming from step 4" in out
  assert runs.checkpoint_steps(workdir) == [2, 4] and not runs.leftovers(workdir)
  assert len(glob.glob(str(workdir / "checkpoints_damaged" / "6-*"))) == 1
  expected = runs.flat_state(reference / "checkpoints" / "4")
  got = runs.flat_state_of(state)
  assert sorted(got) == sorted(expected)
  assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_nonfinite_error_names_the_step_and_keeps_the_last_checkpoint(reference, cache_dir,
                                                                     tmp_path):
  workdir = tmp_path / "run"
  code, out = runs.run(runs.command(workdir),
                       runs.environment(8, cache_dir, LENSFM_TEST_NAN_AT_STEP=3),
                       tmp_path / "nan.txt")
  assert code != 0
  assert "NonFiniteError: Non-finite loss or gradient at step 3" in out, out[-3000:]
  # Nothing was saved after the fault, and the save of step 2, still being written when
  # the error came, was completed rather than cut off.
  assert runs.checkpoint_steps(workdir) == [2] and not runs.leftovers(workdir)
  assert [m["step"] for m in runs.metrics(workdir)] == [1, 2]
  # Step 2 as the clean run saved it (the runs differ only in `extra`, the NaN's step).
  runs.assert_states_equal(workdir, reference / "checkpoints" / "2",
                           keys=("params", "opt_state", "step", "nonfinite_count"))


def test_nonfinite_skip_drops_the_update_counts_it_and_finishes(cache_dir, tmp_path):
  workdir = tmp_path / "run"
  code, out = runs.run(runs.command(workdir, nonfinite="skip", checkpoint_every=1,
                                    keep_checkpoints=TOTAL),
                       runs.environment(8, cache_dir, LENSFM_TEST_NAN_AT_STEP=3),
                       tmp_path / "nan.txt")
  assert code == 0, out[-3000:]
  assert ("skipped 1 update(s) with a non-finite loss or gradient, the first at step 3"
          in out), out[-3000:]
  logged = {m["step"]: m for m in runs.metrics(workdir)}
  assert logged[3]["loss"] == "nan" and logged[3]["nonfinite_count"] == 1
  assert [logged[s]["nonfinite_count"] for s in range(1, TOTAL + 1)] == [0, 0, 1, 1, 1, 1]
  assert all(logged[s]["first_nonfinite_step"] == 3 for s in range(3, TOTAL + 1))
  assert all(np.isfinite(logged[s]["loss"]) for s in (1, 2, 4, 5, 6))
  summary = runs.summary(workdir)
  assert summary["final_step"] == TOTAL and summary["nonfinite_count"] == 1
  # The NaN step left parameters, optimizer moments and objective state as they were.
  ckpts = workdir / "checkpoints"
  runs.assert_states_equal(ckpts / "2", ckpts / "3", keys=("params", "opt_state", "extra"))
  with pytest.raises(AssertionError, match="differ"):
    runs.assert_states_equal(ckpts / "3", ckpts / "4", keys=("params",))
