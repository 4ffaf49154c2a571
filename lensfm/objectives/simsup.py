"""Simulation-supervised pretraining: predict the simulator's latent parameters.

The simulator knows what made every image: the substructure (subhalo count and mass
fraction, vortex mass and length), the main lens (Einstein radius, ellipticity, shear)
and the source (offset, size, Sersic index, ellipticity). A head on the backbone's
pooled embedding regresses them, standardised by the prior's statistics, with a masked
mean squared error (a vortex length is undefined without a vortex, so such entries are
left out), plus a cross entropy on the simulator's class (no_sub / cdm / axion).

Batches must carry 'latents' [B, K], 'latent_mask' [B, K] and 'label' in the order of
`lensfm.sim.same_lens.LATENT_NAMES`: the 'sim_mixture' data source makes them.

Alone (config.objective.name='simsup') it is the simulation-supervised baseline; beside
SimCLR, BYOL or DINO it is an auxiliary loss (their config.objective.aux, see `Auxiliary`).

config.objective fields (and of config.objective.aux; defaults: `DEFAULTS`, `AUX_DEFAULTS`):
  latents: comma-separated names from same_lens.LATENT_NAMES ('' = all).
  class_weight: weight of the class cross entropy (0 = regression only).
  head_hidden: hidden width of the head's MLP (0 = linear head).
  weight: (aux only) the auxiliary loss's weight in the total loss.
Metrics: sim_mse (standardised, mean over latents), sim_class_accuracy, sim_r2_<latent>
(1 - mse / variance of the targets, over the batch's valid entries).
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lensfm import errors
from lensfm import utils
from lensfm.objectives import base
from lensfm.sim import same_lens

DEFAULTS = dict(latents="", class_weight=1.0, head_hidden=256)
AUX_DEFAULTS = dict(DEFAULTS, weight=1.0)

NUM_CLASSES = len(same_lens.CLASSES)


def parse_latents(value) -> tuple[str, ...]:
  if not value:
    return same_lens.LATENT_NAMES
  names = tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) \
      else tuple(value)
  unknown = [n for n in names if n not in same_lens.LATENT_NAMES]
  if unknown or not names:
    raise errors.UserError(f"config.objective latents {list(names)}: unknown {unknown}; valid: "
                     f"{list(same_lens.LATENT_NAMES)}.")
  return names


class SimHead(nn.Module):
  """LayerNorm -> (Dense-GELU) -> Dense to K latents + the class logits."""
  num_latents: int
  hidden: int = 256

  @nn.compact
  def __call__(self, pooled):
    x = nn.LayerNorm(name="norm")(pooled.astype(jnp.float32))
    if self.hidden:
      x = nn.gelu(nn.Dense(self.hidden, name="hidden")(x))
    out = nn.Dense(self.num_latents + NUM_CLASSES, name="out")(x)
    return out[:, :self.num_latents], out[:, self.num_latents:]


def check_batch(batch) -> None:
  missing = [k for k in ("latents", "latent_mask", "label") if k not in batch]
  if missing:
    raise errors.UserError(f"The simulation-supervised loss needs batches with {missing}: use "
                     f"config.data.source='sim_mixture'.")


def sim_loss(predicted, logits, batch, indices, class_weight: float,
             names: tuple[str, ...]) -> tuple[jax.Array, dict]:
  """Masked MSE over the chosen latents + class_weight * cross entropy; metrics."""
  check_batch(batch)
  target = batch["latents"][:, indices].astype(jnp.float32)
  valid = batch["latent_mask"][:, indices].astype(jnp.float32)
  if "mask" in batch:
    valid = valid * batch["mask"][:, None].astype(jnp.float32)
  count = jnp.maximum(valid.sum(0), 1.)
  per_latent = jnp.sum(valid * (predicted - target)**2, 0) / count
  mse = per_latent.mean()
  mean = jnp.sum(valid * target, 0) / count
  variance = jnp.maximum(jnp.sum(valid * (target - mean)**2, 0) / count, 1e-6)
  weights = (batch["mask"].astype(jnp.float32) if "mask" in batch
             else jnp.ones(logits.shape[:1], jnp.float32))
  denom = jnp.maximum(weights.sum(), 1.)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  ce = jnp.sum(ce * weights) / denom
  accuracy = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * weights) / denom
  metrics = {"sim_mse": mse, "sim_class_loss": ce, "sim_class_accuracy": accuracy}
  for i, name in enumerate(names):
    metrics[f"sim_r2_{name}"] = 1. - per_latent[i] / variance[i]
  return mse + class_weight * ce, metrics


class Auxiliary:
  """The simulation-supervised loss as an add-on to another objective.

  params['sim_head'] holds its head; `loss(params, pooled, batch)` returns
  (weight * loss, metrics prefixed 'aux_').
  """

  def __init__(self, aux_config):
    cfg = utils.with_defaults(aux_config, AUX_DEFAULTS)
    self.names = parse_latents(cfg.latents)
    self.indices = jnp.asarray([same_lens.LATENT_NAMES.index(n) for n in self.names])
    self.weight = float(cfg.weight)
    self.class_weight = float(cfg.class_weight)
    self.head = SimHead(len(self.names), int(cfg.head_hidden))

  def init(self, rng, embed_dim: int):
    return self.head.init(rng, jnp.zeros((1, embed_dim), jnp.float32))["params"]

  def loss(self, params, pooled, batch):
    predicted, logits = self.head.apply({"params": params["sim_head"]}, pooled)
    loss, metrics = sim_loss(predicted, logits, batch, self.indices, self.class_weight,
                             self.names)
    return self.weight * loss, {f"aux_{k}": v for k, v in metrics.items()}


def make_auxiliary(objective_config) -> Optional[Auxiliary]:
  """config.objective.aux -> Auxiliary, or None when absent or of weight 0."""
  aux = objective_config.aux
  if not aux or not float(utils.with_defaults(aux, AUX_DEFAULTS).weight):
    return None
  return Auxiliary(aux)


class Objective(base.Objective):
  """See the module docstring: params {'encoder', 'head'}."""

  def __init__(self, config, model):
    super().__init__(config, model)
    cfg = utils.with_defaults(config.objective, DEFAULTS)
    self.names = parse_latents(cfg.latents)
    self.indices = jnp.asarray([same_lens.LATENT_NAMES.index(n) for n in self.names])
    self.class_weight = float(cfg.class_weight)
    self.head = SimHead(len(self.names), int(cfg.head_hidden))

  def network(self):
    return base.EncoderWithHead(self.model, self.head)

  def init(self, rng, batch):
    return self.network().init(rng, jnp.zeros_like(batch["image"]))["params"], {}

  def loss(self, params, extra, batch, rng, step):
    del rng, step
    _, (predicted, logits) = self.network().apply({"params": params}, batch["image"])
    loss, metrics = sim_loss(predicted, logits, batch, self.indices, self.class_weight,
                             self.names)
    return loss, (metrics, extra)
