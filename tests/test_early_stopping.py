"""Early stopping: the rule on scripted metric sequences, and in both training loops (the
checkpointed `run`, resumed after a crash, and `train_in_memory`): stops at the right
evaluation, keeps the best state, reports it."""
import json
import os

import jax
import pytest

from lensfm import config_args
from lensfm import data as data_lib
from lensfm import errors
from lensfm.train import early_stopping
from lensfm.train import loading
from lensfm.train import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# val/auc_macro by step: best at 4; 6, 8, 10 bring nothing better (0.6 + min_delta).
SCRIPT = {2: 0.5, 4: 0.6, 6: 0.55, 8: 0.605, 10: 0.59, 12: 0.9, 14: 0.95}


def rule(**more):
  return early_stopping.parse(dict(metric="val/auc_macro", mode="max", every=2, patience=3,
                                   min_delta=0.01, **more))


def test_rule_stops_after_patience_evaluations_without_improvement():
  tracker = early_stopping.Tracker(rule())
  stopped = None
  for step in sorted(SCRIPT):
    tracker.add(step, SCRIPT[step], seconds=step)
    if tracker.should_stop:
      stopped = step
      break
  assert stopped == 10 and tracker.best["step"] == 4 and tracker.best["seconds"] == 4
  summary = tracker.summary(10, cap=100, seconds=10.)
  assert summary["stopped_early"] and not summary["hit_cap"]
  assert (summary["best_step"], summary["best_value"], summary["evaluations"]) == (4, 0.6, 5)
  # A resumed run forgets the evaluations after its restored step.
  assert tracker.up_to(6).best["step"] == 4 and not tracker.up_to(6).should_stop


def test_rule_min_mode_nan_and_off():
  tracker = early_stopping.Tracker(early_stopping.parse(
      dict(metric="mae", mode="min", every=1, patience=2)))
  assert [tracker.add(s, v, 0.) for s, v in enumerate([0.3, float("nan"), 0.2, 0.25])] == [
      True, False, True, False]
  assert tracker.best["step"] == 2 and not tracker.should_stop
  assert early_stopping.parse(None) is None and early_stopping.parse({"metric": ""}) is None
  with pytest.raises(errors.UserError, match="unknown field"):
    early_stopping.parse({"metric": "a", "patince": 3})
  with pytest.raises(errors.UserError, match="'max' or 'min'"):
    early_stopping.parse({"metric": "a", "mode": "maximum"})


def small_config(total_steps):
  c = config_args.load(os.path.join(ROOT, "configs", "finetune_classify.py:runlocal,mode=scratch"))
  c.data.recipe_overrides = {"num_pix": 32}
  c.update(batch_size=8, total_steps=total_steps, log_every=2, checkpoint_every=3,
           keep_checkpoints=2, progress_bar=False, evals={}, watchdog_seconds=0)
  c.early_stopping = dict(metric="val/auc_macro", mode="max", every=2, patience=3,
                          min_delta=0.01)
  return c


class Scripted:
  """An evaluator whose metric is SCRIPT[step]; raises at `crash_at` (a crashed run)."""

  def __init__(self, crash_at=None):
    self.crash_at = crash_at
    self.steps = []

  def run(self, state, step):
    if step == self.crash_at:
      raise RuntimeError(f"crash at step {step}")
    self.steps.append(step)
    return {"auc_macro": SCRIPT[step], "accuracy": 0.5}

  def final_report(self, state, step):
    self.reported = (step, int(state["step"]))


def test_run_stops_keeps_best_and_resumes_after_a_crash(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  first = Scripted(crash_at=8)
  with pytest.raises(RuntimeError, match="crash at step 8"):
    trainer_lib.Trainer(small_config(40), workdir).run(lambda: {"val": (5, first)})
  assert first.steps == [2, 4, 6]  # early_stopping.every replaced the evaluator's 5.
  # Resumes from checkpoint 6 with the evaluations up to it, and stops at 10.
  second = Scripted()
  summary = trainer_lib.Trainer(small_config(40), workdir).run(lambda: {"val": (5, second)})
  out = capsys.readouterr().out
  assert "Resuming from checkpoint step 6" in out and "Early stopping at step 10" in out
  assert second.steps == [8, 10] and summary["final_step"] == 10
  assert second.reported == (4, 4)  # The figures are the best state's.
  es = summary["early_stopping"]
  assert (es["best_step"], es["best_value"], es["evaluations"]) == (4, 0.6, 5)
  assert es["stopped_early"] and not es["hit_cap"] and 0 < es["seconds_to_best"] <= es["seconds"]
  assert es["best_metrics"] == {"auc_macro": 0.6, "accuracy": 0.5}
  on_disk = json.load(open(os.path.join(workdir, "summary.json")))
  assert on_disk["early_stopping"]["best_step"] == 4
  state, _, step = loading.read_state(os.path.join(workdir, "best"))
  assert step == 4 and int(state["step"]) == 4
  # Started again: it knows it has stopped.
  third = Scripted()
  again = trainer_lib.Trainer(small_config(40), workdir).run(lambda: {"val": (5, third)})
  assert "Run already finished" in capsys.readouterr().out and not third.steps
  assert again["early_stopping"]["best_step"] == 4


def test_train_in_memory_returns_the_best_state():
  c = small_config(14)
  trainer = trainer_lib.Trainer(c, "/tmp/unused")
  source = data_lib.make_input(c.data, global_batch_size=c.batch_size,
                               sharding=trainer.data_sharding, seed=0)
  seen = []

  def validate(state):
    seen.append(int(state["step"]))
    return SCRIPT[seen[-1]]

  try:
    state, metrics, summary = trainer.train_in_memory(source, validate=validate)
  finally:
    source.close()
  assert seen == [2, 4, 6, 8, 10] and int(jax.device_get(state["step"])) == 4
  assert summary["best_step"] == 4 and summary["steps"] == 10 and summary["stopped_early"]
  assert "loss" in metrics
  # Without early stopping: the last state, all steps (the same compiled step).
  trainer.config.early_stopping = dict(metric="")
  source = data_lib.make_input(c.data, global_batch_size=c.batch_size,
                               sharding=trainer.data_sharding, seed=0)
  try:
    state, _, summary = trainer.train_in_memory(source)
  finally:
    source.close()
  assert summary is None and int(jax.device_get(state["step"])) == 14
