"""DINO (Caron et al. 2021): self-distillation with no labels, multi-crop views, a
centred and sharpened EMA teacher.

Per image: 2 global views (centred crops of most of the field) and
`num_local_crops` local views (smaller centred crops, around the arcs) at a lower
resolution; see views.py. The teacher sees the global views, the student all views:

  teacher probs  q_t = softmax((g_teacher(global_t) - center) / teacher_temp)
  student logprob     log_softmax(g_student(view_s) / student_temp)
  loss = mean over pairs (t, s), s != t, of mean_batch(-sum_k q_t[k] log p_s[k])

Centering (subtracting a running mean of the teacher's outputs) keeps one prototype
from dominating; sharpening (a low teacher temperature) keeps the output from becoming
uniform; together they avoid collapse. After every step:
  center <- center_momentum * center + (1 - center_momentum) * mean(teacher logits)
(mean over the global batch and both global views: the all-reduce of DINO's code is
implicit on the global array), computed in `loss` from that step's teacher logits and
returned in `extra`, and the teacher follows the student by EMA in `update_extra`
with BYOL's cosine momentum schedule (`byol.cosine_momentum`).

The teacher temperature warms up linearly from `warmup_teacher_temp` to
`teacher_temp` over `warmup_teacher_temp_steps` steps, as in DINO.

Head (DINOHead): MLP (hidden_dim, GELU) -> bottleneck_dim -> L2 normalisation -> a
weight-normalised linear layer to `out_dim` prototypes whose weight norm is fixed to
1 (DINO's norm_last_layer=True). No BatchNorm (pure-pytree parameters).

config.objective fields (defaults: `DEFAULTS`): name='dino', out_dim, hidden_dim,
bottleneck_dim, head_layers, student_temp, teacher_temp, warmup_teacher_temp (None: the
teacher_temp), warmup_teacher_temp_steps, center_momentum, ema_momentum, ema_momentum_end,
views (see views.py; DINO reads num_local_crops; views.source='same_lens' for two
observations of one lens), aux (optional simulation-supervised loss, see simsup.py).
Metrics: teacher_entropy (mean entropy of the teacher's distribution: near 0 is a
one-hot collapse, near log(out_dim) a uniform one), teacher_temperature,
ema_momentum, center_norm, embedding_std (collapse indicator of the student
backbone's pooled embeddings).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from lensfm import errors
from lensfm import utils
from lensfm.objectives import base
from lensfm.objectives import byol
from lensfm.objectives import metrics as metrics_lib
from lensfm.objectives import simclr
from lensfm.objectives import simsup
from lensfm.objectives import views as views_lib

DEFAULTS = dict(out_dim=65536, hidden_dim=2048, bottleneck_dim=256, head_layers=3,
                student_temp=0.1, teacher_temp=0.04, warmup_teacher_temp=None,
                warmup_teacher_temp_steps=0, center_momentum=0.9, ema_momentum=0.996,
                ema_momentum_end=1.0, views=None, aux=None)


class WeightNormDense(nn.Module):
  """Linear layer whose weight columns are normalised to unit length (no bias)."""
  features: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.truncated_normal(0.02),
                        (x.shape[-1], self.features), jnp.float32)
    kernel = kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    return jnp.matmul(x, kernel, precision=jax.lax.Precision.HIGHEST)


class DINOHead(nn.Module):
  """MLP -> bottleneck -> L2 normalisation -> weight-normalised prototypes."""
  out_dim: int
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3

  @nn.compact
  def __call__(self, x):
    x = x.astype(jnp.float32)
    init = dict(kernel_init=nn.initializers.truncated_normal(0.02))
    for i in range(self.num_layers - 1):
      x = nn.gelu(nn.Dense(self.hidden_dim, name=f"hidden{i}", **init)(x))
    x = nn.Dense(self.bottleneck_dim, name="bottleneck", **init)(x)
    return WeightNormDense(self.out_dim, name="prototypes")(simclr.l2_normalize(x))


def teacher_temperature(step, warmup: float, final: float, warmup_steps: int) -> jax.Array:
  """Linear from `warmup` to `final` over `warmup_steps`, then `final`."""
  if warmup_steps <= 0:
    return jnp.asarray(final, jnp.float32)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / warmup_steps, 0., 1.)
  return warmup + (final - warmup) * frac


def teacher_probs(teacher_logits: jax.Array, center: jax.Array, temperature) -> jax.Array:
  """Centred and sharpened teacher distribution, softmax((t - center) / temperature)."""
  return jax.nn.softmax((teacher_logits - center) / temperature, axis=-1)


def update_center(center: jax.Array, teacher_logits: jax.Array, momentum: float,
                  weights=None) -> jax.Array:
  """center <- momentum * center + (1 - momentum) * batch mean of teacher_logits [B, V, K]."""
  if weights is None:
    mean = teacher_logits.mean(axis=(0, 1))
  else:
    w = weights.astype(jnp.float32)[:, None, None]
    mean = jnp.sum(teacher_logits * w, axis=(0, 1)) / jnp.maximum(
        w.sum() * teacher_logits.shape[1], 1.)
  return momentum * center + (1. - momentum) * mean


def dino_loss(student_logits: jax.Array, teacher_q: jax.Array, student_temp: float,
              weights=None) -> jax.Array:
  """Cross entropy of teacher views vs student views, skipping same-view pairs.

  student_logits [B, Vs, K]; teacher_q [B, Vt, K] (probabilities), where the first Vt
  student views are the same global views the teacher saw.
  """
  log_p = jax.nn.log_softmax(student_logits / student_temp, axis=-1)
  # [B, Vt, Vs]: cross entropy of every (teacher view, student view) pair.
  ce = -jnp.einsum("btk,bsk->bts", teacher_q, log_p)
  vt, vs = teacher_q.shape[1], log_p.shape[1]
  pairs = 1. - jnp.eye(vt, vs)
  per_example = jnp.sum(ce * pairs, axis=(1, 2)) / pairs.sum()
  if weights is None:
    return per_example.mean()
  weights = weights.astype(jnp.float32)
  return jnp.sum(per_example * weights) / jnp.maximum(weights.sum(), 1.)


def entropy(probs: jax.Array) -> jax.Array:
  return -jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-20)), axis=-1).mean()


class Objective(base.Objective):
  """See the module docstring."""

  def __init__(self, config, model):
    super().__init__(config, model)
    cfg = utils.with_defaults(config.objective, DEFAULTS)
    self.out_dim = int(cfg.out_dim)
    self.student_temp = float(cfg.student_temp)
    self.teacher_temp = float(cfg.teacher_temp)
    warmup = cfg.warmup_teacher_temp
    self.warmup_teacher_temp = self.teacher_temp if warmup is None else float(warmup)
    self.warmup_teacher_temp_steps = int(cfg.warmup_teacher_temp_steps)
    self.center_momentum = float(cfg.center_momentum)
    for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
      if getattr(self, name) <= 0:
        raise errors.UserError(f"config.objective.{name}={getattr(self, name)} must be > 0.")
    if not 0. <= self.center_momentum < 1.:
      raise errors.UserError(f"config.objective.center_momentum={self.center_momentum} must be in "
                             f"[0, 1).")
    self.momentum = byol.EmaMomentum(cfg, config.total_steps)
    self.views = views_lib.parse_views(cfg.views, config.data.image_size,
                                       global_crop_scale=(0.7, 1.))
    simclr.check_view_size(model, self.views.global_crop.size, "global")
    if self.views.num_local_crops:
      simclr.check_view_size(model, self.views.local_crop.size, "local")
    self.head = DINOHead(self.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.head_layers)
    self.aux = simsup.make_auxiliary(cfg)

  def network(self) -> base.EncoderWithHead:
    return base.EncoderWithHead(self.model, self.head)

  def temperature(self, step) -> jax.Array:
    return teacher_temperature(step, self.warmup_teacher_temp, self.teacher_temp,
                               self.warmup_teacher_temp_steps)

  def make_views(self, rng, batch) -> tuple[jax.Array, jax.Array | None]:
    """Global views [B, 2, G, G, C] and local views [B, n, L, L, C] (None if n = 0)."""
    global_rng, local_rng = jax.random.split(rng)
    globals_ = views_lib.global_views(global_rng, batch, self.views, 2)
    if not self.views.num_local_crops:
      return globals_, None
    locals_ = views_lib.local_views(local_rng, batch, self.views, self.views.num_local_crops)
    return globals_, locals_

  def student_logits(self, params, globals_, locals_):
    """Returns (pooled embeddings of global views [B*2, D], logits [B, 2 + n, K])."""
    net = self.network()
    b = globals_.shape[0]
    pooled, g = net.apply({"params": params}, views_lib.flatten_views(globals_))
    logits = [g.reshape(b, 2, -1)]
    if locals_ is not None:  # Another resolution: a second forward pass.
      _, l = net.apply({"params": params}, views_lib.flatten_views(locals_))
      logits.append(l.reshape(b, locals_.shape[1], -1))
    return pooled, jnp.concatenate(logits, axis=1)

  def teacher_logits(self, teacher, globals_) -> jax.Array:
    """Teacher logits of the global views, [B, 2, K], no gradient."""
    _, t = self.network().apply({"params": teacher}, views_lib.flatten_views(globals_))
    return jax.lax.stop_gradient(t.reshape(globals_.shape[0], 2, -1))

  def init(self, rng, batch):
    images = views_lib.placeholder_views(batch["image"], self.views.global_crop)
    params = self.network().init(rng, images)["params"]
    teacher = jax.tree.map(jnp.copy, params)
    params = simclr.add_aux_params(self.aux, params, rng, self.model)
    return params, {"teacher": teacher, "center": jnp.zeros((self.out_dim,), jnp.float32)}

  def loss(self, params, extra, batch, rng, step):
    globals_, locals_ = self.make_views(rng, batch)
    weights = batch.get("mask", None)
    student_params = {k: params[k] for k in ("encoder", "head")}
    pooled, student = self.student_logits(student_params, globals_, locals_)
    teacher = self.teacher_logits(extra["teacher"], globals_)
    temperature = self.temperature(step)
    q = teacher_probs(teacher, extra["center"], temperature)
    loss = dino_loss(student, q, self.student_temp, weights)
    center = update_center(extra["center"], teacher, self.center_momentum, weights)
    metrics = {"teacher_entropy": entropy(q), "teacher_temperature": temperature,
               "ema_momentum": self.momentum(step), "center_norm": jnp.linalg.norm(center),
               "embedding_std": metrics_lib.embedding_std(simclr.split_views(pooled, 2)[0])}
    loss, metrics = simclr.add_aux_loss(self.aux, params, simclr.split_views(pooled, 2)[0],
                                        batch, loss, metrics)
    return loss, (metrics, {**extra, "center": center})

  def update_extra(self, params, extra, step):
    student = {k: params[k] for k in ("encoder", "head")}
    return {**extra, "teacher": byol.ema_update(extra["teacher"], student, self.momentum(step))}

  def visualize(self, params, extra, batch, rng, path):
    del params, extra
    if self.views.source == "same_lens":
      return  # The trainer passes only 'image'; the pairs come from the data source.
    images = batch["image"]
    global_views = jax.jit(lambda r, x: views_lib.flatten_views(self.make_views(r, x)[0]))
    simclr.save_views_picture(global_views(rng, batch), 2, images, path)
