"""lensfm's MAE train step compiled for one device and run on one fixed batch: what
vs_torch, build and profile_step time (a shared module, not a script)."""
import time

import jax
import numpy as np

from configs import mae_vit_b
from lensfm.train import trainer as trainer_lib


def mae_config(variant, dtype, batch, image_size, dec_width, dec_depth):
  """configs/mae_vit_b.py at ViT `variant` with a decoder dec_width wide, dec_depth deep."""
  c = mae_vit_b.get_config(f"variant={variant}")
  c.model.dtype = dtype
  c.batch_size = batch
  c.data.image_size = image_size
  c.objective.update(decoder_width=dec_width, decoder_depth=dec_depth,
                     decoder_heads=max(1, dec_width // 64), decoder_mlp_dim=4 * dec_width)
  c.mesh = (("data", 1), ("fsdp", 1))
  c.total_steps = 1000
  c.progress_bar = False
  return c


class LensfmStep:
  """The trainer's jitted, donated step, compiled for `images_nhwc`; call it to run one."""

  def __init__(self, config, images_nhwc):
    devices = jax.devices()[:1]
    self.trainer = trainer_lib.Trainer(config, "/tmp/lensfm_bench_fixed_step", devices=devices)
    self.state = self.trainer.init_state()
    self.batch = {"image": jax.device_put(images_nhwc, self.trainer.data_sharding),
                  "label": jax.device_put(np.zeros(len(images_nhwc), np.int32),
                                          self.trainer.data_sharding)}
    self.step_fn = self.trainer.compile_step()
    t0 = time.perf_counter()
    self.compiled = self.step_fn.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.metrics = None

  def __call__(self):
    self.state, self.metrics = self.compiled(self.state, self.batch)

  def sync(self):
    return float(jax.device_get(self.metrics["loss"]))


def time_steps(step, n):
  """(seconds per step, last loss) of n calls of `step` after one warm-up call."""
  step()
  step.sync()
  t0 = time.perf_counter()
  for _ in range(n):
    step()
  loss = step.sync()
  return (time.perf_counter() - t0) / n, loss
