"""The equivariant configs: the runlocal MAE config trains (its loss falls) on CPU, and
the SimCLR and fine-tuning configs build trainers around the same backbone."""
import os

import jax
import numpy as np

from lensfm import config_args
from lensfm.train import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name: str):
  return config_args.load(os.path.join(ROOT, "configs", name))


def lens_batch(trainer, n: int, size: int = 32, seed: int = 0):
  """Fixed min-max normalised rings around a central galaxy (the MAE target needs
  structure to learn; uniform noise has none)."""
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[:size, :size] - (size - 1) / 2
  images = []
  for _ in range(n):
    cx, cy, radius, q = rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(5, 10), rng.uniform(0.6, 1)
    r = np.sqrt(q * (cols - cx)**2 + (rows - cy)**2 / q)
    image = np.exp(-0.5 * ((r - radius) / 1.5)**2) + np.exp(-0.5 * (cols**2 + rows**2) / 6.)
    image += 0.05 * rng.standard_normal(image.shape)
    images.append((image - image.min()) / (image.max() - image.min()))
  images = np.asarray(images, np.float32)[..., None]
  return {"image": jax.device_put(images, trainer.data_sharding),
          "label": jax.device_put(np.zeros(n, np.int32), trainer.data_sharding)}


def test_runlocal_mae_loss_decreases():
  c = load("mae_equivariant.py:runlocal")
  assert c.model.name == "equivariant" and c.data.image_size == 32
  # One block and one device: the compilation is most of this test's time, and the
  # sharded step is tested elsewhere (tests/test_train_step.py).
  c.model.depth = 1
  c.batch_size = 16
  c.mesh = (("data", 1), ("fsdp", 1))
  c.optim.update(base_lr=3e-3, warmup_steps=5)
  trainer = trainer_lib.Trainer(c, "/tmp/unused", devices=jax.devices()[:1])
  state = trainer.init_state()
  step = trainer.compile_step()
  batch = lens_batch(trainer, c.batch_size)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)), losses
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_simclr_and_finetune_configs_share_the_backbone():
  mae = load("mae_equivariant.py:runlocal")
  for name in ("simclr_equivariant.py:runlocal", "finetune_equivariant.py:runlocal",
               "finetune_equivariant.py:runlocal,mode=linear"):
    c = load(name)
    # init_from compares config.model field by field, so they must be equal.
    assert c.model.to_dict() == mae.model.to_dict(), name
    trainer = trainer_lib.Trainer(c, "/tmp/unused")  # Builds objective, optimizer, shapes.
    assert "encoder" in trainer.abstract_state["params"]
  full = [load(f"{n}.py").model.to_dict() for n in
          ("mae_equivariant", "simclr_equivariant", "finetune_equivariant")]
  assert full[0] == full[1] == full[2] and full[0]["variant"] == "S/4"
  assert load("finetune_equivariant.py:runlocal,mode=linear").optim.freeze == "^encoder/"
