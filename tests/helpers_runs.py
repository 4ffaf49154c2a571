"""Test-side helpers for training runs in subprocesses (fault-tolerance and multi-process
tests): the shrunk runlocal MAE config as command-line flags, the environment of a
CPU process with N fake devices, and comparisons of whole checkpointed train states."""
import json
import os
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from lensfm.train import loading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "tests", "helpers_fault.py")
TOTAL_STEPS = 6

# configs/mae_vit_b.py:runlocal shrunk to 32x32 images and a few steps; checkpoints
# every 2 steps; `visualize_every=1` gives helpers_fault.py's hooks a call each step.
SMALL_RUN = {
    "objective.name": "fault_probe",
    "data.image_size": 32,
    "data.recipe_overrides": "{'num_pix': 32}",
    "total_steps": TOTAL_STEPS,
    "log_every": 1,
    "checkpoint_every": 2,
    "visualize_every": 1,
    "progress_bar": False,
    "mesh": "(('data',4),('fsdp',2))",
}


def command(workdir, *, entry=PROBE, **overrides) -> list[str]:
  """The command line of a run of SMALL_RUN with `overrides` (config field -> value)."""
  fields = {**SMALL_RUN, **{k.replace("__", "."): v for k, v in overrides.items()}}
  start = [sys.executable, entry] if entry.endswith(".py") else [sys.executable, "-m", entry]
  return start + ["--config=configs/mae_vit_b.py:runlocal", f"--workdir={workdir}"] + [
      f"--config.{k}={v}" for k, v in fields.items()]


def shared_cache_dir(tmp_path_factory):
  """One persistent XLA cache for all test modules of a pytest session (or worker)."""
  path = tmp_path_factory.getbasetemp() / "lensfm_xla_cache"
  path.mkdir(exist_ok=True)
  return path


def environment(devices: int, cache_dir=None, **hooks) -> dict:
  """A CPU process with `devices` fake devices; `hooks` are helpers_fault.py's variables.

  `cache_dir` shares compiled programs between the subprocesses (only the first one
  compiles). Not for multi-process runs: only process 0 writes that cache, so the
  others would compile alone and reach the first collective long after process 0.
  """
  env = {k: v for k, v in os.environ.items() if not k.startswith("LENSFM_TEST_")}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  env.update({k: str(v) for k, v in hooks.items()})
  return env


def run_main(*args, timeout=180, env=None) -> subprocess.CompletedProcess:
  """`python -m lensfm.main ARGS` in the repository on 2 fake CPU devices, captured."""
  return subprocess.run([sys.executable, "-m", "lensfm.main", *args], capture_output=True,
                        text=True, env=env or environment(2), cwd=ROOT, timeout=timeout)


def launch(cmd, env, log_path) -> subprocess.Popen:
  """Starts a run writing stdout and stderr to `log_path` (read with `output`)."""
  log = open(log_path, "w")
  return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def output(log_path) -> str:
  with open(log_path) as f:
    return f.read()


def run(cmd, env, log_path, timeout=600) -> tuple[int, str]:
  """Runs to the end; returns (exit code, stdout and stderr)."""
  proc = launch(cmd, env, log_path)
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    raise AssertionError(f"{cmd} ran over {timeout}s; output:\n{output(log_path)[-3000:]}")
  return proc.returncode, output(log_path)


def wait_for_file(path, procs, timeout=300) -> None:
  """Waits until `path` exists; fails if a process ends first (its hook never ran)."""
  deadline = time.time() + timeout
  while not os.path.exists(path):
    for proc in procs:
      if proc.poll() is not None:
        raise AssertionError(f"Process ended (exit {proc.returncode}) before {path} appeared.")
    if time.time() > deadline:
      raise AssertionError(f"{path} did not appear within {timeout}s.")
    time.sleep(0.1)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def checkpoint_steps(workdir) -> list[int]:
  """Finished checkpoints on disk (orbax's unfinished `<step>.orbax-checkpoint-tmp*`
  directories are listed by `leftovers`)."""
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def leftovers(workdir) -> list[str]:
  directory = os.path.join(workdir, "checkpoints")
  return sorted(d for d in os.listdir(directory) if not d.isdigit())


def metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def tensorboard_steps(workdir, tag="loss") -> list[int]:
  """The steps of `tag` as TensorBoard shows them (purged events left out)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  events.Reload()
  return [e.step for e in events.Scalars(tag)]


def summary(workdir) -> dict:
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def flat_state_of(state) -> dict[str, np.ndarray]:
  """{"['params']['encoder']...": array} for a train state in memory or loaded."""
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    # Optimizer states are namedtuples in memory (`.mu`) and dicts once loaded (['mu']).
    flat[re.sub(r"\.(\w+)", r"['\1']", jax.tree_util.keystr(path))] = np.asarray(leaf)
  return flat


def flat_state(path, keys=None) -> dict[str, np.ndarray]:
  """A checkpoint's train state, flat (see flat_state_of), optionally only top-level `keys`."""
  state, _, _ = loading.read_state(path)  # The whole train state, as numpy arrays.
  flat = flat_state_of(state)
  if keys:
    flat = {k: v for k, v in flat.items() if any(k.startswith(f"['{key}']") for key in keys)}
  return flat


def assert_states_equal(path_a, path_b, keys=None) -> None:
  """Bit-for-bit equality of two checkpoints' train states (or of their `keys`)."""
  a, b = flat_state(path_a, keys), flat_state(path_b, keys)
  assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))[:5]
  differ = [k for k in a if not np.array_equal(a[k], b[k])]
  assert not differ, (f"{len(differ)} of {len(a)} arrays differ between {path_a} and "
                     f"{path_b}: {differ[:4]}")
