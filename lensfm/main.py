r"""lensfm's entry point: `python -m lensfm.main --config=configs/NAME.py[:ARGS] --workdir=DIR`.

`--config.field=value` overrides a field of the (locked) config; a misspelt field
fails with an error naming it. `config.task` picks what runs.
"""
import importlib
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:ARGS]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")

# config.task -> module with `run(config, workdir) -> dict`.
# Pretraining and fine-tuning are the same loop around different objectives; the
# fine-tuning task first checks init_from and resolves labelled pools and target stats.
TASKS = {
    "pretrain": "lensfm.train.trainer",
    "finetune": "lensfm.evaluate.finetune",
    "evaluate": "lensfm.evaluate.evaluate",
    "predict": "lensfm.evaluate.predict",
    "knn": "lensfm.evaluate.knn_probe",
}


def initialize_distributed():
  """Joins JAX's multi-controller runtime when the run has several processes.

  Explicit flags win; otherwise JAX detects TPU pods and SLURM (srun) by itself. A
  single process on one host needs neither.
  """
  import jax  # pylint: disable=g-import-not-at-top
  explicit = _COORDINATOR.value is not None or (_NUM_PROCESSES.value or 1) > 1
  if explicit:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()
  elif os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/NAME.py is required.")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir=DIR is required.")
  task = config.get("task", "pretrain")
  if task not in TASKS:
    raise app.UsageError(f"config.task={task!r} is not one of {sorted(TASKS)}.")
  if not flags.FLAGS["verbosity"].present:
    # Orbax and JAX log every save at INFO; the progress bar and our messages suffice.
    logging.set_verbosity(logging.WARNING)
  initialize_distributed()
  logging.info("Config:\n%s", config)
  importlib.import_module(TASKS[task]).run(config, os.path.expanduser(_WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
