r"""lensfm's entry point: `python -m lensfm.main --config=configs/NAME.py[:ARGS] --workdir=DIR`.

`--config.field=value` overrides a field of the (locked) config; a misspelt field
fails with an error naming it. `config.task` picks what runs (`lensfm.tasks.TASKS`).
Mistakes in what was asked for (a misspelt field, a missing file, a checkpoint that
does not fit) print one line and exit with status 2; `--verbosity=1` also prints their
traceback.
"""
import ast
import functools
import glob
import os
import re
import sys
from typing import Optional

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lensfm import compilation_cache
from lensfm import config_args
from lensfm import errors
from lensfm import tasks
from lensfm.train import distributed
from lensfm.train import loading

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:ARGS]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
_USAGE = __doc__
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _first_docstring_line(path: str) -> str:
  """The summary line of a Python file's docstring, read without running the file."""
  try:
    with open(path, encoding="utf-8") as f:
      doc = ast.get_docstring(ast.parse(f.read())) or ""
  except (OSError, SyntaxError):
    return ""
  return doc.strip().split("\n\n")[0].replace("\n", " ")


def _task_summary(module) -> str:
  summary = (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
  return summary.split(": ", 1)[1] if summary.startswith("Task '") else summary


def help_text() -> str:
  """What `--help` shows before the flags: the configs (with summaries) and the tasks."""
  candidates = (os.path.join(os.getcwd(), "configs"), os.path.join(_REPO, "configs"))
  directory = next((d for d in candidates if os.path.isdir(d)), None)
  lines = [_USAGE.rstrip(), "", "Configs (--config=configs/NAME.py[:ARGS]; each file's docstring",
           "gives its commands, its ARGS and what it should reach):"]
  paths = config_args.config_files(directory) if directory else []
  width = max([len(os.path.basename(p)) for p in paths] + [0])
  lines += [f"  {os.path.basename(p):<{width}}  {_first_docstring_line(p)}" for p in paths]
  if not paths:
    lines.append("  (no configs/ directory here; run from the lensfm repository)")
  lines += ["", "Tasks (config.task; each module's docstring, lensfm/tasks/NAME.py, says more):"]
  lines += [f"  {name:<9} {_task_summary(module)}" for name, module in tasks.TASKS.items()]
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


def _make_configs_importable(path: str) -> None:
  """Configs import their shared pieces as `configs.common`: put the folder holding
  `configs/` on the path, so a config runs from any working directory."""
  folder = os.path.dirname(os.path.abspath(path))
  root = os.path.dirname(folder)
  if os.path.basename(folder) == "configs" and root not in sys.path:
    sys.path.insert(0, root)


def _config_overrides(argv) -> list[str]:
  """The fields of --config.FIELD=VALUE arguments, in order."""
  return [m.group(1) for m in (re.match(r"--config\.([^=\s]+)", a) for a in argv[1:]) if m]


def parse_flags(argv):
  """absl's flag parsing, with mistakes in --config raised as UserError naming them."""
  spec = _argv_value(argv, "config")
  if spec:
    config_args.check_config_file(os.path.expanduser(spec.partition(":")[0]))
    _make_configs_importable(os.path.expanduser(spec.partition(":")[0]))
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
  back wrapped, with a traceback in the text), else the error's own message."""
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
  if task not in tasks.TASKS:
    raise errors.UserError(f"config.task={task!r} is not one of {sorted(tasks.TASKS)}."
                           + errors.did_you_mean(task, tasks.TASKS))
  if not flags.FLAGS["verbosity"].present:
    # Orbax and JAX log every save at INFO; the progress bar and our messages suffice.
    logging.set_verbosity(logging.WARNING)
  check_backbone_overrides(config, _config_overrides(sys.argv))
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  compilation_cache.enable(config.get("compilation_cache_dir", None))
  logging.info("Config:\n%s", config)
  workdir = os.path.expanduser(_WORKDIR.value)
  tasks.TASKS[task].run(config, workdir)
  report = outputs_report(workdir)
  if report:
    print(report, flush=True)


def check_backbone_overrides(config, overrides) -> None:
  """A run from init_from adopts the checkpoint's backbone, so a --config.model.FIELD
  that contradicts it is a mistake to name, never silently replaced."""
  path = config.get("init_from", "")
  fields = sorted({f.split(".", 2)[1] for f in overrides if f.startswith("model.")}
                  - set(loading.COMPUTE_FIELDS))
  if not path or not fields or config.get("mode", "") == "resnet":
    return
  pretrained = loading.load_config(path).model
  differ = [f"model.{f}: checkpoint {pretrained.get(f)!r} vs config {config.model.get(f)!r}"
            for f in fields if pretrained.get(f) != config.model.get(f)]
  if differ:
    raise errors.UserError(
        f"Checkpoint {path} has a different backbone: {'; '.join(differ)}. A run from "
        f"init_from uses its checkpoint's backbone: drop those --config.model overrides.")


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
    latest = max(pictures, key=os.path.getmtime)
    lines.append(f"  pictures:    {len(pictures)} PNG(s), the latest {latest}")
  if os.path.isdir(os.path.join(workdir, "tensorboard")):
    lines.append(f"  TensorBoard: tensorboard --logdir {workdir}")
  return "\n".join([f"Outputs in {workdir}:"] + lines) if lines else ""


__doc__ = help_text()  # absl's --help prints the main module's docstring.

if __name__ == "__main__":
  app.run(reporting_user_errors(main), flags_parser=reporting_user_errors(parse_flags))
