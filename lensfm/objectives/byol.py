"""BYOL (Grill et al. 2020): an online network predicts, from one view, the projection
that a slowly moving target network makes of another view; no negatives.

  online: backbone -> projector -> predictor    (params: 'encoder', 'head', 'predictor')
  target: backbone -> projector                 (extra['target']: 'encoder', 'head')
  loss = sum over the two (view, other view) orders of
         mean_batch(2 - 2 cos(predictor(online(view)), stop_grad(target(other view))))

The target is an exponential moving average of the online network, updated after
every optimizer step (`update_extra`) with a momentum that follows a cosine schedule
from `ema_momentum` at step 0 to `ema_momentum_end` at config.total_steps:
  tau(step) = end - (end - base) * (cos(pi * step / total_steps) + 1) / 2,
  target <- tau(step) * target + (1 - tau(step)) * online,
where `step` is the index of the optimizer step just taken (0 for the first).

Heads use LayerNorm instead of BatchNorm (pure-pytree parameters; BYOL trains
without batch statistics given normalised hidden layers, Richemond et al. 2020).

config.objective fields (defaults: `DEFAULTS`): name='byol', ema_momentum,
ema_momentum_end, proj_hidden_dim, proj_dim, pred_hidden_dim, head_norm, views (see
views.py; two global views, or views.source='same_lens'), aux (optional simulation-supervised loss, see simsup.py).
Metrics: prediction_similarity (mean cosine of prediction and target), ema_momentum,
embedding_std (collapse indicator of the online backbone's pooled embeddings).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lensfm import errors
from lensfm import utils
from lensfm.objectives import base
from lensfm.objectives import metrics as metrics_lib
from lensfm.objectives import simclr
from lensfm.objectives import simsup
from lensfm.objectives import views as views_lib

DEFAULTS = dict(ema_momentum=0.996, ema_momentum_end=1.0, proj_hidden_dim=4096, proj_dim=256,
                pred_hidden_dim=4096, head_norm="layernorm", views=None, aux=None)


def cosine_momentum(step, total_steps: int, base: float, end: float = 1.0) -> jax.Array:
  """EMA momentum at `step`: `base` at 0 rising along a half cosine to `end` at total_steps."""
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0., 1.)
  return end - (end - base) * (jnp.cos(math.pi * progress) + 1.) / 2.


def ema_update(target, online, momentum):
  """target <- momentum * target + (1 - momentum) * online, leaf by leaf."""
  return jax.tree.map(lambda t, o: momentum * t + (1. - momentum) * o.astype(t.dtype),
                      target, online)


class EmaMomentum:
  """The target's EMA momentum at a step (`cosine_momentum`), from the objective config's
  ema_momentum and ema_momentum_end and the run's total_steps; BYOL's and DINO's."""

  def __init__(self, objective_config, total_steps: int):
    self.base = float(objective_config.ema_momentum)
    self.end = float(objective_config.ema_momentum_end)
    self.total_steps = int(total_steps)
    if not 0. <= self.base <= self.end <= 1.:
      raise errors.UserError(f"config.objective.ema_momentum={self.base} and ema_momentum_end="
                             f"{self.end} must satisfy 0 <= ema_momentum <= ema_momentum_end <= 1.")

  def __call__(self, step) -> jax.Array:
    return cosine_momentum(step, self.total_steps, self.base, self.end)


def regression_loss(prediction: jax.Array, target: jax.Array, weights=None) -> jax.Array:
  """Mean over the batch of 2 - 2 cos(prediction, target) (BYOL's normalised MSE)."""
  per_example = 2. - 2. * jnp.sum(simclr.l2_normalize(prediction) * simclr.l2_normalize(target), -1)
  if weights is None:
    return per_example.mean()
  weights = weights.astype(jnp.float32)
  return jnp.sum(per_example * weights) / jnp.maximum(weights.sum(), 1.)


class OnlineNetwork(nn.Module):
  """Backbone, projector ('head') and predictor."""
  encoder: nn.Module
  head: nn.Module
  predictor: nn.Module

  def __call__(self, images, train: bool = True):
    pooled = self.encoder(images, train=train)["pooled"]
    return pooled, self.predictor(self.head(pooled))


class Objective(simclr.TwoViews, base.Objective):
  """See the module docstring."""

  def __init__(self, config, model):
    super().__init__(config, model)
    cfg = utils.with_defaults(config.objective, DEFAULTS)
    self.momentum = EmaMomentum(cfg, config.total_steps)
    self.views = views_lib.parse_views(cfg.views, config.data.image_size)
    simclr.check_view_size(model, self.views.global_crop.size, "global")
    self.projector = simclr.ProjectionMLP(cfg.proj_hidden_dim, cfg.proj_dim, 2, cfg.head_norm)
    self.predictor = simclr.ProjectionMLP(cfg.pred_hidden_dim, cfg.proj_dim, 2, cfg.head_norm)
    self.aux = simsup.make_auxiliary(cfg)

  def online(self) -> OnlineNetwork:
    return OnlineNetwork(self.model, self.projector, self.predictor)

  def target(self) -> base.EncoderWithHead:
    return base.EncoderWithHead(self.model, self.projector)

  def init(self, rng, batch):
    params = self.online().init(rng, self.placeholder_views(batch))["params"]
    # The target starts as a copy of the online backbone and projector.
    target = jax.tree.map(jnp.copy, {"encoder": params["encoder"], "head": params["head"]})
    return simclr.add_aux_params(self.aux, params, rng, self.model), {"target": target}

  def loss(self, params, extra, batch, rng, step):
    images = self.make_views(rng, batch)
    online = {k: params[k] for k in ("encoder", "head", "predictor")}
    pooled, prediction = self.online().apply({"params": online}, images)
    _, target = self.target().apply({"params": extra["target"]}, images)
    target = jax.lax.stop_gradient(target)
    p1, p2 = simclr.split_views(prediction, 2)
    t1, t2 = simclr.split_views(target, 2)
    weights = batch.get("mask", None)
    loss = regression_loss(p1, t2, weights) + regression_loss(p2, t1, weights)
    metrics = {"prediction_similarity": 1. - loss / 4.,
               "ema_momentum": self.momentum(step),
               "embedding_std": metrics_lib.embedding_std(simclr.split_views(pooled, 2)[0])}
    loss, metrics = simclr.add_aux_loss(self.aux, params, simclr.split_views(pooled, 2)[0],
                                        batch, loss, metrics)
    return loss, (metrics, extra)

  def update_extra(self, params, extra, step):
    online = {"encoder": params["encoder"], "head": params["head"]}
    return {**extra, "target": ema_update(extra["target"], online, self.momentum(step))}
