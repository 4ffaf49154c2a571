"""The `evals` hook type='downstream': a downstream objective's metrics on held-out data.

  config.evals = {'val': dict(type='downstream', every=500, split='validation',
                              num_examples=2048)}

Every `every` steps and at the end, `Evaluator.run` evaluates the current parameters
on the split and returns the task's scalar metrics (`objective.summarize`), which the trainer
logs as 'val/<metric>' (so they are in metrics.jsonl, TensorBoard and, at the end,
summary.json). At the last step it also writes the task's figures and the full report
(with the confusion matrix) to WORKDIR/<plots_dir>/; under config.early_stopping the
trainer has `final_report` write them again for the best state once the run ends.

Eval config fields (besides type and every; defaults: `DEFAULTS`):
  split: for the simulator a separate stream of fresh examples.
  num_examples: simulated examples per evaluation; for a TFDS split a cap.
  batch_size: None for config.batch_size.
  plots_dir: '' for no figures.
"""
import os

import jax

from lensfm.data import eval_input
from lensfm.evaluators import common
from lensfm.objectives import base
from lensfm.objectives import reports
from lensfm.train import writer as writer_lib
from lensfm import utils

DEFAULTS = dict(split="validation", num_examples=2048, batch_size=None, plots_dir="plots")


class Evaluator:
  """See the module docstring. `objective` is the run's downstream objective; the run's
  data_config, batch_size and seed are the defaults; figures go to WORKDIR/plots_dir."""

  def __init__(self, eval_config, *, objective, data_config, batch_size: int, seed: int,
               data_sharding, total_steps: int, workdir: str):
    if not isinstance(objective, base.DownstreamObjective):
      raise ValueError(f"evals type 'downstream' needs a downstream objective (classify, "
                       f"regress, superres); config.objective.name is "
                       f"{objective.config.objective.name!r}.")
    self.objective = objective
    self.workdir = workdir
    self.total_steps = total_steps
    cfg = utils.with_defaults(eval_config, DEFAULTS)
    self.plots_dir = cfg.plots_dir
    self.split = cfg.split
    self.input, self.num_batches = eval_input.make_eval_input(
        data_config, split=self.split, batch_size=cfg.batch_size or batch_size,
        sharding=data_sharding, seed=seed, num_examples=cfg.num_examples)
    self.eval_fn = jax.jit(objective.eval_outputs)
    self.pictures_fn = jax.jit(objective.pictures)

  def run(self, state, step, final: bool = False) -> dict[str, float]:
    """The metrics of `state`; with `final` (default: at the last step) also the
    figures and the full report."""
    eval_input.rewind(self.input)
    params, extra = state["params"], state["extra"]
    outputs, first = common.collect(self.eval_fn, params, extra, self.input, self.num_batches)
    result, details = self.objective.summarize(outputs)
    if (final or step >= self.total_steps) and self.plots_dir and jax.process_index() == 0:
      self.write_final(result, details, params, extra, first, step)
    return result

  def final_report(self, state, step) -> dict[str, float]:
    """Figures and full report of `state` (an early-stopped run's best, at its step)."""
    return self.run(state, step, final=True)

  def write_final(self, result, details, params, extra, first, step):
    directory = os.path.join(self.workdir, self.plots_dir)
    pictures = jax.device_get(self.pictures_fn(params, extra, first))
    paths = self.objective.plots(result, details, pictures,
                                 common.figure_path(directory, prefix=f"{self.split}_"))
    report = {**result, **reports.json_details(details), "step": int(step),
              "split": self.split, "plots": paths}
    utils.write_json_atomically(os.path.join(directory, f"{self.split}_report.json"), report)
    writer_lib.log_pictures(self.workdir, step, paths)
