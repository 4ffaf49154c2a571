"""Masked autoencoding (He et al. 2021) for any token-dropping backbone.

Per image, a random `mask_ratio` of the patches is hidden; the encoder sees only the
visible ones (so pretraining costs ~1/4 of a full forward pass at ratio 0.75); a light
decoder fills the hidden positions with a learned mask token and predicts their pixels.
The loss is the mean squared error over hidden patches only, on per-patch normalised
pixels by default (`norm_pix_loss`), which sharpens the faint arcs that a raw-pixel
loss would drown under the bright lens galaxy.

config.objective fields (defaults: `DEFAULTS`): name='mae', mask_ratio, decoder_width,
decoder_depth, decoder_heads, decoder_mlp_dim, norm_pix_loss.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lensfm import errors
from lensfm import utils
from lensfm.models import layers
from lensfm.models import vit
from lensfm.objectives import base
from lensfm.objectives import pictures

DEFAULTS = dict(mask_ratio=0.75, norm_pix_loss=True, decoder_width=512, decoder_depth=8,
                decoder_mlp_dim=2048, decoder_heads=16)

patchify = vit.patchify


def unpatchify(patches: jax.Array, patch: int, grid: tuple[int, int], channels: int):
  """Inverse of `patchify`."""
  b = patches.shape[0]
  gh, gw = grid
  x = patches.reshape(b, gh, gw, patch, patch, channels)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * patch, gw * patch, channels)


def num_kept(num_tokens: int, mask_ratio: float) -> int:
  if not 0. <= mask_ratio < 1.:
    raise errors.UserError(f"config.objective.mask_ratio={mask_ratio} must be in [0, 1).")
  return max(1, int(round(num_tokens * (1. - mask_ratio))))


def random_masking(rng, batch_size: int, num_tokens: int, mask_ratio: float):
  """Per-image random masks of static size.

  Returns:
    keep: [B, K] int32 indices of visible tokens (K = num_kept(...), same for all images).
    restore: [B, N] int32 permutation that puts [visible, hidden] back in grid order.
    mask: [B, N] float32, 1 where the token is hidden.
  """
  k = num_kept(num_tokens, mask_ratio)
  noise = jax.random.uniform(rng, (batch_size, num_tokens))
  shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)
  restore = jnp.argsort(shuffle, axis=1).astype(jnp.int32)
  mask = jnp.concatenate([jnp.zeros((batch_size, k)), jnp.ones((batch_size, num_tokens - k))], 1)
  return shuffle[:, :k], restore, jnp.take_along_axis(mask, restore, axis=1)


def normalize_patches(patches: jax.Array, eps: float = 1e-6) -> jax.Array:
  mean = patches.mean(axis=-1, keepdims=True)
  var = patches.var(axis=-1, keepdims=True)
  return (patches - mean) / jnp.sqrt(var + eps)


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean squared error averaged over hidden tokens only (mask == 1)."""
  per_token = jnp.mean(jnp.square(pred - target), axis=-1)
  return jnp.sum(per_token * mask) / jnp.maximum(jnp.sum(mask), 1.)


class Decoder(nn.Module):
  """Maps visible-token features back to pixels of every patch."""
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  patch_dim: int
  grid: tuple[int, int]
  precision: layers.Precision = layers.Precision()

  @nn.compact
  def __call__(self, tokens, restore):
    b, k, _ = tokens.shape
    n = restore.shape[1]
    x = layers.Dense(self.width, precision=self.precision, name="embed")(tokens)
    mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
    x = jnp.concatenate([x, jnp.broadcast_to(mask_token, (b, n - k, self.width)).astype(x.dtype)], 1)
    x = jnp.take_along_axis(x, restore[..., None], axis=1)
    x = x + vit.sincos_2d(*self.grid, self.width).astype(x.dtype)[None]
    x = vit.Encoder(self.depth, self.mlp_dim, self.num_heads, self.precision, name="blocks")(x)
    # Pixels are predicted in float32 whatever the backbone computes in.
    pixels = layers.Precision(weight_grad_transpose=self.precision.weight_grad_transpose)
    return layers.Dense(self.patch_dim, precision=pixels, name="pred")(x)


class MaskedAutoencoder(nn.Module):
  encoder: nn.Module
  decoder: Decoder

  def __call__(self, images, keep, restore):
    tokens = self.encoder(images, train=True, keep=keep)["tokens"]
    return self.decoder(tokens, restore)


class Objective(base.Objective):
  """See the module docstring."""

  def __init__(self, config, model):
    super().__init__(config, model)
    cfg = utils.with_defaults(config.objective, DEFAULTS)
    self.mask_ratio = cfg.mask_ratio
    self.norm_pix_loss = cfg.norm_pix_loss
    if not callable(getattr(model, "dims", None)):
      raise ValueError(f"MAE needs a backbone that drops tokens and reports its patch size "
                       f"(e.g. 'vit', 'hybrid', 'equivariant'); got {type(model).__module__}.")
    self.patch = model.dims()["patch_size"]
    self._decoder_dims = dict(width=cfg.decoder_width, depth=cfg.decoder_depth,
                              mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads)
    num_kept(1, self.mask_ratio)  # Validates the ratio at start-up, not inside jit.

  def decoder_precision(self) -> layers.Precision:
    """The backbone's (`layers.PrecisionFields`), else float32 or its `dtype`."""
    if isinstance(self.model, layers.PrecisionFields):
      return self.model.precision
    return layers.Precision(getattr(self.model, "dtype", None))

  def _network(self, images) -> MaskedAutoencoder:
    grid = self.model.token_grid(images.shape[1:3])
    decoder = Decoder(**self._decoder_dims, patch_dim=self.patch**2 * images.shape[-1],
                      grid=grid, precision=self.decoder_precision())
    return MaskedAutoencoder(self.model, decoder)

  def _forward(self, params, images, rng):
    net = self._network(images)
    grid = self.model.token_grid(images.shape[1:3])
    keep, restore, mask = random_masking(rng, images.shape[0], grid[0] * grid[1], self.mask_ratio)
    pred = net.apply({"params": params}, images, keep, restore)
    return pred, mask

  def target(self, images):
    patches = patchify(images.astype(jnp.float32), self.patch)
    return normalize_patches(patches) if self.norm_pix_loss else patches

  def init(self, rng, batch):
    images = batch["image"]
    grid = self.model.token_grid(images.shape[1:3])
    keep, restore, _ = random_masking(rng, images.shape[0], grid[0] * grid[1], self.mask_ratio)
    params = self._network(images).init(rng, images, keep, restore)["params"]
    return params, {}

  def loss(self, params, extra, batch, rng, step):
    del step
    images = batch["image"]
    pred, mask = self._forward(params, images, rng)
    loss = masked_mse(pred, self.target(images), mask)
    return loss, ({"mask_fraction": mask.mean()}, extra)

  def reconstruct(self, params, images, rng):
    """(masked input, reconstruction, hidden [B, H, W] bool) in image space, for pictures."""
    pred, mask = self._forward(params, images, rng)
    patches = patchify(images.astype(jnp.float32), self.patch)
    if self.norm_pix_loss:  # Undo the per-patch normalisation with the true statistics.
      pred = pred * jnp.sqrt(patches.var(-1, keepdims=True) + 1e-6) + patches.mean(-1, keepdims=True)
    grid = self.model.token_grid(images.shape[1:3])
    c = images.shape[-1]
    visible = unpatchify(patches * (1. - mask[..., None]), self.patch, grid, c)
    # As in the MAE paper's figures: visible patches shown as they were, hidden ones predicted.
    recon = unpatchify(jnp.where(mask[..., None] > 0, pred, patches), self.patch, grid, c)
    hidden = unpatchify(jnp.broadcast_to(mask[..., None], patches.shape), self.patch, grid, c)
    return visible, recon, hidden[..., 0] > 0

  def visualize(self, params, extra, batch, rng, path):
    images = batch["image"]
    visible, recon, hidden = jax.device_get(jax.jit(self.reconstruct)(params, images, rng))
    if jax.process_index() != 0:
      return
    images = np.asarray(jax.device_get(images), np.float32)
    # Hidden patches hatched grey, and each lens on its input's colour scale in every row,
    # so what the encoder saw and what the decoder made compare at a glance.
    pictures.save_image_rows(
        {"input": images, "visible (masked)": np.asarray(visible), "reconstruction": np.asarray(recon)},
        path, masks={"visible (masked)": np.asarray(hidden)}, scale_from="input")
