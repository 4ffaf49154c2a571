"""Hybrid backbone: a convolutional stem feeding the transformer blocks of `vit.py`.

Convolutions first give the transformer local, translation-equivariant features and
an easier optimisation (Xiao et al. 2021, "Early convolutions help transformers see
better"; the R50+ViT hybrids of Dosovitskiy et al. 2021), which helps most when
images and data sets are small, as lensing cut-outs are. The stem downsamples by
`patch_size` (its total stride); each output pixel becomes one token, then the model
is a ViT: fixed 2-D sin-cos positions, optional class token, `vit.Encoder`.

Stems:
  'conv':   log2(patch_size) 3x3 stride-2 convolutions (GroupNorm, ReLU), channels
            stem_width, 2 * stem_width, ..., then a 1x1 projection to `width`.
  'resnet': a 3x3 stride-1 root and log2(patch_size) ResNet stages of `stem_blocks`
            basic blocks, each stage halving the resolution (from `resnet.py`), then
            the 1x1 projection.
Both use GroupNorm (no batch statistics; see resnet.py).

Token dropping (`keep`) works, so masked autoencoding runs on this backbone: the
patches that are not kept are zeroed in the *input* before the stem, so the kept
tokens' convolutional receptive fields (which overlap neighbouring patches) cannot see
the hidden pixels the decoder must predict, then the kept tokens are gathered after
the stem, as in the ViT. `dims()['patch_size']` is the stem's stride, which is what
MAE uses to cut its pixel targets.

Attributes (config.model fields with name='hybrid'):
  variant: 'SIZE/STRIDE' as for the ViT (e.g. 'B/8'); explicit fields override it.
  width, depth, mlp_dim, num_heads, patch_size (= stem stride, a power of 2 >= 2).
  stem: 'conv' or 'resnet'; stem_width (32); stem_blocks (2, for 'resnet');
  num_groups: GroupNorm groups in the stem (32, reduced to a divisor of the channels).
  pool, dtype (and the other layers.Precision fields), remat, attention_impl: as for the
  ViT (`vit.Fields`).
"""
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lensfm.models import resnet
from lensfm.models import vit

STEMS = ("conv", "resnet")


def stride_stages(patch_size: int) -> int:
  """Number of stride-2 stages giving a total stride of `patch_size`."""
  n = int(round(math.log2(patch_size))) if patch_size and patch_size > 0 else -1
  if n < 1 or 2**n != patch_size:
    raise ValueError(f"Hybrid patch_size={patch_size} (the stem's total stride) must be a "
                     f"power of 2 >= 2, e.g. 4 or 8.")
  return n


def visible_pixels(keep: jax.Array, grid: tuple[int, int], patch: int) -> jax.Array:
  """[B, K] kept token indices -> [B, H, W, 1] float mask, 1 on pixels of kept patches."""
  b = keep.shape[0]
  gh, gw = grid
  visible = jnp.zeros((b, gh * gw), jnp.float32).at[jnp.arange(b)[:, None], keep].set(1.)
  visible = visible.reshape(b, gh, 1, gw, 1)
  visible = jnp.broadcast_to(visible, (b, gh, patch, gw, patch))
  return visible.reshape(b, gh * patch, gw * patch, 1)


class ConvStem(nn.Module):
  """Stride-2 3x3 convolutions, doubling channels each time."""
  num_stages: int
  stem_width: int
  num_groups: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_stages):
      c = self.stem_width * 2**i
      x = nn.Conv(c, (3, 3), (2, 2), padding="SAME", use_bias=False, dtype=self.dtype,
                  name=f"conv{i}")(x)
      x = nn.relu(resnet.norm(c, self.num_groups, self.dtype, f"norm{i}")(x))
    return x


class ResNetStem(nn.Module):
  """A stride-1 root and `num_stages` ResNet stages, each halving the resolution."""
  num_stages: int
  stem_width: int
  stem_blocks: int
  num_groups: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    x = resnet.apply_stem(x, "small", self.stem_width, self.num_groups, self.dtype)
    return resnet.Stages((self.stem_blocks,) * self.num_stages, self.stem_width,
                         bottleneck=False, num_groups=self.num_groups, dtype=self.dtype,
                         first_stride=2, name="stages")(x)


class Model(vit.Fields):
  """Convolutional stem + ViT under the shared backbone interface (module docstring)."""
  variant: Optional[str] = "B/8"
  stem: str = "conv"
  stem_width: int = 32
  stem_blocks: int = 2
  num_groups: int = 32
  kind = "Hybrid"

  def token_grid(self, image_hw: Sequence[int]) -> tuple[int, int]:
    p = self.dims()["patch_size"]
    stride_stages(p)
    h, w = image_hw
    if h % p or w % p:
      raise ValueError(f"Image size {h}x{w} is not divisible by the hybrid stem's stride "
                       f"{p}; choose config.model.patch_size (or variant) dividing both.")
    return h // p, w // p

  def _stem(self, dtype) -> nn.Module:
    n = stride_stages(self.dims()["patch_size"])
    if self.stem == "conv":
      return ConvStem(n, self.stem_width, self.num_groups, dtype, name="stem")
    if self.stem == "resnet":
      return ResNetStem(n, self.stem_width, self.stem_blocks, self.num_groups, dtype, name="stem")
    raise ValueError(f"Hybrid stem={self.stem!r} is not one of {STEMS}.")

  @nn.compact
  def __call__(self, images, *, train: bool = False, keep: Optional[jax.Array] = None):
    del train  # No dropout or batch statistics.
    self.check_input(images)
    d = self.dims()
    dtype = self.precision.compute
    gh, gw = self.token_grid(images.shape[1:3])
    x = images.astype(dtype)
    if keep is not None:  # Hidden patches must not reach kept tokens through the convolutions.
      x = x * visible_pixels(keep, (gh, gw), d["patch_size"]).astype(dtype)

    x = self._stem(dtype)(x)
    x = nn.Conv(d["width"], (1, 1), dtype=dtype, name="stem_proj")(x)
    x = x.reshape(x.shape[0], gh * gw, d["width"])
    x = x + vit.sincos_2d(gh, gw, d["width"]).astype(dtype)[None]
    if keep is not None:
      x = jnp.take_along_axis(x, keep[..., None], axis=1)
    x = self.add_cls(x)
    x = vit.Encoder(d["depth"], d["mlp_dim"], d["num_heads"], self.precision, self.remat,
                    self.attention_impl, name="encoder")(x)
    return self.outputs(x)
