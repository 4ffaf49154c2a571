"""The watchdog and the stop signals, in-process (exits replaced by recorders)."""
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.train import checkpoint
from lensfm.train import watchdog


class Exits:
  def __init__(self):
    self.codes = []
    self.done = threading.Event()

  def __call__(self, code):
    self.codes.append(code)
    self.done.set()


def test_watchdog_fires_when_no_step_boundary_comes(capfd):
  exits = Exits()
  dog = watchdog.Watchdog(0.5, process=(1, 2), exit_fn=exits)
  try:
    for step in range(1, 6):  # Beats keep it quiet.
      dog.beat(step, f"running step {step + 1}")
      time.sleep(0.2)
    assert not exits.codes
    assert exits.done.wait(5)
  finally:
    dog.stop()
  assert exits.codes == [watchdog.WATCHDOG_EXIT_CODE]
  err = capfd.readouterr().err
  assert "lensfm watchdog: process 1 of 2" in err and "last boundary: step 5, then running step 6" in err
  assert "test_watchdog_fires_when_no_step_boundary_comes" in err  # The stacks.


def test_watchdog_off_and_after_a_stop_signal(monkeypatch):
  exits = Exits()
  off = watchdog.Watchdog(0, exit_fn=exits)
  assert off._thread is None  # pylint: disable=protected-access
  off.stop()
  # A stop request shortens what the loop may take to reach its next boundary.
  monkeypatch.setattr(watchdog, "STOP_GRACE_SECONDS", 0.3)
  dog = watchdog.Watchdog(60, exit_fn=exits)
  try:
    dog.beat(3, "running step 4")
    dog.stop_requested()
    assert exits.done.wait(5)
  finally:
    dog.stop()
  assert exits.codes == [watchdog.WATCHDOG_EXIT_CODE]


def test_first_sigint_asks_to_stop_second_aborts(capfd):
  stops, exits = [], Exits()
  before = signal.getsignal(signal.SIGINT)  # SIG_IGN inside pytest-xdist workers.
  signals = watchdog.StopSignals(stops.append, exit_fn=exits)
  try:
    assert signals.installed
    os.kill(os.getpid(), signal.SIGINT)  # No KeyboardInterrupt.
    deadline = time.time() + 5
    while not stops and time.time() < deadline:
      time.sleep(0.05)
    assert stops == ["SIGINT"] and not exits.codes
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)
    assert "SIGTERM" in stops and not exits.codes
    os.kill(os.getpid(), signal.SIGINT)
    assert exits.done.wait(5)
    assert exits.codes == [watchdog.ABORT_EXIT_CODE]
  finally:
    signals.restore()
  assert signal.getsignal(signal.SIGINT) == before
  err = capfd.readouterr().err
  assert "Ctrl-C: saving a checkpoint at the next step boundary" in err
  assert "Second Ctrl-C: aborting now" in err


@pytest.mark.parametrize("async_save", [True, False])
def test_checkpoints_carry_checksums_and_a_flipped_byte_is_set_aside(tmp_path, capsys,
                                                                     async_save):
  state = {"w": jnp.arange(4096, dtype=jnp.float32), "step": jnp.int32(0)}
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=async_save)
  for step in (1, 2):
    ckpt.save(step, {**state, "w": state["w"] * step, "step": jnp.int32(step)},
              {"step": step}, {"c": 1})
  ckpt.close()
  for step in (1, 2):
    listed = os.path.join(tmp_path, "checkpoints", str(step), checkpoint.CHECKSUMS_FILE)
    assert os.path.exists(listed)
    assert checkpoint.verify_checksums(os.path.dirname(listed))
  # One flipped bit in the biggest file of step 2 (orbax may still decode it).
  step_dir = os.path.join(tmp_path, "checkpoints", "2")
  files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state"))
           for n in ns]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.seek(os.path.getsize(biggest) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 1]))
  with pytest.raises(checkpoint.ChecksumError, match="does not match its checksum"):
    checkpoint.verify_checksums(step_dir)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=async_save)
  try:
    step, restored, data = ckpt.restore_latest_intact(abstract)
  finally:
    ckpt.close()
  assert step == 1 and data == {"step": 1}
  np.testing.assert_array_equal(restored["w"], np.arange(4096, dtype=np.float32))
  out = capsys.readouterr().out
  assert "Skipped damaged checkpoint step(s) [2]" in out and "ChecksumError" in out
  assert os.listdir(os.path.join(tmp_path, "checkpoints_damaged"))
