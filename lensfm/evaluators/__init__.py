"""Evaluators: the `config.evals` hooks the training loop calls every N steps.

An evaluator is built from what it needs (a function of the parameters, the data
config, the batch sharding, its own `eval_config`), never from the trainer, and has
`run(state, step) -> {metric: float}`. `config.evals.<name>.type` names its module.
"""
from lensfm.evaluators import downstream
from lensfm.evaluators import knn

EVALUATORS = {"downstream": downstream, "knn": knn}
