"""SimCLR (Chen et al. 2020): contrast two augmented views of every image against the
views of all the other images of the *global* batch, with the NT-Xent loss.

Negatives across the device mesh: inside the jitted step the batch is one global
array sharded over the data axes, so the [2B, 2B] similarity matrix below is over the
whole global batch; XLA inserts the all-gather of the (small) projections that
SimCLR implementations write by hand. The loss is therefore identical on one device
and on a mesh (tests/test_ssl_losses.py checks this).

Any backbone works: only its 'pooled' embedding is used. The projection head's
hidden layers use LayerNorm, not BatchNorm, so parameters stay a pure pytree and an
image's embedding does not depend on the rest of its batch.

config.objective fields (defaults: `DEFAULTS`): name='simclr', temperature,
proj_hidden_dim, proj_dim, proj_layers (2: Dense-norm-relu-Dense), head_norm ('layernorm'
| 'none'), views (see lensfm/objectives/views.py; two global views per image:
views.source='same_lens' contrasts two observations of one lens), aux (optional: the
simulation-supervised loss on the first view's embedding, see simsup.py).
Metrics: contrastive_accuracy (how often the other view of an image is the most
similar of the 2B - 1 candidates), positive_similarity (mean cosine of the two
views' projections), embedding_std (collapse indicator of the backbone's pooled
embeddings, see metrics.embedding_std).
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lensfm import errors
from lensfm import utils
from lensfm.objectives import base
from lensfm.objectives import metrics as metrics_lib
from lensfm.objectives import pictures
from lensfm.objectives import simsup
from lensfm.objectives import views as views_lib

HEAD_NORMS = ("layernorm", "none")
_MASKED_LOGIT = -1e9  # Finite, so masked entries give exp() = 0 without inf - inf = NaN.

DEFAULTS = dict(temperature=0.1, proj_hidden_dim=2048, proj_dim=128, proj_layers=2,
                head_norm="layernorm", views=None, aux=None)


class ProjectionMLP(nn.Module):
  """num_layers Dense layers; hidden ones followed by (LayerNorm) and ReLU."""
  hidden_dim: int
  out_dim: int
  num_layers: int = 2
  norm: str = "layernorm"

  @nn.compact
  def __call__(self, x):
    if self.norm not in HEAD_NORMS:
      raise errors.UserError(
          f"config.objective.head_norm={self.norm!r} is not one of {HEAD_NORMS}.")
    x = x.astype(jnp.float32)  # Heads are small; float32 keeps the loss's logits exact.
    for i in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, name=f"hidden{i}")(x)
      if self.norm == "layernorm":
        x = nn.LayerNorm(name=f"norm{i}")(x)
      x = nn.relu(x)
    return nn.Dense(self.out_dim, name="out")(x)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float,
            valid: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
  """Normalised-temperature cross entropy over the 2B views of B images.

  Anchor i's positive is the other view of the same image; its negatives are the
  2B - 2 views of the other images. Invalid (padded) images are neither anchors nor
  negatives. Returns (mean loss over valid anchors, top-1 accuracy of the positive).
  """
  b = z1.shape[0]
  z = l2_normalize(jnp.concatenate([z1, z2], axis=0))
  # Highest precision: the 1/temperature factor would amplify bf16 matmul rounding.
  logits = jnp.matmul(z, z.T, precision=jax.lax.Precision.HIGHEST) / temperature
  n = 2 * b
  candidates = ~jnp.eye(n, dtype=bool)
  if valid is not None:
    valid2 = jnp.concatenate([valid, valid]).astype(bool)
    candidates &= valid2[None, :]
  else:
    valid2 = jnp.ones((n,), bool)
  logits = jnp.where(candidates, logits, _MASKED_LOGIT)
  positive = (jnp.arange(n) + b) % n
  positive_logit = jnp.take_along_axis(logits, positive[:, None], axis=1)[:, 0]
  per_anchor = jax.nn.logsumexp(logits, axis=1) - positive_logit
  weights = valid2.astype(jnp.float32)
  denom = jnp.maximum(weights.sum(), 1.)
  loss = jnp.sum(per_anchor * weights) / denom
  accuracy = jnp.sum((jnp.argmax(logits, axis=1) == positive) * weights) / denom
  return loss, accuracy


def positive_similarity(z1: jax.Array, z2: jax.Array) -> jax.Array:
  return jnp.mean(jnp.sum(l2_normalize(z1) * l2_normalize(z2), axis=-1))


def split_views(x: jax.Array, num_views: int) -> list[jax.Array]:
  """[B * V, ...] (example-major) -> V arrays [B, ...]."""
  x = x.reshape(-1, num_views, *x.shape[1:])
  return [x[:, v] for v in range(num_views)]


def check_view_size(model, size: int, what: str) -> None:
  """Fails at start-up (not inside jit) if the backbone cannot take views of `size` px."""
  try:
    model.token_grid((size, size))
  except ValueError as e:
    raise errors.UserError(f"config.objective.views: {what} views of {size}x{size} px do not fit "
                           f"the backbone: {e}") from None


class TwoViews:
  """What SimCLR and BYOL share: two global views of every image (`self.views`, a
  views.ViewConfig), and a picture of them."""

  def make_views(self, rng, batch):
    """batch -> [2B, s, s, C], the two views of each image adjacent."""
    return views_lib.flatten_views(views_lib.global_views(rng, batch, self.views, 2))

  def placeholder_views(self, batch):
    return views_lib.placeholder_views(batch["image"], self.views.global_crop)

  def visualize(self, params, extra, batch, rng, path):
    del params, extra
    if self.views.source == "same_lens":
      return  # The trainer passes only 'image'; the pairs come from the data source.
    images = batch["image"]
    save_views_picture(jax.jit(self.make_views)(rng, batch), 2, images, path)


class Objective(TwoViews, base.Objective):
  """See the module docstring."""

  def __init__(self, config, model):
    super().__init__(config, model)
    cfg = utils.with_defaults(config.objective, DEFAULTS)
    self.temperature = float(cfg.temperature)
    if self.temperature <= 0:
      raise errors.UserError(f"config.objective.temperature={self.temperature} must be > 0.")
    self.views = views_lib.parse_views(cfg.views, config.data.image_size)
    check_view_size(model, self.views.global_crop.size, "global")
    self.head = ProjectionMLP(cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers, cfg.head_norm)
    self.aux = simsup.make_auxiliary(cfg)

  def network(self) -> base.EncoderWithHead:
    return base.EncoderWithHead(self.model, self.head)

  def init(self, rng, batch):
    params = self.network().init(rng, self.placeholder_views(batch))["params"]
    return add_aux_params(self.aux, params, rng, self.model), {}

  def loss(self, params, extra, batch, rng, step):
    del step
    pooled, z = self.network().apply({"params": params}, self.make_views(rng, batch))
    z1, z2 = split_views(z, 2)
    loss, accuracy = nt_xent(z1, z2, self.temperature, batch.get("mask", None))
    metrics = {"contrastive_accuracy": accuracy,
               "positive_similarity": positive_similarity(z1, z2),
               "embedding_std": metrics_lib.embedding_std(split_views(pooled, 2)[0])}
    loss, metrics = add_aux_loss(self.aux, params, split_views(pooled, 2)[0], batch, loss,
                                 metrics)
    return loss, (metrics, extra)


def add_aux_params(aux, params, rng, model):
  """params plus 'sim_head' when the objective has an auxiliary simulation loss."""
  if aux is None:
    return params
  return {**params, "sim_head": aux.init(jax.random.fold_in(rng, 1), model.embed_dim)}


def add_aux_loss(aux, params, pooled, batch, loss, metrics):
  """(loss + the auxiliary loss on `pooled` [B, D], metrics with its own) if any."""
  if aux is None:
    return loss, metrics
  aux_loss, aux_metrics = aux.loss(params, pooled, batch)
  return loss + aux_loss, {**metrics, **aux_metrics, "ssl_loss": loss}


def save_views_picture(flat_views, num_views: int, images, path: str) -> None:
  """One row of inputs, then one row per view, for checking the augmentations by eye.

  Called on every process with replicated arrays (the trainer's visualize contract);
  only process 0 writes.
  """
  rows = {"input": np.asarray(jax.device_get(images), np.float32)}
  for v, view in enumerate(split_views(flat_views, num_views)):
    rows[f"view {v + 1}"] = np.asarray(jax.device_get(view), np.float32)
  if jax.process_index() == 0:
    pictures.save_image_rows(rows, path)
