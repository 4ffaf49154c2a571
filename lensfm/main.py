r"""lensfm's entry point: `python -m lensfm.main --config=configs/NAME.py[:ARGS] --workdir=DIR`.

`--config.field=value` overrides a field of the (locked) config; a misspelt field
fails with an error naming it. `config.task` picks what runs. Mistakes in what was
asked for (a misspelt field, a missing file, a checkpoint that does not fit) print one
line and exit with status 2; `--verbosity=1` also prints their traceback.
"""
import ast
import functools
import glob
import importlib
import importlib.util
import os
import re
import sys
from typing import Optional

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lensfm import config_args
from lensfm import errors

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
TASK_SUMMARIES = {
    "pretrain": "train an objective (self-supervised pretraining, or any objective) from scratch",
    "finetune": "train a downstream head (and the encoder) from a pretraining run's init_from",
    "evaluate": "score a fine-tuned run on a dataset: summary.json, ROC/scatter/triptych PNGs",
    "predict": "a fine-tuned run on your own .npy/FITS images -> predictions.csv",
    "knn": "kNN classification on a pretrained encoder's frozen features",
}
_USAGE = __doc__
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
      raise app.UsageError(
          f"Multi-process run outside SLURM needs all of --coordinator_address (got "
          f"{address!r}), --num_processes (got {count!r}) and --process_id (got {index!r}), "
          f"or the variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.")
    if count is not None and index is not None and not 0 <= index < count:
      raise app.UsageError(f"--process_id={index} must be in [0, --num_processes={count}).")
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
    raise app.UsageError(f"Environment variable {name}={value!r} must be an integer.") from None


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


def initialize_distributed():
  """Joins JAX's multi-controller runtime when the run has several processes.

  Every process then runs the same program on its own devices: it reads only its
  slice of each batch, process 0 alone writes logs and files, and checkpoints are
  written collectively. JAX's preemption service starts too (see trainer.py: SIGTERM
  on any process makes all of them save the same step and exit).
  """
  settings = distributed_settings(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if settings is None:
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(**settings)
  logging.info("Process %d of %d; %d local of %d devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _first_docstring_line(path: str) -> str:
  """The summary line of a Python file's docstring, read without running the file."""
  try:
    with open(path, encoding="utf-8") as f:
      doc = ast.get_docstring(ast.parse(f.read())) or ""
  except (OSError, SyntaxError):
    return ""
  return doc.strip().split("\n\n")[0].replace("\n", " ")


def help_text() -> str:
  """What `--help` shows before the flags: the configs (with summaries) and the tasks."""
  directory = next((d for d in (os.path.join(os.getcwd(), "configs"), os.path.join(_REPO, "configs"))
                    if os.path.isdir(d)), None)
  lines = [_USAGE.rstrip(), "", "Configs (--config=configs/NAME.py[:ARGS]; each file's docstring",
           "gives its commands, its ARGS and what it should reach):"]
  paths = config_args.config_files(directory) if directory else []
  width = max([len(os.path.basename(p)) for p in paths] + [0])
  lines += [f"  {os.path.basename(p):<{width}}  {_first_docstring_line(p)}" for p in paths]
  if not paths:
    lines.append("  (no configs/ directory here; run from the lensfm repository)")
  lines += ["", "Tasks (config.task):"]
  lines += [f"  {name:<9} {TASK_SUMMARIES.get(name, '')}" for name in TASKS]
  return "\n".join(lines).replace("%", "%%") + "\n"


def _argv_value(argv, name: str) -> Optional[str]:
  """The value of --name=V (or --name V) in argv, as absl would read it (the last wins)."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == "--":
      break
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _config_overrides(argv) -> list[str]:
  """The fields of --config.FIELD=VALUE arguments, in order."""
  return [m.group(1) for m in (re.match(r"--config\.([^=\s]+)", a) for a in argv[1:]) if m]


def parse_flags(argv):
  """absl's flag parsing, with mistakes in --config raised as UserError naming them."""
  spec = _argv_value(argv, "config")
  if spec:
    config_args.check_config_file(os.path.expanduser(spec.partition(":")[0]))
  try:
    return flags.FLAGS(argv)
  except (KeyError, AttributeError):
    # ml_collections' locked config rejects an unknown --config.<field> with a bare
    # KeyError/AttributeError; say which one, or re-raise if that was not the cause.
    if spec:
      config_args.check_overrides(config_args.load(spec), _config_overrides(argv))
    raise
  except flags.Error as e:
    raise errors.UserError(_innermost_user_message(e)) from e


def _innermost_user_message(error: BaseException) -> str:
  """A UserError's own message when it caused `error` (config files' arg errors come
  back wrapped, with a traceback in the text), else the error's first lines."""
  seen = error
  while seen is not None:
    if isinstance(seen, errors.UserError) and "Traceback" not in str(seen):
      return str(seen)
    seen = seen.__cause__ or seen.__context__
  return str(error).strip()


def _wants_traceback(argv) -> bool:
  """--verbosity=1 (or more) shows the traceback of user errors too."""
  if flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present:
    return flags.FLAGS.verbosity >= 1
  value = _argv_value(argv, "verbosity") or _argv_value(argv, "v")
  try:
    return value is not None and int(value) >= 1
  except ValueError:
    return False


def reporting_user_errors(fn):
  """Wraps `fn(argv)`: a UserError prints `Error: message` on stderr and exits 2."""
  @functools.wraps(fn)
  def wrapped(argv):
    try:
      return fn(argv)
    except errors.UserError as e:
      if _wants_traceback(sys.argv):
        raise
      print(f"Error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
  return wrapped


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"Unexpected arguments: {argv[1:]} (flags are --name=value).")
  config = _CONFIG.value
  if config is None:
    raise errors.UserError("--config=configs/NAME.py is required; `python -m lensfm.main "
                           "--help` lists the configs.")
  if not _WORKDIR.value:
    raise errors.UserError("--workdir=DIR is required (where checkpoints, metrics and "
                           "pictures go).")
  task = config.get("task", "pretrain")
  if task not in TASKS:
    raise errors.UserError(f"config.task={task!r} is not one of {sorted(TASKS)}."
                           + errors.did_you_mean(task, TASKS))
  if not flags.FLAGS["verbosity"].present:
    # Orbax and JAX log every save at INFO; the progress bar and our messages suffice.
    logging.set_verbosity(logging.WARNING)
  initialize_distributed()
  logging.info("Config:\n%s", config)
  workdir = os.path.expanduser(_WORKDIR.value)
  importlib.import_module(TASKS[task]).run(config, workdir)
  report = outputs_report(workdir)
  if report:
    print(report, flush=True)


def outputs_report(workdir: str) -> str:
  """Where a finished run put its results: checkpoint, summary, pictures, CSVs, logs."""
  found = lambda pattern: sorted(glob.glob(os.path.join(workdir, pattern)))
  steps = [d for d in found("checkpoints/*") if os.path.basename(d).isdigit()]
  lines = []
  if steps:
    lines.append(f"  checkpoint:  {max(steps, key=lambda d: int(os.path.basename(d)))}")
  for name in ("summary.json", "predict_summary.json"):
    if os.path.exists(os.path.join(workdir, name)):
      lines.append(f"  summary:     {os.path.join(workdir, name)}")
  for path in found("*.csv"):
    lines.append(f"  table:       {path}")
  pictures = found("*.png") + found("*/*.png")
  if pictures:
    lines.append(f"  pictures:    {len(pictures)} PNG(s), the latest {max(pictures, key=os.path.getmtime)}")
  if os.path.isdir(os.path.join(workdir, "tensorboard")):
    lines.append(f"  TensorBoard: tensorboard --logdir {workdir}")
  return "\n".join([f"Outputs in {workdir}:"] + lines) if lines else ""


__doc__ = help_text()  # absl's --help prints the main module's docstring.

if __name__ == "__main__":
  app.run(reporting_user_errors(main), flags_parser=reporting_user_errors(parse_flags))
