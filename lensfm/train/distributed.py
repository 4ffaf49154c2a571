"""Joining JAX's multi-controller runtime: which launcher started this process.

Every process of a multi-process run then runs the same program on its own devices:
it reads only its slice of each batch, process 0 alone writes logs and files, and
checkpoints are written collectively. JAX's preemption service starts too (see
trainer.py: SIGTERM on any process makes all of them save the same step and exit).
"""
import glob
import importlib.util
import os
from typing import Optional

from absl import logging
import jax
from orbax.checkpoint import multihost as ocp_multihost

from lensfm import errors


def distributed_settings(coordinator_address=None, num_processes=None, process_id=None,
                         environ=None) -> Optional[dict]:
  """How this process joins a multi-process run: kwargs for jax.distributed.initialize.

  Returns None for a single-process run (one host, any number of its devices). In order:
    1. --coordinator_address / --num_processes / --process_id, each defaulting to the
       environment variable JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
       (any host, any launcher); --num_processes=1 forces a single process;
    2. a SLURM job step with several tasks (`srun`): JAX reads SLURM's variables;
    3. a Cloud TPU VM (a pod slice, or one host): JAX reads the TPU metadata, as
       JAX recommends on every TPU worker (--num_processes=1 opts out).
  Multi-process runs must initialise before anything touches the devices.
  """
  env = os.environ if environ is None else environ
  address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
  count = num_processes if num_processes is not None else _env_int(env, "JAX_NUM_PROCESSES")
  index = process_id if process_id is not None else _env_int(env, "JAX_PROCESS_ID")
  if count == 1 and not address:
    return None
  if address or count is not None or index is not None:
    in_slurm = _in_slurm_step(env)
    if not in_slurm and (not address or count is None or index is None):
      raise errors.UserError(
          f"Multi-process run outside SLURM needs all of --coordinator_address (got "
          f"{address!r}), --num_processes (got {count!r}) and --process_id (got {index!r}), "
          f"or the variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.")
    if count is not None and index is not None and not 0 <= index < count:
      raise errors.UserError(f"--process_id={index} must be in [0, --num_processes={count}).")
    return {k: v for k, v in dict(coordinator_address=address, num_processes=count,
                                  process_id=index).items() if v is not None}
  if _in_slurm_step(env):
    return {}
  if _on_cloud_tpu_vm(env):
    return {}
  return None


def _env_int(env, name) -> Optional[int]:
  value = env.get(name, "")
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise errors.UserError(f"Environment variable {name}={value!r} must be an integer.") from None


def _in_slurm_step(env) -> bool:
  # SLURM_STEP_NODELIST exists only inside `srun`: an sbatch script's own shell (one
  # process, even when the job has many tasks) must not wait for peers that never come.
  return "SLURM_STEP_NODELIST" in env and int(env.get("SLURM_NTASKS", "1") or 1) > 1


def _on_cloud_tpu_vm(env) -> bool:
  """TPU hosts (GKE sets the worker list; TPU VMs have libtpu and TPU device files)."""
  if env.get("TPU_WORKER_HOSTNAMES") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  platforms = env.get("JAX_PLATFORMS", "")
  if (platforms and "tpu" not in platforms.split(",")) or not importlib.util.find_spec("libtpu"):
    return False
  return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def initialize(coordinator_address=None, num_processes=None, process_id=None) -> None:
  """Joins the multi-process run this process belongs to, if any (see the module)."""
  settings = distributed_settings(coordinator_address, num_processes, process_id)
  if settings is None:
    return
  jax.distributed.initialize(**settings)
  logging.info("Process %d of %d; %d local of %d devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def barrier(name: str, timeout_seconds: float = 3600) -> None:
  """Waits until every process got here, through JAX's coordination service (not a
  device collective, so it has no 30 s connection timeout like gloo's); a no-op for one
  process. `name` must be new for each barrier."""
  if jax.process_count() > 1:
    sync = ocp_multihost.get_barrier_sync_fn()
    sync(key=name, timeout_ms=int(timeout_seconds * 1000))
