"""A rotation-equivariant vision transformer for lensing images, built on e3nn-jax.

A lensed image has no preferred orientation, so this backbone is built so that
rotating the input rotates its token features and leaves its pooled embedding
unchanged. It works in 3-D e3nn irreps restricted to the image plane: pixel and
token positions are (x, y, 0) with x to the right and y *up* (rows grow down),
so an in-plane rotation is a rotation about z and a mirror of the image is an
improper rotation; all operations are O(3)-equivariant, so both the rotations
and the reflections of the square pixel grid (the dihedral group D4) act
exactly, and other angles approximately (the pixel and token grids are square).

Architecture (`Model`):
  patch_embed  each p x p patch -> irreps: the patch's pixels weighted by
               (radial basis of the offset from the patch centre) x (spherical
               harmonics Y_l of the offset's direction), summed, then an
               equivariant `e3nn.flax.Linear` to `irreps`. Patches tile the
               image and their centres sit on a grid centred on the image
               centre, so a 90-degree rotation of the image permutes the tokens
               exactly and rotates each token's features by the matching D(R).
  blocks       `depth` pre-norm blocks of
                 attention: per head, invariant logits = (q_i . k_j) summed over
                   the head's irreps channels (inner products of equivariant
                   vectors are invariant) + a learned radial function of the
                   token distance |r_ij|; messages are tensor products of value
                   features with the spherical harmonics Y(r_ij / |r_ij|) of the
                   relative position, summed with the attention weights:
                     out_i = Linear( sum_j a_ij [ v_j  (+)  CG[u_j (x) Y_{l>0}(r_ij)] ] ).
                   The Y_0 = 1 path carries v_j at full width (plain attention); the
                   l > 0 paths carry u_j, a projection to 1/geo_divisor of the
                   channels, because they cost (sh dimension - 1) times more. Since
                   the tensor product is bilinear, the sum over j is taken *before*
                   the Clebsch-Gordan contraction (one batched matmul) instead of
                   materialising N^2 messages; tests/test_equivariant.py checks it
                   against `e3nn.tensor_product` on every pair.
                 feed-forward: Linear -> `e3nn.gate` (scalars through GELU,
                   higher-l channels scaled by sigmoid gates) -> Linear; the input
                   also carries the norms of the l > 0 channels, the path from
                   vectors back to scalars.
               Norms are equivariant layer norms (0e scalars centred, then the
               whole token divided by its RMS norm, which is invariant).
  outputs      'tokens' [B, N, D] = the final irreps array's `.array`, layout
               `model.irreps_out` (e3nn's: blocks in the order of `irreps`, each
               block [mul, 2l+1] flattened channel-major; l = 1 components are
               (x, y, z)). 'pooled' [B, embed_dim] = LayerNorm of the token mean
               of the invariants of each token: its 0e scalars and the norm of
               each l > 0 channel; embed_dim = the total multiplicity of `irreps`.

`keep` ([B, K] token indices, for MAE) drops tokens before the embedding; the kept
tokens keep their positions, so attention still sees the true geometry.

config.model fields (name='equivariant'):
  variant:      'SIZE/PATCH' with SIZE in SIZES ('Ti', 'S', 'B'), e.g. 'S/4';
                explicit fields below override it.
  irreps:       hidden irreps, e.g. '64x0e + 32x1o + 16x2e'; must contain 0e and
                every multiplicity must divide by num_heads (used sorted by l, equal
                irreps merged: `model.irreps_out`).
  depth, num_heads, patch_size: as in a ViT.
  mlp_ratio:    feed-forward channels = mlp_ratio x the multiplicity of each irrep (2).
  num_radial:   radial basis functions for the patch filters and the attention's
                distance bias (6).
  sh_lmax:      highest l of the spherical harmonics of relative token positions
                in the attention messages (2).
  geo_divisor:  the l > 0 messages use each multiplicity / geo_divisor channels,
                rounded up to a multiple of num_heads (4).
  patch_window: 'square' (every pixel of the patch; what MAE reconstructs) or
                'disk' (a soft disk of radius p/2 inside the patch: a round
                footprint, but the patch corners are unseen).
  dtype:        dtype of the outputs (and so of an MAE decoder); e3nn's tensor
                products run in float32, where equivariance holds to ~1e-6.
  activation_dtype, dot_output_dtype, weight_grad_transpose: how an MAE decoder on
                this backbone computes (layers.Precision).
  remat:        rematerialise blocks in the backward pass.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lensfm import errors
from lensfm.models import layers
from lensfm.models import vit

# name: (irreps, depth, num_heads). Parameters (1 band): Ti 0.38M, S 2.0M, B 6.9M,
# about a tenth of the ViT of the same name (5.3M, 21M, 85M), at a higher cost per
# parameter: every l > 0 channel carries 3 or 5 components and the l > 0 messages
# (sh_lmax=2) are 8 values per token pair. Not yet tuned on an accelerator.
SIZES = {
    "Ti": ("64x0e + 32x1o + 16x2e", 6, 4),
    "S": ("128x0e + 64x1o + 32x2e", 8, 8),
    "B": ("192x0e + 96x1o + 48x2e", 12, 12),
}
PATCH_WINDOWS = ("square", "disk")
_EPS = 1e-6


def parse_variant(variant: str) -> dict[str, Any]:
  """'S/4' -> dict(irreps=..., depth=8, num_heads=8, patch_size=4)."""
  size, _, patch = variant.partition("/")
  if size not in SIZES or not patch.isdigit():
    raise ValueError(f"Equivariant variant {variant!r} is not of the form SIZE/PATCH with "
                     f"SIZE in {list(SIZES)} (e.g. 'S/4').")
  irreps, depth, num_heads = SIZES[size]
  return dict(irreps=irreps, depth=depth, num_heads=num_heads, patch_size=int(patch))


# -- geometry ---------------------------------------------------------------------------


def plane_vectors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """In-plane (x, y) -> 3-D vectors (x, y, 0): rotations of the image are about z."""
  return np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.float32)


def pixel_offsets(patch: int) -> np.ndarray:
  """[p*p, 3] offsets of a patch's pixels from its centre, row-major, y up."""
  rows, cols = np.mgrid[:patch, :patch].astype(np.float64)
  centre = (patch - 1) / 2
  return plane_vectors((cols - centre).reshape(-1), (centre - rows).reshape(-1))


def token_positions(grid: Sequence[int]) -> np.ndarray:
  """[gh*gw, 3] patch centres in patch units, row-major, centred on the image centre.

  Centring makes a 90-degree rotation (or a flip) of the image a permutation of
  the tokens whose positions rotate by exactly the same matrix.
  """
  gh, gw = grid
  rows, cols = np.mgrid[:gh, :gw].astype(np.float64)
  return plane_vectors((cols - (gw - 1) / 2).reshape(-1), ((gh - 1) / 2 - rows).reshape(-1))


def safe_unit(vectors: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(v / |v|, |v|), with the zero vector mapped to zero (its direction is undefined)."""
  length = jnp.sqrt(jnp.sum(vectors**2, axis=-1, keepdims=True))
  unit = jnp.where(length > _EPS, vectors / jnp.maximum(length, _EPS), 0.)
  return unit, length[..., 0]


def direction_harmonics(irreps_sh: e3nn.Irreps, vectors) -> jax.Array:
  """Y_l(v / |v|) for each l of `irreps_sh` ('component' normalised); a zero vector
  gets Y_0 = 1 and Y_{l>0} = 0, so a token's message to itself carries no direction."""
  unit, _ = safe_unit(jnp.asarray(vectors, jnp.float32))
  return e3nn.spherical_harmonics(irreps_sh, unit, normalize=False).array


def harmonic_irreps(lmax: int) -> e3nn.Irreps:
  """0e + 1o + 2e + ...: the irreps of spherical harmonics up to lmax."""
  return e3nn.Irreps.spherical_harmonics(lmax)


@functools.lru_cache(maxsize=32)
def patch_filters(patch: int, num_radial: int, lmax: int, window: str) -> np.ndarray:
  """Steerable filter bank [p*p, num_radial, (lmax+1)^2]: radial basis x Y_l(direction).

  Radial Gaussians span the patch out to its corners (p / sqrt 2). The 'disk'
  window multiplies by a soft disk of radius p/2 (one pixel wide edge). Scaled so
  that a patch of ones gives features of order one whatever the patch size.
  """
  if window not in PATCH_WINDOWS:
    raise errors.UserError(
        f"config.model.patch_window={window!r}; expected one of {PATCH_WINDOWS}.")
  offsets = pixel_offsets(patch)
  radius = np.linalg.norm(offsets, axis=-1)
  with jax.ensure_compile_time_eval():  # A constant, even when called under jit.
    basis = np.asarray(e3nn.soft_one_hot_linspace(
        jnp.asarray(radius), start=0., end=patch / math.sqrt(2), number=num_radial,
        basis="gaussian", cutoff=False))
    harmonics = np.asarray(direction_harmonics(harmonic_irreps(lmax), offsets))
  if window == "disk":
    basis = basis * np.clip(patch / 2 + 0.5 - radius, 0., 1.)[:, None]
  return (basis[:, :, None] * harmonics[:, None, :] / patch).astype(np.float32)


# -- irreps helpers -----------------------------------------------------------------------


def is_plain_scalar(ir: e3nn.Irrep) -> bool:
  return ir.l == 0 and ir.p == 1


def chunks_of(x: e3nn.IrrepsArray) -> list[jax.Array]:
  """x's blocks as arrays [..., mul, 2l+1] (e3nn leaves known-zero blocks as None)."""
  return [jnp.zeros(x.shape[:-1] + (mul, ir.dim), x.dtype) if c is None else c
          for (mul, ir), c in zip(x.irreps, x.chunks)]


def invariants(x: e3nn.IrrepsArray) -> jax.Array:
  """[..., total multiplicity]: 0e scalars as they are, every other channel's norm."""
  parts = []
  for (_, ir), chunk in zip(x.irreps, chunks_of(x)):
    if is_plain_scalar(ir):
      parts.append(chunk[..., 0])
    else:  # sqrt(|v|^2 + eps) - sqrt(eps): smooth at v = 0, and 0 there.
      parts.append(jnp.sqrt(jnp.sum(chunk**2, -1) + _EPS) - math.sqrt(_EPS))
  return jnp.concatenate(parts, axis=-1)


def split_heads(x: e3nn.IrrepsArray, num_heads: int) -> jax.Array:
  """[..., D] -> [..., H, D/H]: head h takes the h-th slice of every block's channels.

  An orthogonal rearrangement of whole irreps, so per-head dot products stay invariant.
  """
  parts = []
  for (mul, ir), chunk in zip(x.irreps, chunks_of(x)):
    parts.append(chunk.reshape(chunk.shape[:-2] + (num_heads, mul // num_heads * ir.dim)))
  return jnp.concatenate(parts, axis=-1)


def merge_heads(x: jax.Array, irreps: e3nn.Irreps) -> list[jax.Array]:
  """Inverse of `split_heads` with a trailing axis: x [..., H, D/H, S] -> per block
  [..., mul, 2l+1, S]."""
  num_heads = x.shape[-3]
  blocks, start = [], 0
  for mul, ir in irreps:
    width = mul // num_heads * ir.dim
    block = x[..., start:start + width, :]  # [..., H, mul/H * d, S]
    start += width
    lead = block.shape[:-3]
    blocks.append(block.reshape(lead + (mul, ir.dim, block.shape[-1])))
  return blocks


# -- layers -------------------------------------------------------------------------------


class EquivariantLayerNorm(nn.Module):
  """Layer norm that commutes with rotations and reflections.

  0e scalars are centred (over the scalar channels); then every component, scalar
  or not, is divided by one RMS over the whole token (|x|^2 is invariant), and each
  channel gets a learned scale (0e channels also a bias; elsewhere a bias would
  pick a direction). One shared RMS, not one per l, matters: a token of empty sky
  has tiny l > 0 parts, and normalising those on their own would blow
  interpolation noise up to unit size.
  """

  @nn.compact
  def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
    chunks = chunks_of(x)
    scalar = [is_plain_scalar(ir) for _, ir in x.irreps]
    num_scalars = sum(mul for (mul, _), s in zip(x.irreps, scalar) if s)
    mean = sum(jnp.sum(c, axis=(-2, -1), keepdims=True)
               for c, s in zip(chunks, scalar) if s) / num_scalars
    chunks = [c - mean if s else c for c, s in zip(chunks, scalar)]
    mean_sq = sum(jnp.sum(c**2, axis=(-2, -1), keepdims=True) for c in chunks) / x.irreps.dim
    inv_rms = jax.lax.rsqrt(mean_sq + _EPS)
    out = []
    for i, ((mul, ir), chunk, s) in enumerate(zip(x.irreps, chunks, scalar)):
      y = chunk * inv_rms * self.param(f"scale_{i}_{ir}", nn.initializers.ones, (mul, 1),
                                       jnp.float32)
      if s:
        y = y + self.param(f"bias_{i}_{ir}", nn.initializers.zeros, (mul, 1), jnp.float32)
      out.append(y)
    return e3nn.from_chunks(x.irreps, out, x.shape[:-1], x.dtype)


class PatchEmbed(nn.Module):
  """Patches -> irreps features with a fixed steerable filter bank and a learned
  equivariant Linear (which, mixing the radial basis per l, learns radial profiles)."""
  irreps: e3nn.Irreps
  patch_size: int
  num_radial: int
  window: str

  @nn.compact
  def __call__(self, patches: jax.Array) -> e3nn.IrrepsArray:
    """patches [B, N, p*p, C] (row-major pixels) -> IrrepsArray [B, N, irreps]."""
    lmax = max(ir.l for _, ir in self.irreps)
    irreps_sh = harmonic_irreps(lmax)
    filters = jnp.asarray(patch_filters(self.patch_size, self.num_radial, lmax, self.window))
    responses = jnp.einsum("bnqc,qks->bncks", patches, filters)
    b, n, c, k, _ = responses.shape
    responses = responses.reshape(b, n, c * k, irreps_sh.dim)
    chunks = [responses[..., sl] for sl in irreps_sh.slices()]
    x = e3nn.from_chunks(e3nn.Irreps([(c * k, ir) for _, ir in irreps_sh]), chunks, (b, n),
                         jnp.float32)
    return e3nn.flax.Linear(self.irreps, biases=True, force_irreps_out=True, name="linear")(x)


def message_paths(irreps_in: e3nn.Irreps, irreps_sh: e3nn.Irreps, irreps_out: e3nn.Irreps):
  """(block index, sh index, output irrep) for every allowed v (x) Y -> out path."""
  wanted = {ir for _, ir in irreps_out}
  return [(i, s, ir_out)
          for i, (_, ir_in) in enumerate(irreps_in)
          for s, (_, ir_sh) in enumerate(irreps_sh)
          for ir_out in ir_in * ir_sh if ir_out in wanted]


@functools.lru_cache(maxsize=64)
def _block_coupling(ir_in: e3nn.Irrep, irreps_sh: e3nn.Irreps,
                    paths: tuple) -> np.ndarray:
  """[2 l_in + 1, sh.dim, sum of 2 l_out + 1]: every path of one input block side by
  side, so that the block needs one contraction instead of one per path."""
  sh_slices = irreps_sh.slices()
  columns = []
  for s, ir_out in paths:
    cg = np.zeros((ir_in.dim, irreps_sh.dim, ir_out.dim))
    cg[:, sh_slices[s]] = np.asarray(e3nn.clebsch_gordan(ir_in.l, irreps_sh[s].ir.l, ir_out.l))
    columns.append(cg * math.sqrt(ir_out.dim))
  return np.concatenate(columns, axis=-1).astype(np.float32)


def contract_messages(blocks: list[jax.Array], irreps_in: e3nn.Irreps,
                      irreps_sh: e3nn.Irreps, irreps_out: e3nn.Irreps) -> e3nn.IrrepsArray:
  """Clebsch-Gordan contraction of aggregated outer products.

  blocks[i]: [..., mul_i, 2 l_i + 1, sh.dim] = sum_j a_ij v_j^(i) Y(r_ij)^T. Each
  allowed path (l_in, l_sh -> l_out) gives mul_i channels of l_out, normalised
  like `e3nn.tensor_product(..., irrep_normalization='component')`; paths come in
  the order of `message_paths`.
  """
  paths = message_paths(irreps_in, irreps_sh, irreps_out)
  out_irreps, out_chunks = [], []
  for i, (mul, ir_in) in enumerate(irreps_in):
    mine = tuple((s, ir_out) for j, s, ir_out in paths if j == i)
    if not mine:
      continue
    coupling = jnp.asarray(_block_coupling(ir_in, irreps_sh, mine), blocks[i].dtype)
    out = jnp.einsum("...cmn,mnk->...ck", blocks[i], coupling)
    start = 0
    for _, ir_out in mine:
      out_chunks.append(out[..., start:start + ir_out.dim])
      out_irreps.append((mul, ir_out))
      start += ir_out.dim
  lead = blocks[0].shape[:-3]
  return e3nn.from_chunks(e3nn.Irreps(out_irreps), out_chunks, lead, blocks[0].dtype)


class EquivariantAttention(nn.Module):
  """Multi-head attention with invariant weights and tensor-product messages (see the
  module docstring)."""
  irreps: e3nn.Irreps
  geo_irreps: e3nn.Irreps
  num_heads: int
  num_radial: int
  sh_lmax: int
  max_distance: float

  def attention_weights(self, q, k, distance):
    """Softmax over j of (q_i . k_j) / sqrt(d) + radial bias(|r_ij|), [B, H, N, N]."""
    qh, kh = split_heads(q, self.num_heads), split_heads(k, self.num_heads)
    logits = jnp.einsum("bihd,bjhd->bhij", qh, kh) / math.sqrt(qh.shape[-1])
    basis = e3nn.soft_one_hot_linspace(distance, start=0., end=self.max_distance,
                                       number=self.num_radial, basis="gaussian", cutoff=False)
    # Zero-initialised, so attention starts content-only and learns its range.
    bias = nn.Dense(self.num_heads, use_bias=False, kernel_init=nn.initializers.zeros,
                    name="distance_bias")(basis)  # [B or 1, N, N, H]
    return jax.nn.softmax(logits + jnp.moveaxis(bias, -1, 1), axis=-1)

  def projections(self, x):
    """q, k, v (irreps) and u (geo_irreps) from one Linear, split: one matmul per l
    to compile instead of four."""
    parts = (self.irreps, self.irreps, self.irreps, self.geo_irreps)
    muls = {ir: [dict((i, m) for m, i in p).get(ir, 0) for p in parts]
            for ir in dict.fromkeys(ir for _, ir in self.irreps)}
    fused = e3nn.flax.Linear(e3nn.Irreps([(sum(m), ir) for ir, m in muls.items()]),
                             force_irreps_out=True, name="qkvu")(x)
    out = [[] for _ in parts]
    for (_, ir), chunk in zip(fused.irreps, chunks_of(fused)):
      start = 0
      for n, mul in enumerate(muls[ir]):
        if mul:
          out[n].append(chunk[..., start:start + mul, :])
        start += mul
    return [e3nn.from_chunks(p, c, x.shape[:-1], x.dtype) for p, c in zip(parts, out)]

  @nn.compact
  def __call__(self, x: e3nn.IrrepsArray, positions: jax.Array) -> e3nn.IrrepsArray:
    """x [B, N, irreps]; positions [B or 1, N, 3] (patch units)."""
    q, k, v, u = self.projections(x)
    relative = positions[:, None, :, :] - positions[:, :, None, :]  # r_ij = p_j - p_i
    _, distance = safe_unit(relative)
    attn = self.attention_weights(q, k, distance)

    # The Y_0 = 1 path: attention-weighted values at full width, as in any transformer.
    plain = jnp.einsum("bhij,bjhd->bihd", attn, split_heads(v, self.num_heads))
    plain = [b[..., 0] for b in merge_heads(plain[..., None], v.irreps)]
    # The l > 0 paths on the narrower u: sum_j a_ij u_j Y_l(r_ij)^T first (one batched
    # matmul), the Clebsch-Gordan contraction after: the same as summing N^2
    # tensor-product messages, without storing them.
    irreps_sh = harmonic_irreps(self.sh_lmax)[1:]
    harmonics = direction_harmonics(harmonic_irreps(self.sh_lmax), relative)[..., 1:]
    weights = attn[..., None] * harmonics[:, None]  # [B, H, N, N, S - 1]
    aggregated = jnp.einsum("bhijs,bjhd->bihds", weights, split_heads(u, self.num_heads))
    geometric = contract_messages(merge_heads(aggregated, u.irreps), u.irreps, irreps_sh,
                                  self.irreps)
    messages = e3nn.concatenate([e3nn.from_chunks(v.irreps, plain, x.shape[:-1], x.dtype),
                                 geometric])
    return e3nn.flax.Linear(self.irreps, force_irreps_out=True, name="out")(messages)


class EquivariantFeedForward(nn.Module):
  """Linear -> gate -> Linear, with the norms of l > 0 channels as extra scalar inputs."""
  irreps: e3nn.Irreps
  mlp_ratio: int

  @nn.compact
  def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
    nonscalar = x.filter(drop="0e")
    inputs = x
    if nonscalar.irreps.dim:
      norms = invariants(nonscalar)
      inputs = e3nn.concatenate([x, e3nn.IrrepsArray(f"{norms.shape[-1]}x0e", norms)])
    scalars = sum(mul for mul, ir in self.irreps if is_plain_scalar(ir)) * self.mlp_ratio
    others = [(mul * self.mlp_ratio, ir) for mul, ir in self.irreps if not is_plain_scalar(ir)]
    gates = sum(mul for mul, _ in others)
    hidden = e3nn.Irreps([(scalars + gates, "0e")] + others)
    h = e3nn.flax.Linear(hidden, biases=True, force_irreps_out=True, name="fc1")(inputs)
    h = e3nn.gate(h)
    return e3nn.flax.Linear(self.irreps, force_irreps_out=True, name="fc2")(h)


class Block(nn.Module):
  """Pre-norm transformer block on irreps features."""
  irreps: e3nn.Irreps
  geo_irreps: e3nn.Irreps
  num_heads: int
  mlp_ratio: int
  num_radial: int
  sh_lmax: int
  max_distance: float

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    # Plain arrays in and out, so that nn.remat can wrap the block.
    x = e3nn.IrrepsArray(self.irreps, x)
    y = EquivariantLayerNorm(name="norm1")(x)
    x = x + EquivariantAttention(self.irreps, self.geo_irreps, self.num_heads, self.num_radial,
                                 self.sh_lmax, self.max_distance, name="attn")(y, positions)
    y = EquivariantLayerNorm(name="norm2")(x)
    x = x + EquivariantFeedForward(self.irreps, self.mlp_ratio, name="mlp")(y)
    return x.array


def geometric_irreps(irreps: e3nn.Irreps, divisor: int, num_heads: int) -> e3nn.Irreps:
  """Each multiplicity / divisor, rounded up to a multiple of num_heads (the channels
  that take part in the l > 0 messages)."""
  if divisor < 1:
    raise errors.UserError(f"config.model.geo_divisor={divisor} must be a positive integer.")
  rounded = lambda mul: max(num_heads, -(-mul // divisor // num_heads) * num_heads)
  return e3nn.Irreps([(rounded(mul), ir) for mul, ir in irreps])


def patchify_pixels(images: jax.Array, patch: int) -> jax.Array:
  """[B, H, W, C] -> [B, N, p*p, C]: row-major tokens, row-major pixels in each."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch, c)


class Model(layers.PrecisionFields):
  """Equivariant transformer under the shared backbone interface (module docstring)."""
  variant: Optional[str] = "S/4"
  irreps: Optional[str] = None
  depth: Optional[int] = None
  num_heads: Optional[int] = None
  patch_size: Optional[int] = None
  mlp_ratio: int = 2
  num_radial: int = 6
  sh_lmax: int = 2
  geo_divisor: int = 4
  patch_window: str = "square"
  remat: bool = False

  def dims(self) -> dict[str, Any]:
    dims = vit.resolve_dims(self, "Equivariant model", parse_variant,
                            ("irreps", "depth", "num_heads", "patch_size"), "'S/4'")
    # Sorted and merged ('8x0e + 4x1o + 8x0e' -> '16x0e+4x1o'): one block per irrep.
    irreps = self._checked_irreps(dims["irreps"], dims["num_heads"])
    dims["irreps"], dims["width"] = str(irreps), irreps.dim
    return dims

  @staticmethod
  def _checked_irreps(irreps: str, num_heads: int) -> e3nn.Irreps:
    try:
      parsed = e3nn.Irreps(irreps).regroup()
    except (ValueError, AssertionError) as e:
      raise errors.UserError(f"config.model.irreps={irreps!r} is not an e3nn irreps string "
                             f"such as '64x0e + 32x1o + 16x2e': {e}") from None
    if not any(is_plain_scalar(ir) for _, ir in parsed):
      raise errors.UserError(f"config.model.irreps={irreps!r} has no 0e scalars; the attention "
                             f"logits and the pooled embedding need some.")
    bad = [f"{mul}x{ir}" for mul, ir in parsed if mul % num_heads]
    if bad:
      raise errors.UserError(f"config.model.irreps={irreps!r}: multiplicities {bad} are not "
                             f"divisible by num_heads={num_heads}.")
    return parsed

  @property
  def irreps_out(self) -> e3nn.Irreps:
    """Layout of out['tokens'] (last axis): `irreps` sorted by l, one block per irrep."""
    return e3nn.Irreps(self.dims()["irreps"])

  @property
  def embed_dim(self) -> int:
    return sum(mul for mul, _ in self.irreps_out)

  def token_grid(self, image_hw: Sequence[int]) -> tuple[int, int]:
    return vit.patch_grid(image_hw, self.dims()["patch_size"])

  @nn.compact
  def __call__(self, images, *, train: bool = False, keep: Optional[jax.Array] = None):
    del train  # No dropout or batch statistics.
    if images.ndim != 4:
      raise ValueError(f"Equivariant model expects images [B, H, W, C]; got {images.shape}.")
    d = self.dims()
    irreps = self.irreps_out
    geo_irreps = geometric_irreps(irreps, self.geo_divisor, d["num_heads"])
    grid = self.token_grid(images.shape[1:3])
    patches = patchify_pixels(images.astype(jnp.float32), d["patch_size"])
    positions = jnp.asarray(token_positions(grid))[None]  # [1, N, 3]
    if keep is not None:  # Kept tokens keep their true positions.
      patches = jnp.take_along_axis(patches, keep[:, :, None, None], axis=1)
      positions = jnp.take_along_axis(jnp.broadcast_to(positions, (keep.shape[0],) +
                                                       positions.shape[1:]),
                                      keep[..., None], axis=1)

    x = PatchEmbed(irreps, d["patch_size"], self.num_radial, self.patch_window,
                   name="patch_embed")(patches)
    block_cls = nn.remat(Block) if self.remat else Block
    max_distance = math.hypot(*grid)
    h = x.array
    for i in range(d["depth"]):
      h = block_cls(irreps, geo_irreps, d["num_heads"], self.mlp_ratio, self.num_radial, self.sh_lmax,
                    max_distance, name=f"block{i:02d}")(h, positions)
    tokens = EquivariantLayerNorm(name="norm")(e3nn.IrrepsArray(irreps, h))
    pooled = nn.LayerNorm(name="pool_norm")(jnp.mean(invariants(tokens), axis=1))
    dtype = self.precision.compute
    return {"tokens": tokens.array.astype(dtype), "pooled": pooled.astype(dtype)}
