"""Supervised regression of physical parameters from the pooled embedding.

The head predicts every target standardised, (value - mean) / std, so one learning rate
suits parameters of very different scales. A target that does not apply to an example
(the axion mass of a CDM lens, the Einstein radius of an unlensed scene) is masked out
of the loss and of the metrics instead of being regressed to a placeholder 0.

Targets (config.objective.targets), derived from the batch's label keys:
  'log10_axion_mass'         log10(axion_mass / eV); applies where axion_mass > 0.
  'theta_e'                  Einstein radius, arcsec; applies where theta_e > 0.
  'sub_mass_fraction'        substructure / main-halo mass; applies everywhere.
  'log10_sub_mass_fraction'  its log10; applies where it is > 0.
  any other batch key        the value itself; applies where finite.

config.objective fields (defaults: `DEFAULTS`):
  name: 'regress'.
  targets: tuple of target names; config.data.targets, when set (a catalogue's numeric
    columns), replaces them before training.
  target_stats: {target: (mean, std)} used for standardising. Targets not given here
    use the known prior of the simulator where there is one (log10_axion_mass:
    U(-24, -22)); the task 'finetune' estimates the others from `stats_examples`
    training examples (only the labelled ones when labels_per_class is set) and stores
    them in the run's config, so evaluation and prediction reuse the statistics of
    training whatever data they see.
  target_ranges: {target: (lo, hi)}, the values seen in training: the prior where one is
    known (log10_axion_mass: [-24, -22]), else the min and max over `stats_examples`
    training examples, written by the task 'finetune'; predict flags a value outside it.
  stats_examples: how many training examples estimate the statistics and ranges.
  head_hidden, head_zero_init, feature_norm, feature_norm_momentum: as for 'classify'.
  loss: 'mse' or 'huber' (delta 1 in standardised units).
Metrics logged during training: mae_<target> in physical units.
Downstream interface (`base.DownstreamObjective`): `predict(params, extra, images)` ->
{target: [B] physical units}; `eval_outputs` adds 'true_<target>' and 'valid_<target>'
for every target; reports MAE, RMSE and R^2 per target with scatter plots; the predict
CSV has one column per target.
"""
import dataclasses
import math
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lensfm import errors
from lensfm import utils
from lensfm.objectives import classify
from lensfm.objectives import reports

# DeepLense's axion prior (lensfm.sim.recipes.AXION_LOG10_MASS_RANGE): U(-24, -22).
_AXION_LOG10_RANGE = (-24.0, -22.0)
KNOWN_STATS = {
    "log10_axion_mass": (sum(_AXION_LOG10_RANGE) / 2,
                         (_AXION_LOG10_RANGE[1] - _AXION_LOG10_RANGE[0]) / math.sqrt(12.)),
}
KNOWN_RANGES = {"log10_axion_mass": _AXION_LOG10_RANGE}
_MIN_STD = 1e-6
DEFAULTS = dict(classify.HEAD_DEFAULTS, targets=("log10_axion_mass",), target_stats=None,
                target_ranges=None, stats_examples=2048, loss="mse")


@dataclasses.dataclass(frozen=True)
class Target:
  """How to read one target from a batch: key, transform, where it applies, unit."""
  key: str
  transform: Callable = lambda v: v
  applies: Callable = lambda v: jnp.isfinite(v)
  unit: str = ""


def _safe_log10(v):
  # Where log10 does not apply (v <= 0) the example is masked; this only keeps it finite.
  return jnp.log10(jnp.maximum(v, 1e-37))


TARGETS = {
    "log10_axion_mass": Target("axion_mass", _safe_log10, lambda v: v > 0, "log10 eV"),
    "theta_e": Target("theta_e", applies=lambda v: v > 0, unit="arcsec"),
    "sub_mass_fraction": Target("sub_mass_fraction"),
    "log10_sub_mass_fraction": Target("sub_mass_fraction", _safe_log10, lambda v: v > 0,
                                      "dex"),
}


def target_spec(name: str) -> Target:
  return TARGETS.get(name, Target(name))


def read_target(batch, name: str):
  """(values [B] float32, applies [B] bool) of target `name`; padding never applies."""
  spec = target_spec(name)
  if spec.key not in batch:
    raise ValueError(f"Regression target {name!r} needs the batch key {spec.key!r}, but the "
                     f"data provide {sorted(batch)}; change config.objective.targets or "
                     "the dataset.")
  raw = jnp.asarray(batch[spec.key], jnp.float32)
  values = spec.transform(raw)
  applies = spec.applies(raw) & jnp.isfinite(values) & classify.batch_mask(batch)
  return jnp.where(applies, values, 0.), applies


def target_values(batches, names) -> tuple[dict[str, np.ndarray], int]:
  """({target: its values where it applies}, examples seen) over training `batches`."""
  values = {n: [] for n in names}
  seen = 0
  for batch in batches:
    for n in names:
      v, ok = jax.device_get(read_target(batch, n))
      values[n].append(np.asarray(v)[np.asarray(ok)])
    seen += len(batch["image"])
  return {n: np.concatenate(v) if v else np.zeros(0) for n, v in values.items()}, seen


def estimate_target_stats(batches, names) -> dict[str, tuple[float, float]]:
  """Mean and std of targets over training `batches` (host, before jit)."""
  values, seen = target_values(batches, names)
  stats = {}
  for n in names:
    v = values[n]
    if len(v) < 2:
      raise errors.UserError(f"Regression target {n!r} applies to {len(v)} of {seen} "
                             "training examples; cannot estimate its statistics (set "
                             "config.objective.target_stats or use data that have it).")
    stats[n] = (float(v.mean()), float(max(v.std(), _MIN_STD)))
  return stats


def resolve_target_ranges(config, training_batches=None) -> dict[str, tuple[float, float]]:
  """Training range of every target: config, then known priors, then the min and max of
  `training_batches(num_examples)` if given (else such targets have no range)."""
  cfg = utils.with_defaults(config.objective, DEFAULTS)
  names = tuple(cfg.targets)
  given = dict(cfg.target_ranges or {})
  ranges = {n: tuple(float(x) for x in given[n]) for n in names if n in given}
  ranges.update({n: KNOWN_RANGES[n] for n in names if n not in ranges and n in KNOWN_RANGES})
  missing = [n for n in names if n not in ranges]
  if missing and training_batches is not None:
    values, _ = target_values(training_batches(int(cfg.stats_examples)), missing)
    ranges.update({n: (float(v.min()), float(v.max())) for n, v in values.items() if len(v)})
  return ranges


def resolve_target_stats(config, training_batches=None) -> dict[str, tuple[float, float]]:
  """Statistics for every target: config, then known priors, then estimated from
  `training_batches(num_examples)` (given by the task 'finetune', which reads data)."""
  cfg = utils.with_defaults(config.objective, DEFAULTS)
  names = tuple(cfg.targets)
  given = dict(cfg.target_stats or {})
  stats = {}
  for n in names:
    if n in given:
      mean, std = (float(x) for x in given[n])
      if not std > 0:
        raise errors.UserError(f"config.objective.target_stats[{n!r}] = {given[n]!r}; the std "
                               "must be positive.")
      stats[n] = (mean, std)
    elif n in KNOWN_STATS:
      stats[n] = KNOWN_STATS[n]
  missing = [n for n in names if n not in stats]
  if missing and training_batches is None:
    raise ValueError(f"Regression targets {missing} have no statistics: set "
                     "config.objective.target_stats, or run config.task='finetune', which "
                     "estimates them from the training data.")
  if missing:
    batches = training_batches(int(cfg.stats_examples))
    estimated = estimate_target_stats(batches, missing)
    logging.info("Estimated regression target statistics %s.", estimated)
    stats.update(estimated)
  return stats


class Objective(classify.HeadObjective):
  """See the module docstring."""
  task = "regression"

  @classmethod
  def prepare_config(cls, config, training_batches):
    """Writes every target's statistics and training range into config.objective
    (target_stats, target_ranges); a dataset's targets (config.data.targets, e.g. a
    catalogue's columns) become the targets."""
    given = config.data.get("targets", None)
    if given:
      names = tuple(t.strip() for t in given.split(",")) if isinstance(given, str) else tuple(given)
      config.objective.targets = tuple(t for t in names if t)
    stats = resolve_target_stats(config, training_batches)
    ranges = resolve_target_ranges(config, training_batches)
    config.objective.target_stats = {k: list(v) for k, v in stats.items()}
    config.objective.target_ranges = {k: list(v) for k, v in ranges.items()}
    return config

  def __init__(self, config, model):
    super().__init__(config, model)
    cfg = utils.with_defaults(config.objective, DEFAULTS)
    self.targets = tuple(cfg.targets)
    if not self.targets:
      raise errors.UserError("config.objective.targets is empty; name at least one target, e.g. "
                             "('log10_axion_mass',).")
    self._init_head(config, len(self.targets))
    if cfg.loss not in ("mse", "huber"):
      raise errors.UserError(f"config.objective.loss={cfg.loss!r}; expected 'mse' or 'huber'.")
    self.loss_type = cfg.loss
    self.stats = resolve_target_stats(config)
    self.mean = np.asarray([self.stats[t][0] for t in self.targets], np.float32)
    self.std = np.asarray([self.stats[t][1] for t in self.targets], np.float32)
    self.ranges = resolve_target_ranges(config)

  def loss(self, params, extra, batch, rng, step):
    del rng, step
    pred, extra = self.train_outputs(params, extra, batch)
    losses, metrics = [], {}
    for i, name in enumerate(self.targets):
      value, applies = read_target(batch, name)
      z = (value - self.mean[i]) / self.std[i]
      err = pred[:, i] - z
      per_example = (optax.huber_loss(err, delta=1.) if self.loss_type == "huber"
                     else jnp.square(err))
      losses.append(classify.masked_mean(per_example, applies))
      metrics[f"mae_{name}"] = classify.masked_mean(jnp.abs(err) * self.std[i], applies)
      metrics[f"fraction_applicable_{name}"] = applies.astype(jnp.float32).mean()
    return sum(losses) / len(losses), (metrics, extra)

  # -- downstream interface ------------------------------------------------------------
  def predict(self, params, extra, images):
    standardized, _ = self.head_outputs(params, extra, images)
    values = standardized * self.std + self.mean
    return {name: values[:, i] for i, name in enumerate(self.targets)}

  def eval_outputs(self, params, extra, batch):
    out = {f"pred_{n}": v for n, v in self.predict(params, extra, batch["image"]).items()}
    for name in self.targets:
      out[f"true_{name}"], out[f"valid_{name}"] = read_target(batch, name)
    if "label" in batch:
      out["label"] = batch["label"]
    return out

  def summarize(self, outputs):
    return reports.regression(outputs, self.targets)

  def plots(self, result, details, pictures, path):
    del pictures
    units = {t: target_spec(t).unit for t in self.targets}
    return reports.regression_plots(result, details, units, path)

  def output_columns(self) -> list[str]:
    return list(self.targets)

  def output_rows(self, outputs, names=None, directory=None) -> list[list]:
    del names, directory
    return [[f"{float(outputs[n][i]):.6g}" for n in self.targets]
            for i in range(len(outputs[self.targets[0]]))]

  def output_flags(self, outputs) -> list[str]:
    """A value outside the range of its target in training is an extrapolation."""
    flags = []
    for i in range(len(outputs[self.targets[0]])):
      outside = [f"{n}={float(outputs[n][i]):.4g} outside the training range "
                 f"[{self.ranges[n][0]:.4g}, {self.ranges[n][1]:.4g}]"
                 for n in self.targets if n in self.ranges
                 and not self.ranges[n][0] <= float(outputs[n][i]) <= self.ranges[n][1]]
      flags.append("; ".join(outside))
    return flags
