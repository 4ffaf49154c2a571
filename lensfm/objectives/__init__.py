"""Pretraining and downstream objectives. Each lives in `lensfm/objectives/<name>.py`
defining a class `Objective(config, model)` (config = the whole run config, model = the backbone
from `lensfm.models.get_model`) with the methods of `base.Objective`, or of
`base.DownstreamObjective` for a task that is evaluated and predicts.

`config.objective.name` picks the file.
"""
from lensfm import utils


def objective_class(config) -> type:
  """The `Objective` class of `lensfm/objectives/<config.objective.name>.py`."""
  return utils.plugin("lensfm.objectives", config.objective.name, "Objective",
                      "config.objective.name")


def get_objective(config, model):
  return objective_class(config)(config, model)
