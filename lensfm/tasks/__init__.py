"""Tasks: what `python -m lensfm.main` runs, one file per `config.task`,
lensfm/tasks/<task>.py defining `run(config, workdir) -> dict` (the summary it also writes
to the workdir). Found by name (`utils.plugin`), imported only when run."""
import sys

from lensfm import utils


def names() -> list[str]:
  """Every task: the files of lensfm/tasks that define `run`."""
  return utils.plugin_names("lensfm.tasks", "run")


def task_run(name: str):
  """`run` of lensfm/tasks/<name>.py; a UserError naming config.task if there is none."""
  return utils.plugin("lensfm.tasks", name, "run", "config.task")


def task_module(name: str):
  return sys.modules[task_run(name).__module__]
