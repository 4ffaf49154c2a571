"""A plain convolutional network: the small from-scratch CNN of lens searches.

conv 3x3 -> ReLU -> 2x2 max-pool, once per entry of `widths` (three layers by default,
32/64/128 channels), then the final map's global mean as the embedding. No norms and
no residuals: the baseline a user would write in a notebook, under the shared backbone
interface (lensfm/models/__init__.py) so that every objective and task trains it.

Outputs: 'tokens' the final map flattened row-major [B, h*w, D]; 'pooled' its mean
[B, D]. `keep` raises (no tokens to drop).

Attributes (config.model fields with name='cnn'):
  widths: channels of each conv layer (its length is the depth).
  dtype: compute dtype; parameters stay float32.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class Model(nn.Module):
  widths: Sequence[int] = (32, 64, 128)
  dtype: Any = "float32"

  @property
  def embed_dim(self) -> int:
    return int(self.widths[-1])

  def token_grid(self, image_hw: Sequence[int]) -> tuple[int, int]:
    h, w = image_hw
    for _ in self.widths:  # 'SAME' pooling rounds up.
      h, w = -(-h // 2), -(-w // 2)
    return h, w

  @nn.compact
  def __call__(self, images, *, train: bool = False, keep: Optional[jax.Array] = None):
    del train
    if keep is not None:
      raise ValueError("Backbone 'cnn' has no tokens to drop (`keep` was given): masked "
                       "autoencoding needs 'vit' or 'hybrid'.")
    if images.ndim != 4:
      raise ValueError(f"CNN expects images [B, H, W, C]; got shape {images.shape}.")
    dtype = jnp.dtype(self.dtype) if self.dtype is not None else jnp.float32
    x = images.astype(dtype)
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Conv(int(width), (3, 3), padding="SAME", dtype=dtype,
                          name=f"conv{i}")(x))
      x = nn.max_pool(x, (2, 2), (2, 2), padding="SAME")
    tokens = x.reshape(x.shape[0], -1, x.shape[-1]).astype(jnp.float32)
    return {"tokens": tokens, "pooled": tokens.mean(axis=1)}
