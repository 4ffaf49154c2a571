r"""SimCLR pretraining of the rotation-equivariant transformer (issue 6).

The pooled embedding of `lensfm/models/equivariant.py` is invariant to 90-degree
turns and mirrors exactly and to other angles approximately, so the views' rotations
and flips cost the contrastive task almost nothing; what it learns comes from the
other lensing-aware augmentations (centred crops, sub-pixel shifts, PSF blur,
re-drawn noise, intensity scaling; see lensfm/objectives/views.py). The views keep
'rotate,flip' anyway: they cover the part of arbitrary-angle invariance that the
pixel grid breaks. Data: simulated Model II-like lenses (recipe `model_ii`, 64x64).

On a GPU/TPU:
  python -m lensfm.main --config=configs/simclr_equivariant.py --workdir=workdirs/simclr_eq
On a laptop CPU (tiny model, 32x32 images; about 2 minutes on 2 cores):
  python -m lensfm.main --config=configs/simclr_equivariant.py:runlocal --workdir=/tmp/lensfm_simclr_eq
Then fine-tune with configs/finetune_equivariant.py (same `variant`).

Monitoring as in configs/simclr_vit_b.py: contrastive_accuracy, embedding_std (collapse
indicator), and evals.knn (20-NN accuracy on fresh validation lenses).

What it should reach: measured on 2 CPU cores (125 s), the `runlocal` run's loss fell
from 4.72 (step 20) to 3.54 at step 300 (chance log(2B-1) = 4.84), contrastive_accuracy
reached 0.13 (chance 1/127 = 0.008) and knn/knn_accuracy was 0.52 / 0.51 / 0.50 at
steps 100 / 200 / 300 (chance 0.33).
Not measured on an accelerator yet.
"""
import importlib.util
import os

from lensfm.config_args import parse_arg
import ml_collections


def _mae_equivariant():
  """configs/mae_equivariant.py, for the one model definition all three configs share."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mae_equivariant.py")
  spec = importlib.util.spec_from_file_location("mae_equivariant", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  arg = parse_arg(arg, variant="S/4", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "pretrain"
  c.seed = 0

  # No augmentation in the input: the objective makes its own views on device.
  c.data = dict(source="sim", recipe="model_ii", recipe_overrides={}, image_size=64, channels=1,
                normalize="zscore", augment="", prefetch=2)

  c.model = _mae_equivariant().model_config(arg.variant, arg.runlocal)
  c.objective = dict(
      name="simclr", temperature=0.1, proj_hidden_dim=2048, proj_dim=128, proj_layers=2,
      head_norm="layernorm",
      views=dict(augment="rotate,flip,shift,blur,noise,scale", normalize="none",
                 global_crop_scale=(0.8, 1.0), crop_jitter=0.03))

  c.batch_size = 1024
  c.total_steps = 100_000
  c.optim = dict(base_lr=1.5e-4, lr_batch_reference=256, min_lr=0., warmup_steps=5_000,
                 b1=0.9, b2=0.999, weight_decay=0.1, grad_clip_norm=1.0, layer_decay=None)

  c.mesh = (("data", -1), ("fsdp", 1))
  c.sharding_rules = ((".*", "fsdp"),)

  c.evals = dict(knn=dict(type="knn", every=2_000, k=20, temperature=0.07,
                          num_train_batches=8, num_val_batches=4, features="params/encoder"))

  c.log_every = 50
  c.checkpoint_every = 2_000
  c.keep_checkpoints = 3
  c.visualize_every = 2_000
  c.nonfinite = "error"
  c.progress_bar = True
  c.watchdog_seconds = 1800  # No step boundary for this long: say where, exit non-zero (0 = off).

  if arg.runlocal:
    c.data.image_size = 32
    c.data.recipe_overrides = {"num_pix": 32}
    c.objective.update(proj_hidden_dim=128, proj_dim=64)
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
    c.evals.knn.update(every=100, num_train_batches=8, num_val_batches=4)
    c.log_every = 20
    c.checkpoint_every = 100
    c.visualize_every = 100
  return c
