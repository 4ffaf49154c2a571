"""Multi-process training on one host, as on a cluster: JAX's own multi-controller runtime.

Two processes with 4 fake CPU devices each (`--coordinator_address=localhost:PORT
--num_processes=2 --process_id=i`, CPU collectives over gloo) train the shrunk runlocal
MAE config of helpers_runs.py; one of them alone gets SIGTERM, both save the same step
and exit 0; restarted, they finish. The result matches one process with 8 devices (the
same global batches, keys and mesh; only the order of cross-process sums differs, so
to float rounding rather than bit for bit).
"""
import re
import subprocess

import numpy as np
import pytest

from lensfm.train import distributed
from lensfm.train import watchdog
import helpers_runs as runs

TOTAL = runs.TOTAL_STEPS


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference")
  code, out = runs.run(runs.command(workdir),
                       runs.environment(8, runs.shared_cache_dir(tmp_path_factory)),
                       workdir / "log.txt")
  assert code == 0, out[-3000:]
  return workdir


def run_two_processes(workdir, log_prefix, timeout=420, overrides=None, cache_dir=None,
                      **hooks) -> list[tuple[int, str]]:
  """Both processes of a run to the end: [(exit code, output)] for processes 0 and 1."""
  port = runs.free_port()
  procs, logs = [], []
  for i in range(2):
    cmd = runs.command(workdir, **(overrides or {})) + [
        f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"]
    logs.append(f"{log_prefix}.process{i}.txt")
    # No shared compilation cache unless it is already filled by an earlier run of the
    # same programs: process 1 would compile alone (only process 0 writes the cache)
    # and reach the first collective past gloo's 30 s rendezvous timeout.
    procs.append(runs.launch(cmd, runs.environment(4, cache_dir, **hooks), logs[-1]))
  try:
    for proc in procs:
      proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    pass
  finally:
    for proc in procs:  # One that failed leaves the other waiting in a collective.
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return [(proc.returncode, runs.output(log)) for proc, log in zip(procs, logs)]


def test_two_processes_stop_together_on_sigterm_resume_and_match_one(reference, tmp_path):
  workdir = tmp_path / "run"
  # SIGTERM reaches process 0 only, after step 1 (helpers_fault.py); JAX's preemption
  # service must bring process 1 to the same checkpoint step.
  results = run_two_processes(workdir, tmp_path / "preempted", LENSFM_TEST_SIGTERM_AT_STEP=1)
  for i, (code, out) in enumerate(results):
    assert code == 0, f"process {i}:\n{out[-3000:]}"
  saved = re.search(r"Received SIGTERM: saved a checkpoint at step (\d+)", results[0][1])
  assert saved, results[0][1][-3000:]
  stop = int(saved.group(1))
  assert "Received SIGTERM" not in results[1][1]  # Process 0 alone prints and writes.
  assert runs.summary(workdir)["preempted"] is True
  assert stop in runs.checkpoint_steps(workdir) and max(runs.checkpoint_steps(workdir)) == stop
  assert not runs.leftovers(workdir)

  results = run_two_processes(workdir, tmp_path / "restart")
  for i, (code, out) in enumerate(results):
    assert code == 0, f"process {i}:\n{out[-3000:]}"
  assert f"Resuming from checkpoint step {stop}" in results[0][1]
  assert runs.checkpoint_steps(workdir)[-1] == TOTAL
  # One line per step: only process 0 wrote metrics, in both runs.
  logged = runs.metrics(workdir)
  assert [m["step"] for m in logged] == list(range(1, TOTAL + 1))

  # Same losses and final state as one process with 8 devices.
  expected_loss = [m["loss"] for m in runs.metrics(reference)]
  np.testing.assert_allclose([m["loss"] for m in logged], expected_loss, rtol=1e-5)
  got, expected = runs.flat_state(workdir), runs.flat_state(reference)
  assert sorted(got) == sorted(expected)
  for key in expected:
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=2e-5, err_msg=key)


# Before the trainer bounded its run-ahead (trainer.MAX_STEPS_IN_FLIGHT) this job hung
# in most runs once the host was ~16 steps ahead: no logging, saving or pictures to
# stop it; 40 steps leave room for that. The watchdog turns a hang into exit 124.
NO_SYNC_RUN = dict(total_steps=40, log_every=1000, checkpoint_every=1000,
                   visualize_every=0, watchdog_seconds=200)


def test_two_process_runs_never_hang(reference_40, tmp_path):
  cache_dir = tmp_path / "xla_cache"  # Filled by run 1's process 0, read by both after.
  for attempt in range(3):
    workdir = tmp_path / f"run{attempt}"
    results = run_two_processes(workdir, tmp_path / f"run{attempt}", timeout=900,
                                overrides=NO_SYNC_RUN,
                                cache_dir=cache_dir if attempt else None)
    for i, (code, out) in enumerate(results):
      assert code == 0, f"run {attempt}, process {i} (exit {code}):\n{out[-4000:]}"
    got, expected = runs.flat_state(workdir), runs.flat_state(reference_40)
    for key in expected:
      np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=2e-5,
                                 err_msg=f"run {attempt}: {key}")


@pytest.fixture(scope="module")
def reference_40(tmp_path_factory):
  """NO_SYNC_RUN in one process with 8 devices."""
  workdir = tmp_path_factory.mktemp("reference_40")
  code, out = runs.run(runs.command(workdir, **NO_SYNC_RUN),
                       runs.environment(8, runs.shared_cache_dir(tmp_path_factory)),
                       workdir / "log.txt")
  assert code == 0, out[-3000:]
  return workdir


def test_a_stuck_rank_makes_every_process_exit_by_the_watchdog(tmp_path):
  # Process 1 stops in Python after step 2; process 0 then waits in step 3's collective.
  results = run_two_processes(tmp_path / "run", tmp_path / "stuck", timeout=900,
                              overrides=dict(watchdog_seconds=60),
                              LENSFM_TEST_PAUSE_AT_STEP=2, LENSFM_TEST_PAUSE_PROCESS=1)
  for i, (code, out) in enumerate(results):
    assert code == watchdog.WATCHDOG_EXIT_CODE, f"process {i} (exit {code}):\n{out[-4000:]}"
    assert re.search(rf"lensfm watchdog: process {i} of 2 .* is stuck: no step boundary "
                     r"for 60 s", out), out[-3000:]
  # The stuck rank names where it is; the other waits for it further on.
  assert "last boundary: step 2, then drawing pictures at step 2" in results[1][1]
  assert "in _pause" in results[1][1]


@pytest.mark.parametrize("flags,environ,expected", [
    ({}, {}, None),
    (dict(coordinator_address="h:1234", num_processes=2, process_id=1), {},
     dict(coordinator_address="h:1234", num_processes=2, process_id=1)),
    ({}, dict(JAX_COORDINATOR_ADDRESS="h:1234", JAX_NUM_PROCESSES="4", JAX_PROCESS_ID="3"),
     dict(coordinator_address="h:1234", num_processes=4, process_id=3)),
    # srun: JAX reads SLURM's variables itself; an sbatch shell (no step) stays alone.
    ({}, dict(SLURM_JOB_ID="7", SLURM_NTASKS="8", SLURM_STEP_NODELIST="n[1-2]"), {}),
    ({}, dict(SLURM_JOB_ID="7", SLURM_NTASKS="8"), None),
    (dict(num_processes=1), dict(SLURM_JOB_ID="7", SLURM_NTASKS="8",
                                 SLURM_STEP_NODELIST="n[1-2]"), None),
    ({}, dict(TPU_WORKER_HOSTNAMES="t0,t1,t2,t3"), {}),
])
def test_distributed_settings_from_flags_environment_and_cluster(flags, environ, expected):
  assert distributed.distributed_settings(**flags, environ=environ) == expected


@pytest.mark.parametrize("flags,environ,message", [
    (dict(num_processes=2), {}, "needs all of --coordinator_address"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), {},
     r"--process_id=2 must be in \[0, --num_processes=2\)"),
    ({}, dict(JAX_NUM_PROCESSES="two"), "JAX_NUM_PROCESSES='two' must be an integer"),
])
def test_incomplete_distributed_settings_fail_by_name(flags, environ, message):
  with pytest.raises(Exception, match=message):
    distributed.distributed_settings(**flags, environ=environ)
