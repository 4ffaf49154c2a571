"""Super-resolution (x2, x4) with a pixel-shuffle decoder on the encoder's tokens.

Low-resolution images are made on device from each high-resolution batch: an optional
extra Gaussian blur (`lr_blur_sigma`, HR pixels) and then the mean over scale x scale
pixel blocks, which is what the same instrument with `scale` times larger pixels records
(the PSF stays the same on the sky, so no extra blur is the physically consistent
default). A batch that already holds 'image_lr' (paired LR/HR files) is used as it is.

Network (an ESPCN-style head, residual over bicubic):
  LR [B,h,w,C] -> encoder tokens [B, (h/p)(w/p), D] -> Dense -> p x p pixel shuffle ->
  LR-resolution features (+ the LR image) -> `decoder_depth` 3x3 convs -> conv to
  scale^2 * F channels -> scale x scale pixel shuffle -> HR features (+ bicubic(LR)) ->
  3x3 conv -> zero-initialised 3x3 conv -> residual added to bicubic(LR).
So the untrained network is exactly bicubic interpolation, and everything it learns is a
correction to it.

Units: the network sees the LR image z-score normalised per image (zero mean, unit
variance, as the encoder was pretrained; what a user's own LR file gets in predict
mode) and predicts in those units; predictions are mapped back
with the same affine map before the loss and the metrics, which are computed in the
units of the (normalised) HR batch. PSNR and SSIM use each HR image's own range
(max - min; 1 for min-max normalised data).

config.objective fields (defaults: `DEFAULTS`):
  name: 'superres'.
  scale: 2 or 4. config.data.image_size is the HR size; the encoder sees
    image_size / scale, which its patch size must divide.
  lr_blur_sigma: extra Gaussian blur before downsampling, HR pixels.
  lr_normalize: z-score normalise each LR image for the network.
  decoder_features (F), decoder_depth.
  loss: 'mse' (what PSNR measures) or 'l1'.
Metrics logged during training: psnr, psnr_bicubic (training batch).
Downstream interface (`base.DownstreamObjective`): `predict(params, extra, lr_images)` ->
{'sr': [B, H, W, C]}; `eval_outputs` -> per-example psnr, ssim, psnr_bicubic,
ssim_bicubic; `pictures` -> LR, bicubic, SR and HR images for the triptychs; predict
writes each SR image, in the units of its input LR file, to a file named in its CSV row.
"""
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lensfm.data import transforms
from lensfm import errors
from lensfm.objectives import base
from lensfm.objectives import classify
from lensfm.objectives import metrics
from lensfm.objectives import reports
from lensfm import utils

_EPS = 1e-12
DEFAULTS = dict(scale=2, lr_blur_sigma=0., lr_normalize=True, decoder_features=32,
                decoder_depth=2, loss="mse")


def pixel_shuffle(x, factor: int):
  """[B, h, w, f*f*F] -> [B, h*f, w*f, F] (depth to space, row-major sub-pixels)."""
  b, h, w, c = x.shape
  if c % (factor * factor):
    raise ValueError(f"pixel_shuffle: {c} channels are not divisible by {factor}^2.")
  f = c // (factor * factor)
  x = x.reshape(b, h, w, factor, factor, f).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * factor, w * factor, f)


def tokens_to_map(tokens, grid: tuple[int, int], patch: tuple[int, int], features: int):
  """[B, gh*gw, D] -> [B, gh*ph, gw*pw, F]: each token becomes its patch of features."""
  b = tokens.shape[0]
  gh, gw = grid
  ph, pw = patch
  x = nn.Dense(ph * pw * features, name="token_to_pixels")(tokens.astype(jnp.float32))
  x = x.reshape(b, gh, gw, ph, pw, features).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, gh * ph, gw * pw, features)


class Decoder(nn.Module):
  """Tokens of the LR image + the LR image -> an HR residual over bicubic."""
  scale: int
  grid: tuple[int, int]
  features: int = 32
  depth: int = 2

  @nn.compact
  def __call__(self, tokens, lr):
    _, h, w, c = lr.shape
    patch = (h // self.grid[0], w // self.grid[1])
    x = tokens_to_map(tokens, self.grid, patch, self.features)
    x = jnp.concatenate([x, lr], -1)
    for i in range(self.depth):
      x = nn.gelu(nn.Conv(self.features, (3, 3), name=f"lr_conv{i}")(x))
    x = pixel_shuffle(nn.Conv(self.scale**2 * self.features, (3, 3), name="to_hr")(x),
                      self.scale)
    up = metrics.bicubic_upsample(lr, self.scale)
    x = jnp.concatenate([x, up], -1)
    x = nn.gelu(nn.Conv(self.features, (3, 3), name="hr_conv")(x))
    residual = nn.Conv(c, (3, 3), kernel_init=nn.initializers.zeros, name="out")(x)
    return up + residual


class SuperResolver(nn.Module):
  encoder: nn.Module
  decoder: Decoder

  def __call__(self, lr, *, train: bool = False):
    tokens = self.encoder(lr, train=train)["tokens"]
    return self.decoder(tokens, lr)


def zscore_affine(images):
  """Per-image (mean, std) so that (x - mean) / std has zero mean and unit variance;
  shapes [B, 1, 1, 1]."""
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  return mean, jnp.maximum(images.std(axis=(1, 2, 3), keepdims=True), _EPS)


def image_range(images):
  """Per-image max - min, the data range PSNR and SSIM are measured against."""
  return jnp.maximum(images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)), _EPS)


class Objective(classify.DownstreamMixin, base.DownstreamObjective):
  """See the module docstring."""
  task = "superres"
  answers_suspicious_inputs = True  # The SR of a constant image is that constant.

  def __init__(self, config, model):
    super().__init__(config, model)
    self._init_downstream(config)
    cfg = utils.with_defaults(config.objective, DEFAULTS)
    self.scale = int(cfg.scale)
    self.paired_lr_factor = self.scale
    if self.scale not in (2, 4):
      raise errors.UserError(f"config.objective.scale={cfg.scale!r}; expected 2 or 4.")
    self.blur_sigma = float(cfg.lr_blur_sigma)
    self.lr_normalize = bool(cfg.lr_normalize)
    self.loss_type = cfg.loss
    if self.loss_type not in ("mse", "l1"):
      raise errors.UserError(f"config.objective.loss={self.loss_type!r}; expected 'mse' or 'l1'.")
    self.features = int(cfg.decoder_features)
    self.depth = int(cfg.decoder_depth)
    size = config.data.image_size
    if size % self.scale:
      raise errors.UserError(f"config.data.image_size={size} (the HR size) is not divisible by "
                             f"config.objective.scale={self.scale}.")
    model.token_grid((size // self.scale,) * 2)  # Fails clearly if the patch does not fit.

  def network(self, lr_shape) -> SuperResolver:
    grid = self.model.token_grid(lr_shape[1:3])
    return SuperResolver(self.model, Decoder(self.scale, tuple(grid), self.features, self.depth))

  # -- LR from HR ----------------------------------------------------------------------
  def downsample(self, hr):
    if self.blur_sigma > 0:
      hr = jax.vmap(lambda x: transforms.gaussian_blur(x, jnp.float32(self.blur_sigma)))(hr)
    return metrics.block_average(hr, self.scale)

  def low_resolution(self, batch):
    if "image_lr" in batch:
      return jnp.asarray(batch["image_lr"], jnp.float32)
    return self.downsample(jnp.asarray(batch["image"], jnp.float32))

  def super_resolve(self, params, lr, train=False):
    """SR of `lr` in the units of `lr` (the network runs on z-score normalised LR)."""
    if self.lr_normalize:
      lo, scale = zscore_affine(lr)
    else:
      lo, scale = jnp.zeros(()), jnp.ones(())
    out = self.network(lr.shape).apply({"params": params}, (lr - lo) / scale, train=train)
    return out.astype(jnp.float32) * scale + lo

  # -- objective -----------------------------------------------------------------------
  def init(self, rng, batch):
    lr = self.low_resolution(batch)
    return self.network(lr.shape).init(rng, lr)["params"], {}

  def loss(self, params, extra, batch, rng, step):
    del rng, step
    params, train = self.maybe_stop_encoder_gradient(params)
    hr = jnp.asarray(batch["image"], jnp.float32)
    lr = self.low_resolution(batch)
    sr = self.super_resolve(params, lr, train=train)
    err = sr - hr
    per_example = (jnp.abs(err) if self.loss_type == "l1" else jnp.square(err)).mean((1, 2, 3))
    mask = classify.batch_mask(batch)
    # Metrics without gradients: PSNR of the training batch, and bicubic's for reference.
    rng_ = image_range(hr)
    psnr = metrics.psnr(jax.lax.stop_gradient(sr), hr, rng_)
    psnr_bicubic = metrics.psnr(metrics.bicubic_upsample(lr, self.scale), hr, rng_)
    return classify.masked_mean(per_example, mask), (
        {"psnr": classify.masked_mean(psnr, mask),
         "psnr_bicubic": classify.masked_mean(psnr_bicubic, mask)}, extra)

  # -- downstream interface ------------------------------------------------------------
  def predict(self, params, extra, images):
    del extra
    return {"sr": self.super_resolve(params, jnp.asarray(images, jnp.float32))}

  def eval_outputs(self, params, extra, batch):
    del extra
    hr = jnp.asarray(batch["image"], jnp.float32)
    lr = self.low_resolution(batch)
    sr = self.super_resolve(params, lr)
    bicubic = metrics.bicubic_upsample(lr, self.scale)
    data_range = image_range(hr)
    return {"psnr": metrics.psnr(sr, hr, data_range),
            "ssim": metrics.ssim(sr, hr, data_range),
            "psnr_bicubic": metrics.psnr(bicubic, hr, data_range),
            "ssim_bicubic": metrics.ssim(bicubic, hr, data_range)}

  def pictures(self, params, extra, batch) -> dict[str, Any]:
    """LR (shown at HR size, nearest), bicubic, SR and HR images of a batch."""
    del extra
    hr = jnp.asarray(batch["image"], jnp.float32)
    lr = self.low_resolution(batch)
    nearest = jnp.repeat(jnp.repeat(lr, self.scale, axis=1), self.scale, axis=2)
    return {"LR": nearest, "bicubic": metrics.bicubic_upsample(lr, self.scale),
            "SR": self.super_resolve(params, lr), "HR": hr}

  def summarize(self, outputs):
    return reports.superres(outputs)

  def plots(self, result, details, pictures, path):
    del result, details
    return reports.superres_plots(pictures, path)

  def input_size(self, image_size: int) -> int:
    return image_size // self.scale  # predict takes LR images.

  def outputs_in_input_units(self, outputs, denormalize):
    return {**outputs, "sr": denormalize(outputs["sr"])}

  def output_columns(self) -> list[str]:
    return ["sr_file"]

  def output_rows(self, outputs, names, directory) -> list[list]:
    """Writes each SR image as <directory>/<name>_sr.npy; returns the CSV rows."""
    os.makedirs(directory, exist_ok=True)
    rows = []
    for name, image in zip(names, np.asarray(outputs["sr"])):
      path = os.path.join(directory, f"{name}_sr.npy")
      np.save(f"{path}.tmp.npy", image.astype(np.float32))
      os.replace(f"{path}.tmp.npy", path)  # A crash never leaves half an image there.
      rows.append([path])
    return rows
