"""Early stopping and selection: which evaluation of a run was best, and when to stop.

config.early_stopping (None, {} or an empty metric = off: the run trains to
config.total_steps; configs/common.py states the defaults once, `early_stopping`):
  metric     the evaluated metric: in `Trainer.run` '<evals name>/<metric>' of
             config.evals (e.g. 'val/auc_macro'); in `Trainer.train_in_memory` the value
             its `validate(state)` returns (the name is only reported);
  mode       'max' or 'min';
  every      steps between evaluations (in `run` it replaces the named evaluator's
             `every`; 0 keeps it);
  patience   evaluations without an improvement after which the run stops;
  min_delta  an improvement beats the best by more than this.
config.total_steps stays the cap (and the learning-rate schedule's length); the summary
says whether the cap was reached before patience ran out.

A `Tracker` holds the history [{step, value, seconds}] and is saved as JSON, so a
resumed run continues with the evaluations made up to its restored step.
"""
import dataclasses
import glob
import json
import math
import os
import shutil
import time
from typing import Optional

import jax
from jax.experimental import multihost_utils

from lensfm import errors
from lensfm.train import checkpoint as ckpt_lib
from lensfm import utils

FIELDS = ("metric", "mode", "every", "patience", "min_delta")


@dataclasses.dataclass(frozen=True)
class Rule:
  metric: str
  mode: str = "max"
  every: int = 0
  patience: int = 5
  min_delta: float = 0.

  def improves(self, value: float, best: Optional[float]) -> bool:
    """A finite `value` better than `best` by more than min_delta (any, for no best)."""
    if not math.isfinite(value):
      return False
    if best is None:
      return True
    return value > best + self.min_delta if self.mode == "max" else value < best - self.min_delta


def parse(spec) -> Optional[Rule]:
  """config.early_stopping -> a Rule, or None when it is off (None, {}, no metric)."""
  spec = utils.as_dict(spec) if spec else {}
  unknown = sorted(set(spec) - set(FIELDS))
  if unknown:
    raise errors.UserError(f"config.early_stopping has unknown field(s) {unknown}; expected "
                           f"some of {FIELDS}.")
  if not spec.get("metric"):
    return None
  rule = Rule(**{k: v for k, v in spec.items() if v is not None})
  if rule.mode not in ("max", "min"):
    raise errors.UserError(f"config.early_stopping.mode={rule.mode!r}; expected 'max' or 'min'.")
  if int(rule.patience) < 1 or int(rule.every) < 0:
    raise errors.UserError(f"config.early_stopping: patience={rule.patience} must be >= 1 "
                           f"and every={rule.every} >= 0.")
  return dataclasses.replace(rule, every=int(rule.every), patience=int(rule.patience),
                             min_delta=float(rule.min_delta))


class Tracker:
  """The evaluations of one run under a Rule: the best so far and whether to stop."""

  def __init__(self, rule: Rule, history=()):
    self.rule = rule
    self.history: list[dict] = []
    self.best: Optional[dict] = None
    for h in history:
      self.add(h["step"], h["value"], h["seconds"], h.get("metrics"))

  def add(self, step: int, value, seconds: float, metrics: Optional[dict] = None) -> bool:
    """Records an evaluation; True when it is the new best."""
    value = float(value)
    entry = {"step": int(step), "value": value, "seconds": float(seconds)}
    if metrics is not None:
      entry["metrics"] = metrics
    self.history.append(entry)
    improved = self.rule.improves(value, None if self.best is None else self.best["value"])
    if improved:
      self.best = entry
    return improved

  @property
  def since_best(self) -> int:
    """Evaluations after the best one (all of them when none was finite)."""
    if self.best is None:
      return len(self.history)
    return sum(h["step"] > self.best["step"] for h in self.history)

  @property
  def should_stop(self) -> bool:
    return self.since_best >= self.rule.patience

  def up_to(self, step: int) -> "Tracker":
    """The tracker as it was after the evaluations at steps <= `step` (a resumed run)."""
    return Tracker(self.rule, [h for h in self.history if h["step"] <= step])

  def summary(self, steps: int, cap: int, seconds: float) -> dict:
    """What summary.json and LensBench rows report."""
    best = self.best or {}
    return {"metric": self.rule.metric, "mode": self.rule.mode, "every": self.rule.every,
            "patience": self.rule.patience, "best_step": best.get("step"),
            "best_value": best.get("value"), "seconds_to_best": best.get("seconds"),
            "best_metrics": best.get("metrics"), "steps": int(steps),
            "seconds": float(seconds), "evaluations": len(self.history),
            "stopped_early": self.should_stop, "hit_cap": int(steps) >= int(cap)
            and not self.should_stop}

  # -- on disk -------------------------------------------------------------------------
  def save(self, path: str) -> None:
    utils.write_json_atomically(path, {"rule": dataclasses.asdict(self.rule),
                                       "history": self.history})

  @classmethod
  def load(cls, rule: Rule, path: str) -> "Tracker":
    """The history saved at `path` under `rule` (empty if there is none)."""
    if not os.path.exists(path):
      return cls(rule)
    with open(path) as f:
      return cls(rule, json.load(f).get("history", []))


class Selection:
  """Early stopping inside `Trainer.run`: the tracker (WORKDIR/early_stopping.json,
  rewritten atomically after every evaluation) and the best state (WORKDIR/best/, a
  checkpoint directory that evaluate, predict and init_from accept like a workdir).

  `start`: the restored step. Evaluations after it are forgotten (the resumed run makes
  them again) and so is a best/ step after it: the loop saves its regular checkpoint at
  every improvement, so only a crash between the two saves leaves one.
  """

  def __init__(self, rule: Rule, workdir: str, start: int):
    self.rule = rule
    self.eval_name, _, self.key = rule.metric.partition("/")
    self.path = os.path.join(workdir, "early_stopping.json")
    self.tracker = Tracker.load(rule, self.path).up_to(start)
    self.best_dir = os.path.join(workdir, "best")
    self._offset = self.tracker.history[-1]["seconds"] if self.tracker.history else 0.
    self._t0 = time.perf_counter()
    self._ckpt = None
    if jax.process_index() == 0:
      for d in glob.glob(os.path.join(self.best_dir, "checkpoints", "*")):
        if os.path.basename(d).isdigit() and int(os.path.basename(d)) > start:
          shutil.rmtree(d)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("lensfm_early_stopping")

  def resume(self, start: int, save_best) -> None:
    """A best state at the restored step whose save did not complete is saved again."""
    best = self.tracker.best
    if best and best["step"] == start and not os.path.isdir(
        os.path.join(self.best_dir, "checkpoints", str(start))):
      save_best(self.checkpointer())

  def seconds(self) -> float:
    """Training seconds of the run so far (earlier runs of a resumed one included)."""
    return self._offset + time.perf_counter() - self._t0

  def evaluators(self, evaluators: dict) -> dict:
    """{name: (every, evaluator)} with the rule's `every` for the metric's evaluator."""
    if self.eval_name not in evaluators:
      raise errors.UserError(f"config.early_stopping.metric={self.rule.metric!r}: no "
                             f"evaluator {self.eval_name!r} in config.evals "
                             f"{sorted(evaluators)}.")
    if self.rule.every:
      evaluators = {**evaluators,
                    self.eval_name: (self.rule.every, evaluators[self.eval_name][1])}
    return evaluators

  def observe(self, name: str, step: int, results: dict, save_best) -> bool:
    """Records evaluator `name`'s results; on a new best calls save_best(checkpointer).
    True when this was a new best."""
    if name != self.eval_name:
      return False
    if self.key not in results:
      raise errors.UserError(f"config.early_stopping.metric={self.rule.metric!r}: evaluator "
                             f"{name!r} returned {sorted(results)}.")
    plain = {k: float(v) for k, v in results.items() if _is_number(v)}
    improved = self.tracker.add(step, results[self.key], self.seconds(), plain)
    if jax.process_index() == 0:
      self.tracker.save(self.path)
    if improved:
      save_best(self.checkpointer())
    return improved

  def checkpointer(self) -> ckpt_lib.Checkpointer:
    if self._ckpt is None:
      self._ckpt = ckpt_lib.Checkpointer(self.best_dir, max_to_keep=1)
    return self._ckpt

  def close(self) -> None:
    if self._ckpt is not None:
      self._ckpt.close()


def _is_number(value) -> bool:
  try:
    float(value)
  except (TypeError, ValueError):
    return False
  return True
