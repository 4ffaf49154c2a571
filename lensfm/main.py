r"""lensfm's entry point: `python -m lensfm.main --config=configs/NAME.py[:ARGS] --workdir=DIR`.

`--config.field=value` overrides a field of the (locked) config; a misspelt field
fails with an error naming it. `config.task` picks what runs (`lensfm.tasks.TASKS`).
"""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lensfm import compilation_cache
from lensfm import tasks
from lensfm.train import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:ARGS]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/NAME.py is required.")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir=DIR is required.")
  task = config.get("task", "pretrain")
  if task not in tasks.TASKS:
    raise app.UsageError(f"config.task={task!r} is not one of {sorted(tasks.TASKS)}.")
  if not flags.FLAGS["verbosity"].present:
    # Orbax and JAX log every save at INFO; the progress bar and our messages suffice.
    logging.set_verbosity(logging.WARNING)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  compilation_cache.enable(config.get("compilation_cache_dir", None))
  logging.info("Config:\n%s", config)
  tasks.TASKS[task].run(config, os.path.expanduser(_WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
