"""Pretraining and downstream objectives. Each lives in `lensfm/objectives/<name>.py`
defining a class `Objective(config, model)` (config = the whole run config, model = the backbone
from `lensfm.models.get_model`) with the methods of `base.Objective`, or of
`base.DownstreamObjective` for a task that is evaluated and predicts.

`config.objective.name` picks the file.
"""
import importlib

from lensfm import errors


def objective_class(config) -> type:
  """The `Objective` class of `lensfm/objectives/<config.objective.name>.py`."""
  name = config.objective.name
  try:
    module = importlib.import_module(f"lensfm.objectives.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"lensfm.objectives.{name}":
      raise
    raise errors.UserError(f"config.objective.name={name!r}: no objective file "
                           f"lensfm/objectives/{name}.py.") from None
  return module.Objective


def get_objective(config, model):
  return objective_class(config)(config, model)
