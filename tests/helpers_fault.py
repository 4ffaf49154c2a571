r"""Test-only fault injection for tests/test_fault_tolerance.py (never used by lensfm itself).

Run as a script, it is `python -m lensfm.main` with one more objective, 'fault_probe':
  python tests/helpers_fault.py --config=configs/mae_vit_b.py:runlocal \
      --config.objective.name=fault_probe --config.visualize_every=1 --workdir=DIR
'fault_probe' is MAE (the same jitted loss, so runs with and without it reach the same
parameters) plus hooks chosen by environment variables, because `--config` is locked
and lensfm's config has no test fields:
  LENSFM_TEST_NAN_AT_STEP=k: the loss (hence every gradient) is NaN for the update that
    takes the state from step k-1 to step k (the trainer's step k, 1-based). k is kept in
    the objective's `extra` state, not baked into the program, so that every run, with
    or without a NaN, compiles the same train step (one compilation for all tests);
  LENSFM_TEST_PAUSE_AT_STEP=k: at the end of step k (in `visualize`, which the trainer
    calls on the host every `visualize_every` steps) process 0 writes
    WORKDIR/paused_at_<k> and sleeps until it is killed, so a test can SIGKILL it at
    a step it chose, with no timing guesses;
  LENSFM_TEST_SIGTERM_AT_STEP=k: at the end of step k process 0 (only: a scheduler may
    preempt one host of several) sends itself SIGTERM, in the middle of the trainer's
    step boundary (in multi-process runs it then waits 3 s, see `visualize`);
  LENSFM_TEST_SIGINT_AT_STEP=k: the same with SIGINT (Ctrl-C), sent
    LENSFM_TEST_SIGINT_COUNT times (default 1; 2 = a second Ctrl-C, sent once the
    checkpoint of the last even step is complete, so the abort cannot cut it off);
  LENSFM_TEST_PAUSE_PROCESS=i: the process that pauses (default 0), e.g. one stuck
    rank of several for the watchdog.
"""
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp

from lensfm.objectives import mae


def _env_step(name: str) -> int:
  value = os.environ.get(name, "")
  return int(value) if value else -1


def _step_of(path: str) -> int:
  # The trainer names pictures visualize_<step:07d>.png: that is the step just finished.
  return int(os.path.basename(path).split("_")[-1].split(".")[0])


class Objective(mae.Objective):
  """MAE with the test hooks described in the module docstring."""

  def __init__(self, config, model):
    super().__init__(config, model)
    self.nan_at = _env_step("LENSFM_TEST_NAN_AT_STEP")
    self.pause_at = _env_step("LENSFM_TEST_PAUSE_AT_STEP")
    self.sigterm_at = _env_step("LENSFM_TEST_SIGTERM_AT_STEP")
    self.sigint_at = _env_step("LENSFM_TEST_SIGINT_AT_STEP")
    self.sigint_count = int(os.environ.get("LENSFM_TEST_SIGINT_COUNT", "") or 1)
    self.pause_process = int(os.environ.get("LENSFM_TEST_PAUSE_PROCESS", "") or 0)

  def init(self, rng, batch):
    params, extra = super().init(rng, batch)
    return params, {**extra, "nan_at_step": jnp.asarray(self.nan_at, jnp.int32)}

  def loss(self, params, extra, batch, rng, step):
    loss, aux = super().loss(params, extra, batch, rng, step)
    # `step` is the state's step: 0 for the trainer's step 1. A product, not a `where`,
    # so that the gradients are NaN as well as the loss.
    return loss * jnp.where(step == extra["nan_at_step"] - 1, jnp.nan, 1.0), aux

  def visualize(self, params, extra, batch, rng, path):
    del params, extra, batch, rng  # No pictures: only the host-side hooks.
    step = _step_of(path)
    if step == self.pause_at and jax.process_index() == self.pause_process:
      self._pause(path, step)
    if jax.process_index() != 0:
      return
    if step == self.sigint_at:
      if self.sigint_count > 1:  # The last save (in the background) is complete first.
        _wait_for_checkpoint(os.path.dirname(path), step - step % 2)
      for _ in range(self.sigint_count):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
    if step == self.sigterm_at:
      os.kill(os.getpid(), signal.SIGTERM)
      if jax.process_count() > 1:
        # JAX's preemption service notices SIGTERM within about a second and then has
        # every process agree on a step; waiting here (the others wait in the next
        # collective) keeps that step within the test's few steps however fast they are.
        time.sleep(3)

  @staticmethod
  def _pause(path, step):
    with open(os.path.join(os.path.dirname(path), f"paused_at_{step}"), "w") as f:
      f.write(str(os.getpid()))
    while True:  # Until the test (or the watchdog) ends this process.
      time.sleep(1)


def _wait_for_checkpoint(workdir, step, timeout=300):
  deadline = time.time() + timeout
  target = os.path.join(workdir, "checkpoints", str(step))
  while not os.path.isdir(target) and time.time() < deadline:
    time.sleep(0.2)


def main():
  # Registered under lensfm.objectives so that `config.objective.name='fault_probe'`
  # finds it the way it finds every objective.
  sys.modules["lensfm.objectives.fault_probe"] = sys.modules[__name__]
  from absl import app  # pylint: disable=g-import-not-at-top
  from lensfm import main as lensfm_main  # pylint: disable=g-import-not-at-top
  app.run(lensfm_main.main)


if __name__ == "__main__":
  main()
