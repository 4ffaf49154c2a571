"""The trainer's `evals` hook for downstream runs: the task's metrics on held-out data.

  config.evals = {'val': dict(type='downstream', every=500, split='validation',
                              num_examples=2048)}

Every `every` steps and at the end, `Evaluator.run` evaluates the current parameters
on the split and returns the task's scalar metrics (see `reports`), which the trainer
logs as 'val/<metric>' (so they are in metrics.jsonl, TensorBoard and, at the end,
summary.json). At the last step it also writes the task's figures and the full report
(with the confusion matrix) to WORKDIR/<plots_dir>/.

Eval config fields (besides type and every):
  split: default 'validation' (for the simulator a separate stream of fresh examples).
  num_examples: simulated examples per evaluation (default 2048); for a TFDS split an
    optional cap (default: the whole split).
  batch_size: default config.batch_size.
  plots_dir: default 'plots'; '' for no figures.
"""
import os

import jax

from lensfm.evaluate import eval_data
from lensfm.evaluate import reports
from lensfm.train import checkpoint as ckpt_lib


class Evaluator:
  """See the module docstring."""

  def __init__(self, eval_config, trainer):
    self.objective = trainer.objective
    if not hasattr(self.objective, "eval_outputs"):
      raise ValueError(f"evals type 'downstream' needs a downstream objective (classify, "
                       f"regress, superres); config.objective.name is "
                       f"{trainer.config.objective.name!r}.")
    config = trainer.config
    self.workdir = trainer.workdir
    self.total_steps = config.total_steps
    self.plots_dir = eval_config.get("plots_dir", "plots")
    self.split = eval_config.get("split", "validation")
    self.input, self.num_batches = eval_data.make_eval_input(
        config.data, split=self.split,
        batch_size=eval_config.get("batch_size", config.batch_size),
        sharding=trainer.data_sharding, seed=config.seed,
        num_examples=eval_config.get("num_examples", 2048))
    self.eval_fn = jax.jit(self.objective.eval_outputs)
    self.pictures_fn = (jax.jit(self.objective.pictures)
                        if hasattr(self.objective, "pictures") else None)

  def run(self, state, step) -> dict[str, float]:
    eval_data.rewind(self.input)
    params, extra = state["params"], state["extra"]
    outputs, first = reports.collect(self.eval_fn, params, extra, self.input, self.num_batches)
    result, details = reports.summarize(self.objective, outputs)
    if step >= self.total_steps and self.plots_dir and jax.process_index() == 0:
      self.write_final(result, details, params, extra, first, step)
    return result

  def write_final(self, result, details, params, extra, first, step):
    directory = os.path.join(self.workdir, self.plots_dir)
    pictures = (jax.device_get(self.pictures_fn(params, extra, first))
                if self.pictures_fn is not None else None)
    paths = reports.write_plots(self.objective, result, details, pictures, directory,
                                prefix=f"{self.split}_")
    report = {**result, **reports.json_details(details), "step": int(step),
              "split": self.split, "plots": paths}
    ckpt_lib.write_json_atomically(os.path.join(directory, f"{self.split}_report.json"), report)
