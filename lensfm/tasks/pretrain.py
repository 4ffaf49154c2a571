"""Task 'pretrain': the training loop around any objective, with its `evals` hooks.

  python -m lensfm.main --config=configs/mae_vit_b.py --workdir=DIR

`lensfm.train.trainer.Trainer` trains; this module builds the evaluators that
config.evals names (`lensfm.evaluators`) from the pieces of the run each one needs.
"""
from typing import Any

import ml_collections

from lensfm import evaluators
from lensfm.train import trainer as trainer_lib


def pooled_embedding(model):
  """(params, images) -> the backbone's pooled embedding, in evaluation mode."""
  return lambda params, images: model.apply({"params": params}, images, train=False)["pooled"]


def make_evaluators(trainer: trainer_lib.Trainer) -> dict[str, tuple[int, Any]]:
  """{name: (every, evaluator)} for config.evals."""
  config = trainer.config
  shared = dict(data_config=config.data, batch_size=config.batch_size, seed=config.seed,
                data_sharding=trainer.data_sharding)
  needs = {
      "knn": lambda: dict(embed_fn=pooled_embedding(trainer.model)),
      "downstream": lambda: dict(objective=trainer.objective, total_steps=config.total_steps,
                                 workdir=trainer.workdir),
  }
  built = {}
  for name, eval_config in (config.get("evals", None) or {}).items():
    kind = eval_config.get("type", None)
    evaluator_class = evaluators.evaluator_class(kind, name)  # Names a bad type first.
    evaluator = evaluator_class(eval_config, **shared, **needs[kind]())
    built[name] = (eval_config.get("every", 1000), evaluator)
  return built


def train(trainer: trainer_lib.Trainer) -> dict[str, Any]:
  """Runs the trainer with the evaluators of its config."""
  return trainer.run(lambda: make_evaluators(trainer))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  return train(trainer_lib.Trainer(config, workdir))
