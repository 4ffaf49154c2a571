"""Vision Transformer backbone (Linen), with fixed 2-D sin-cos position embeddings.

Sizes follow the usual names (Ti, S, B, L, H); `variant='B/8'` picks ViT-B with 8x8
patches. Any image size divisible by the patch size works (64x64 and 150x150 lensing
images, 1 or more bands), because position embeddings are computed, not learned.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lensfm.models import layers

# name: (width, depth, mlp_dim, num_heads)
SIZES = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
}


def parse_variant(variant: str) -> dict[str, Any]:
  """'B/8' -> dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=8)."""
  size, _, patch = variant.partition("/")
  if size not in SIZES or not patch.isdigit():
    raise ValueError(f"ViT variant {variant!r} is not of the form SIZE/PATCH with SIZE "
                     f"in {list(SIZES)} (e.g. 'B/8').")
  width, depth, mlp_dim, num_heads = SIZES[size]
  return dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads,
              patch_size=int(patch))


DIMS = ("width", "depth", "mlp_dim", "num_heads", "patch_size")


def resolve_dims(model, kind: str, parse=parse_variant, names=DIMS,
                 example: str = "'B/8'") -> dict[str, Any]:
  """`names` from `parse(model.variant)`, the model's explicit (not None) fields winning."""
  dims = parse(model.variant) if model.variant else {}
  for name in names:
    if getattr(model, name) is not None:
      dims[name] = getattr(model, name)
    if name not in dims:
      raise ValueError(f"{kind} needs `{name}` (or a `variant` such as {example}).")
  return dims


def patch_grid(image_hw: Sequence[int], patch: int) -> tuple[int, int]:
  """(rows, cols) of non-overlapping patches; a clear error if the size does not divide."""
  h, w = image_hw
  if h % patch or w % patch:
    raise ValueError(f"Image size {h}x{w} is not divisible by the patch size {patch}; "
                     f"choose config.model.patch_size (or variant) dividing both.")
  return h // patch, w // patch


def sincos_2d(grid_h: int, grid_w: int, width: int, temperature: float = 10_000.):
  """Fixed 2-D sin-cos position embeddings, [grid_h * grid_w, width] float32."""
  if width % 4:
    raise ValueError(f"Width {width} must be divisible by 4 for 2-D sin-cos embeddings.")
  y, x = np.mgrid[:grid_h, :grid_w]
  omega = 1. / temperature**(np.arange(width // 4) / (width // 4 - 1 or 1))
  y = np.einsum("n,d->nd", y.reshape(-1), omega)
  x = np.einsum("n,d->nd", x.reshape(-1), omega)
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """[B, H, W, C] -> [B, N, patch*patch*C], tokens in row-major grid order."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class PatchEmbed(nn.Module):
  """A stride-`patch` convolution's parameters (kernel [p, p, C, width]) applied as one
  matmul on patchified pixels, so masked tokens can be dropped before it, not after."""
  width: int
  patch: int
  precision: layers.Precision = layers.Precision()

  @nn.compact
  def __call__(self, patches):
    c = patches.shape[-1] // self.patch**2
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.patch, self.patch, c, self.width), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.width,), jnp.float32)
    kernel = kernel.reshape(self.patch * self.patch * c, self.width)
    y = layers.dot_f32_accumulate(patches, kernel, (patches.ndim - 1,), self.precision)
    return (y + bias).astype(self.precision.activations)


class MlpBlock(nn.Module):
  mlp_dim: int
  precision: layers.Precision = layers.Precision()

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    init = dict(kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.normal(stddev=1e-6))
    x = layers.Dense(self.mlp_dim, precision=self.precision, **init)(x)
    x = layers.gelu(x)
    return layers.Dense(width, precision=self.precision, **init)(x)


class Attention(nn.Module):
  """Multi-head self-attention through `jax.nn.dot_product_attention`, so XLA (or
  cuDNN's fused kernel on GPUs, with `implementation='cudnn'`) picks the fast path."""
  num_heads: int
  precision: layers.Precision = layers.Precision()
  implementation: Optional[str] = None

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"Width {width} is not divisible by num_heads={self.num_heads}.")
    head_dim = width // self.num_heads
    dense = lambda feats, axis, name: layers.Dense(
        feats, axis=axis, precision=self.precision, name=name,
        kernel_init=nn.initializers.xavier_uniform())
    q, k, v = (dense((self.num_heads, head_dim), -1, n)(x) for n in ("query", "key", "value"))
    out = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)
    return dense(width, (-2, -1), "out")(out)


class Block(nn.Module):
  """Pre-norm transformer block."""
  mlp_dim: int
  num_heads: int
  precision: layers.Precision = layers.Precision()
  attention_impl: Optional[str] = None

  @nn.compact
  def __call__(self, x):
    act = self.precision.activations
    y = layers.LayerNorm(dtype=act)(x)
    x = x + Attention(self.num_heads, self.precision, self.attention_impl, name="attn")(y)
    y = layers.LayerNorm(dtype=act)(x)
    return x + MlpBlock(self.mlp_dim, self.precision, name="mlp")(y)


class Encoder(nn.Module):
  """A stack of `depth` blocks and a final LayerNorm."""
  depth: int
  mlp_dim: int
  num_heads: int
  precision: layers.Precision = layers.Precision()
  remat: bool = False
  attention_impl: Optional[str] = None

  @nn.compact
  def __call__(self, x):
    # Rematerialising each block trades ~30% more compute for activations that
    # no longer grow with depth: what lets ViT-L/H fit large batches.
    block_cls = nn.remat(Block) if self.remat else Block
    for i in range(self.depth):
      x = block_cls(self.mlp_dim, self.num_heads, self.precision, self.attention_impl,
                    name=f"block{i:02d}")(x)
    # Outputs in the compute dtype.
    return layers.LayerNorm(dtype=self.precision.compute, name="norm")(x)


class Fields(layers.PrecisionFields):
  """config.model fields of the backbones built on this ViT ('vit', 'hybrid', 'group_pooled').

  Attributes:
    variant: 'SIZE/PATCH' (e.g. 'B/8'); explicit width/depth/... override it.
    pool: 'cls' (a class token, its output is `pooled`) or 'mean' (mean of tokens).
    dtype: compute dtype ('bfloat16' for mixed precision); parameters stay float32.
    activation_dtype, dot_output_dtype, weight_grad_transpose: see layers.Precision.
    remat: rematerialise blocks in the backward pass to save memory.
    attention_impl: passed to jax.nn.dot_product_attention (None, 'xla', 'cudnn').
  """
  variant: Optional[str] = "B/16"
  width: Optional[int] = None
  depth: Optional[int] = None
  mlp_dim: Optional[int] = None
  num_heads: Optional[int] = None
  patch_size: Optional[int] = None
  pool: str = "cls"
  remat: bool = False
  attention_impl: Optional[str] = None
  kind = "ViT"  # Names the backbone in errors.

  def dims(self) -> dict[str, int]:
    return resolve_dims(self, self.kind)

  @property
  def embed_dim(self) -> int:
    return self.dims()["width"]

  def token_grid(self, image_hw: Sequence[int]) -> tuple[int, int]:
    return patch_grid(image_hw, self.dims()["patch_size"])

  @nn.nowrap
  def check_input(self, images) -> None:
    if self.pool not in ("cls", "mean"):
      raise ValueError(f"{self.kind} pool={self.pool!r}; expected 'cls' or 'mean'.")
    if images.ndim != 4:
      raise ValueError(f"{self.kind} expects images [B, H, W, C]; got shape {images.shape}.")

  @nn.nowrap
  def add_cls(self, x):
    """[B, N, D] -> [B, 1 + N, D] with the learned class token first, if pool='cls'."""
    if self.pool != "cls":
      return x
    width = x.shape[-1]
    cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, width), jnp.float32)
    return jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, width)).astype(x.dtype), x], 1)

  @nn.nowrap
  def outputs(self, x) -> dict[str, jax.Array]:
    """The encoder's output [B, (1 +) N, D] as the shared interface's tokens and pooled."""
    if self.pool == "cls":
      return {"tokens": x[:, 1:], "pooled": x[:, 0]}
    return {"tokens": x, "pooled": x.mean(axis=1)}


class Model(Fields):
  """ViT under the shared backbone interface (see lensfm/models/__init__.py), configured
  by `Fields`."""

  @nn.compact
  def __call__(self, images, *, train: bool = False, keep: Optional[jax.Array] = None):
    del train  # No dropout or batch statistics in this ViT.
    self.check_input(images)
    d = self.dims()
    precision = self.precision
    gh, gw = self.token_grid(images.shape[1:3])
    p = d["patch_size"]

    patches = patchify(images.astype(precision.compute), p)
    pos = jnp.asarray(sincos_2d(gh, gw, d["width"]), precision.activations)[None]
    if keep is not None:  # Masked tokens are dropped as pixels: 1/4 of the embedding work.
      patches = jnp.take_along_axis(patches, keep[..., None], axis=1)
      pos = jnp.take(pos[0], keep, axis=0)
    x = PatchEmbed(d["width"], p, precision, name="patch_embed")(patches) + pos
    x = self.add_cls(x)
    x = Encoder(d["depth"], d["mlp_dim"], d["num_heads"], precision, self.remat,
                self.attention_impl, name="encoder")(x)
    return self.outputs(x)
