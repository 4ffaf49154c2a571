"""ResNet backbone (He et al. 2016) under the shared interface, with GroupNorm.

GroupNorm, not BatchNorm: the parameters stay a pure pytree with no mutable batch
statistics, so every objective (and the trainer's `params`/`extra` split, sharding
and checkpoints) treats a ResNet exactly like a ViT, and the features of an image do
not depend on the other images of its batch (which matters for contrastive losses,
where BatchNorm leaks information between the views of a batch).

Outputs: 'tokens' is the final feature map flattened row-major to [B, h*w, D] and
'pooled' its global mean [B, D]. A ResNet has no tokens to drop, so `keep` raises a
ValueError (masked autoencoding needs a ViT or the hybrid).

Attributes (config.model fields with name='resnet'):
  depth: 18, 34 (basic blocks), 50, 101 or 152 (bottlenecks); picks `stage_sizes`.
  stage_sizes: explicit blocks per stage (e.g. (1, 1) for tests); overrides `depth`'s.
  bottleneck: basic or bottleneck blocks when `stage_sizes` is given (default: from depth).
  width: channels of the first stage (64); stage i has width * 2**i (times 4 for bottlenecks).
  stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool: stride 4, for >= 128 px images) or
    'small' (one 3x3/1 conv, no pool: stride 1, for 32-64 px lensing cut-outs, where a
    stride-4 stem would throw away the arcs' fine structure).
  num_groups: GroupNorm groups (32), reduced to the largest divisor of the channels.
  dtype: compute dtype; parameters stay float32.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STEMS = {"imagenet": 4, "small": 1}  # stem name -> its stride


def group_count(channels: int, num_groups: int) -> int:
  """The largest divisor of `channels` that is <= num_groups (GroupNorm needs one)."""
  return max(g for g in range(1, min(channels, num_groups) + 1) if channels % g == 0)


def norm(channels: int, num_groups: int, dtype, name: str, zero_init: bool = False):
  # Zero-initialising the last norm of each residual branch makes every block start
  # as the identity (Goyal et al. 2017), which lets deep ResNets train from step 0.
  scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
  return nn.GroupNorm(num_groups=group_count(channels, num_groups), dtype=dtype,
                      scale_init=scale_init, name=name)


class _Block(nn.Module):
  """What the two residual blocks share: fields, convolutions, norms and the sum."""
  channels: int
  strides: int = 1
  num_groups: int = 32
  dtype: Any = jnp.float32

  @nn.nowrap
  def conv(self, channels: int, kernel: int, strides: int, name: str):
    return nn.Conv(channels, (kernel, kernel), (strides, strides), padding="SAME",
                   use_bias=False, dtype=self.dtype, name=name)

  @nn.nowrap
  def norm(self, channels: int, name: str, zero_init: bool = False):
    return norm(channels, self.num_groups, self.dtype, name, zero_init)

  @nn.nowrap
  def residual(self, x, y):
    return nn.relu(y + shortcut(x, y.shape[-1], self.strides, self.num_groups, self.dtype))


class BasicBlock(_Block):
  """Two 3x3 convolutions (ResNet-18/34)."""
  expansion = 1

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm(self.channels, "norm1")(
        self.conv(self.channels, 3, self.strides, "conv1")(x)))
    y = self.norm(self.channels, "norm2", zero_init=True)(
        self.conv(self.channels, 3, 1, "conv2")(y))
    return self.residual(x, y)


class Bottleneck(_Block):
  """1x1 -> 3x3 (strided) -> 1x1 with 4x expansion (ResNet-50/101/152)."""
  expansion = 4

  @nn.compact
  def __call__(self, x):
    out = self.channels * self.expansion
    y = nn.relu(self.norm(self.channels, "norm1")(self.conv(self.channels, 1, 1, "conv1")(x)))
    y = nn.relu(self.norm(self.channels, "norm2")(
        self.conv(self.channels, 3, self.strides, "conv2")(y)))
    y = self.norm(out, "norm3", zero_init=True)(self.conv(out, 1, 1, "conv3")(y))
    return self.residual(x, y)


def shortcut(x, channels: int, strides: int, num_groups: int, dtype):
  """Identity, or a strided 1x1 projection when the shape changes."""
  if x.shape[-1] == channels and strides == 1:
    return x
  y = nn.Conv(channels, (1, 1), (strides, strides), use_bias=False, dtype=dtype,
              name="proj_conv")(x)
  return norm(channels, num_groups, dtype, "proj_norm")(y)


def apply_stem(x, kind: str, width: int, num_groups: int, dtype):
  """The layers before the first stage; named 'stem*' (layer 0 for layer-wise lr decay)."""
  if kind == "imagenet":
    x = nn.Conv(width, (7, 7), (2, 2), padding="SAME", use_bias=False, dtype=dtype,
                name="stem_conv")(x)
    x = nn.relu(norm(width, num_groups, dtype, "stem_norm")(x))
    return nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
  x = nn.Conv(width, (3, 3), (1, 1), padding="SAME", use_bias=False, dtype=dtype,
              name="stem_conv")(x)
  return nn.relu(norm(width, num_groups, dtype, "stem_norm")(x))


class Stages(nn.Module):
  """Residual stages; stage i > 0 halves the resolution in its first block.

  Blocks are named 'stage{i}_unit{j}' (not 'block...') so that layer-wise lr decay,
  which is defined for transformer blocks, leaves them at the head's rate.
  """
  stage_sizes: Sequence[int]
  width: int
  bottleneck: bool
  num_groups: int = 32
  dtype: Any = jnp.float32
  first_stride: int = 1

  @nn.compact
  def __call__(self, x):
    block_cls = Bottleneck if self.bottleneck else BasicBlock
    for i, size in enumerate(self.stage_sizes):
      for j in range(size):
        strides = (self.first_stride if i == 0 else 2) if j == 0 else 1
        x = block_cls(self.width * 2**i, strides, self.num_groups, self.dtype,
                      name=f"stage{i + 1}_unit{j}")(x)
    return x


def resolve_stages(depth: Optional[int], stage_sizes, bottleneck) -> tuple[tuple[int, ...], bool]:
  """(stage_sizes, bottleneck) from `depth` or the explicit fields."""
  if stage_sizes is not None:
    sizes = tuple(int(s) for s in stage_sizes)
    if not sizes or min(sizes) < 1:
      raise ValueError(f"ResNet stage_sizes={stage_sizes!r} must be a non-empty sequence of "
                       f"positive block counts.")
    return sizes, bool(bottleneck) if bottleneck is not None else False
  if depth not in STAGE_SIZES:
    raise ValueError(f"ResNet depth={depth!r} is not one of {sorted(STAGE_SIZES)} "
                     f"(or give stage_sizes explicitly).")
  return STAGE_SIZES[depth], depth >= 50 if bottleneck is None else bool(bottleneck)


class Model(nn.Module):
  """ResNet with GroupNorm under the shared backbone interface (see the module docstring)."""
  depth: Optional[int] = 50
  stage_sizes: Optional[Sequence[int]] = None
  bottleneck: Optional[bool] = None
  width: int = 64
  stem: str = "small"
  num_groups: int = 32
  dtype: Any = "float32"

  def _stages(self):
    return resolve_stages(self.depth, self.stage_sizes, self.bottleneck)

  @property
  def embed_dim(self) -> int:
    sizes, bottleneck = self._stages()
    return self.width * 2**(len(sizes) - 1) * (4 if bottleneck else 1)

  def total_stride(self) -> int:
    if self.stem not in STEMS:
      raise ValueError(f"ResNet stem={self.stem!r} is not one of {sorted(STEMS)}.")
    return STEMS[self.stem] * 2**(len(self._stages()[0]) - 1)

  def token_grid(self, image_hw: Sequence[int]) -> tuple[int, int]:
    # 'SAME' padding rounds up at every stride-2 layer.
    s = self.total_stride()
    h, w = image_hw
    return -(-h // s), -(-w // s)

  @nn.compact
  def __call__(self, images, *, train: bool = False, keep: Optional[jax.Array] = None):
    del train  # GroupNorm: no batch statistics, train and eval behave the same.
    if keep is not None:
      raise ValueError("Backbone 'resnet' has no tokens to drop (`keep` was given): masked "
                       "autoencoding needs a token-dropping backbone ('vit' or 'hybrid').")
    if images.ndim != 4:
      raise ValueError(f"ResNet expects images [B, H, W, C]; got shape {images.shape}.")
    sizes, bottleneck = self._stages()
    self.total_stride()  # Validates `stem` with a clear error.
    dtype = jnp.dtype(self.dtype) if self.dtype is not None else jnp.float32
    x = apply_stem(images.astype(dtype), self.stem, self.width, self.num_groups, dtype)
    x = Stages(sizes, self.width, bottleneck, self.num_groups, dtype, name="stages")(x)
    b, h, w, d = x.shape
    tokens = x.reshape(b, h * w, d)
    return {"tokens": tokens, "pooled": tokens.mean(axis=1)}
