"""Group pooling: the baseline that the equivariant transformer must beat.

A plain ViT (`lensfm/models/vit.py`, reused as is) is applied to every transformed
copy g.x of the input for g in a finite group of in-plane rotations/reflections, and
the pooled embeddings are averaged (or max-pooled) over the group:

  pooled(x) = mean_g ViT(g.x)['pooled']

This is invariant exactly when the group acts exactly on the pixel grid (C4: the
four 90-degree rotations; D4: those and their mirror images), because g.x runs
over the same set of images for x and for any h.x. C8 adds the 45-degree rotations,
which need interpolation (`lensfm.data.transforms.affine_resample`, bilinear,
reflecting border), so it is invariant to 90-degree turns and only approximately to
45-degree ones. It costs |G| forward passes (4, 8 or 8) per image.

Tokens: for C4 and D4 each copy's tokens are mapped back to the input's token grid
(a 90-degree turn or mirror of the image permutes its patches) and averaged over the
group, so 'tokens' [B, N, D] lives on the input's grid and permutes with it. `keep`
(MAE token dropping) is mapped the same way into every copy, so each copy sees the
same visible patches. For C8 the 45-degree copies have no patch grid in common with
the input: 'tokens' average the four exact rotations only, and `keep` is refused
(those copies would see the hidden patches).

config.model fields (name='group_pooled'):
  group:  'C4' | 'C8' | 'D4'.
  reduce: 'mean' (default) | 'max' over the group, for 'pooled'.
  every other field is the wrapped ViT's (`vit.Fields`: variant, width, depth, mlp_dim,
  num_heads, patch_size, pool, dtype and the other precision fields, remat, attention_impl).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lensfm.data import transforms
from lensfm import errors
from lensfm.models import vit

GROUPS = ("C4", "C8", "D4")
REDUCTIONS = ("mean", "max")


def grid_elements(group: str) -> list[tuple[int, bool]]:
  """The transformations that act exactly on the pixel grid, as (quarter turns, mirror
  first) pairs, the identity first."""
  if group not in GROUPS:
    raise errors.UserError(f"config.model.group={group!r}; expected one of {GROUPS}.")
  rotations = [(k, False) for k in range(4)]
  if group == "D4":
    return rotations + [(k, True) for k in range(4)]
  return rotations


def apply_element(x, element: tuple[int, bool]):
  """Applies (k, mirror) to [..., H, W, C]: a left-right mirror if asked, then k
  counter-clockwise quarter turns. Works on numpy and jax arrays alike."""
  k, mirror = element
  xp = np if isinstance(x, np.ndarray) else jnp
  if mirror:
    x = x[..., :, ::-1, :]
  return xp.rot90(x, k, axes=(-3, -2))


def rotate_45(images: jax.Array) -> jax.Array:
  """[B, H, W, C] turned 45 degrees counter-clockwise by the data pipeline's resampler."""
  turn = lambda image: transforms.affine_resample(image, jnp.float32(math.pi / 4),
                                                  jnp.zeros((2,), jnp.float32))
  return jax.vmap(turn)(images)


def token_permutations(group: str, grid: Sequence[int]) -> np.ndarray:
  """[G, N]: perm[g, t] = the position in copy g's token grid of the input's token t.

  The image transformation applied to the grid of token indices says which input
  token each copy's position holds; inverting that gives where each input token went.
  """
  gh, gw = grid
  index = np.arange(gh * gw).reshape(gh, gw, 1)
  perms = []
  for element in grid_elements(group):
    holds = apply_element(index, element).reshape(-1)  # copy position -> input token
    perms.append(np.argsort(holds))
  return np.stack(perms).astype(np.int32)


class Model(vit.Fields):
  """Group-pooled ViT under the shared backbone interface (see the module docstring)."""
  variant: Optional[str] = "S/8"
  group: str = "C4"
  reduce: str = "mean"

  def _vit(self, **kw) -> vit.Model:
    shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(vit.Fields)
              if f.name not in ("parent", "name")}
    return vit.Model(**shared, **kw)

  @property
  def group_size(self) -> int:
    return len(grid_elements(self.group)) * (2 if self.group == "C8" else 1)

  @nn.compact
  def __call__(self, images, *, train: bool = False, keep: Optional[jax.Array] = None):
    if self.reduce not in REDUCTIONS:
      raise errors.UserError(f"config.model.reduce={self.reduce!r}; expected one of {REDUCTIONS}.")
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
      raise ValueError(f"group_pooled needs square images [B, H, H, C] (rotations must map "
                       f"the image onto itself); got shape {images.shape}.")
    elements = grid_elements(self.group)
    if keep is not None and self.group == "C8":
      raise ValueError("group_pooled with group='C8' cannot drop tokens (keep=...): its "
                       "45-degree copies share no patch grid with the input, so they would "
                       "see the hidden patches. Use group='C4' or 'D4' for MAE.")
    b, g = images.shape[0], len(elements)
    grid = self.token_grid(images.shape[1:3])
    perms = jnp.asarray(token_permutations(self.group, grid))  # [G, N]
    # C8 = the exact quarter turns of the input and of its 45-degree turn (one
    # interpolation per image, not one per copy).
    sources = [images] + ([rotate_45(images)] if self.group == "C8" else [])
    copies = jnp.concatenate([apply_element(s, e) for s in sources for e in elements], axis=0)
    copy_keep = None
    if keep is not None:  # Input token t sits at position perms[i, t] of copy i.
      copy_keep = jnp.concatenate([perms[i][keep] for i in range(g)], axis=0)

    # One ViT (one set of weights) over all copies, as a single batch.
    out = self._vit(name="vit")(copies, train=train, keep=copy_keep)
    pooled = out["pooled"].reshape(len(sources) * g, b, -1)
    tokens = out["tokens"][:g * b].reshape((g, b) + out["tokens"].shape[1:])
    if keep is None:  # Put each copy's tokens back on the input's grid.
      tokens = jnp.stack([tokens[i][:, perms[i]] for i in range(g)])
    # With keep, copy i's k-th token already is input token keep[:, k].
    tokens = tokens.mean(axis=0)
    pooled = pooled.mean(axis=0) if self.reduce == "mean" else pooled.max(axis=0)
    return {"tokens": tokens, "pooled": pooled}
