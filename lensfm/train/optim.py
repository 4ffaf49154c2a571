"""Optimizer: AdamW, linear warmup + cosine decay, global-norm clipping, weight decay
masked off biases/norms/embeddings, and optional layer-wise learning-rate decay.

config.optim fields (defaults: `DEFAULTS`):
  base_lr: learning rate for a batch of `lr_batch_reference`; the peak
    rate is base_lr * batch_size / lr_batch_reference, the linear scaling rule that
    MAE/DINO use, so a config keeps working when the batch changes.
  min_lr, warmup_steps, b1, b2, weight_decay, grad_clip_norm (None = off),
  layer_decay (None = off; e.g. 0.75 when fine-tuning a ViT: block i of L gets
    lr * layer_decay**(L - i), the embeddings layer_decay**(L + 1), heads 1),
  freeze: regex on parameter paths ('encoder/.*' for a linear probe) whose updates are
    zero, weight decay included, so frozen parameters stay bit-for-bit unchanged.
"""
import re

import jax
import jax.numpy as jnp
import optax

from lensfm import errors
from lensfm import utils

# Parameters that get no weight decay: biases, norm scales, and the embedding-like
# vectors (class token, mask token, learned position embeddings). Decaying them
# only pulls them towards zero without regularising anything.
_NO_DECAY = re.compile(r"(bias|scale|cls|mask_token|pos_embedding|/norm)")

# What a config.optim without the field means (configs/common.adamw states them all).
DEFAULTS = dict(lr_batch_reference=256, warmup_steps=0, min_lr=0., grad_clip_norm=None,
                b1=0.9, b2=0.999, weight_decay=0., layer_decay=None, freeze=None)


def optim_config(config):
  """config.optim with the fields it lacks from DEFAULTS."""
  return utils.with_defaults(config.optim, DEFAULTS)


def peak_learning_rate(config) -> float:
  o = optim_config(config)
  return o.base_lr * config.batch_size / o.lr_batch_reference


def learning_rate_schedule(config) -> optax.Schedule:
  o = optim_config(config)
  peak = peak_learning_rate(config)
  warmup = min(o.warmup_steps, config.total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0., peak_value=peak, warmup_steps=warmup,
      decay_steps=max(config.total_steps, warmup + 1), end_value=o.min_lr)


def weight_decay_mask(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: leaf.ndim >= 2 and not _NO_DECAY.search(utils.path_to_str(path)),
      params)


def layer_index(name: str, depth: int) -> int:
  """0 for embeddings, i+1 for block i, depth+1 for everything after the blocks."""
  m = re.search(r"block(\d+)", name)
  if m and "encoder/" in name:
    return int(m.group(1)) + 1
  if re.search(r"(patch_embed|cls|pos_embedding|stem)", name):
    return 0
  return depth + 1


def num_blocks(params) -> int:
  """The encoder's blocks, counted from the parameter names (0 for a model without)."""
  names = [utils.path_to_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  found = [int(m.group(1)) for n in names if "encoder/" in n
           for m in [re.search(r"block(\d+)", n)] if m]
  return max(found) + 1 if found else 0


def layer_decay_scales(params, depth: int, decay: float):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: decay**(depth + 1 - layer_index(utils.path_to_str(path), depth)), params)


def scale_by_tree(scales) -> optax.GradientTransformation:
  """Multiplies each update by a fixed per-leaf factor (layer-wise lr decay)."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(config, params) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, schedule) for `params` (arrays or shapes)."""
  o = optim_config(config)
  schedule = learning_rate_schedule(config)
  parts = []
  if o.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                           mask=weight_decay_mask))
  if o.layer_decay:
    parts.append(scale_by_tree(layer_decay_scales(params, num_blocks(params), o.layer_decay)))
  tx = optax.chain(*parts)
  if o.freeze:
    frozen = re.compile(o.freeze)
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if frozen.search(utils.path_to_str(path)) else "trained", params)
    if "trained" not in jax.tree.leaves(labels):
      raise errors.UserError(f"config.optim.freeze={o.freeze!r} freezes every parameter.")
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
