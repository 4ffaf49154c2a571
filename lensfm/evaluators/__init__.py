"""Evaluators: the `config.evals` hooks the training loop calls every N steps.

An evaluator is built from what it needs (a function of the parameters, the data
config, the batch sharding, its own `eval_config`), never from the trainer, and has
`run(state, step) -> {metric: float}`. Each is one file, `lensfm/evaluators/<type>.py`
defining `Evaluator`, named by `config.evals.<name>.type`.
"""
from lensfm import utils


def evaluator_class(eval_type: str, eval_name: str = "NAME") -> type:
  """The `Evaluator` of lensfm/evaluators/<eval_type>.py."""
  return utils.plugin("lensfm.evaluators", eval_type, "Evaluator",
                      f"config.evals.{eval_name}.type")

