r"""SimCLR pretraining of the rotation-equivariant transformer.

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

What it should reach: the `runlocal` run's loss falls below chance, log(2B-1) = 4.84,
and knn/knn_accuracy rises above chance (0.33).
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, variant="S/4", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "pretrain"
  c.seed = 0

  # No augmentation in the input: the objective makes its own views on device.
  c.data = common.pretrain_data(augment="")

  c.model = common.equivariant_model(arg.variant, arg.runlocal)
  c.objective = dict(
      name="simclr", temperature=0.1, proj_hidden_dim=2048, proj_dim=128, proj_layers=2,
      head_norm="layernorm",
      views=dict(augment="rotate,flip,shift,blur,noise,scale", normalize="none",
                 global_crop_scale=(0.8, 1.0), crop_jitter=0.03))

  c.batch_size = 1024
  c.total_steps = 100_000
  c.optim = common.adamw(1.5e-4, 5_000, weight_decay=0.1, layer_decay=None)

  c.evals = common.knn_eval("params/encoder")

  common.pretrain_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.data.image_size = 32
    c.data.recipe_overrides = {"num_pix": 32}
    c.objective.update(proj_hidden_dim=128, proj_dim=64)
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
    c.evals.knn.update(every=100, num_train_batches=8, num_val_batches=4)
  return c
