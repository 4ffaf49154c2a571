r"""Masked-autoencoder pretraining of the rotation-equivariant transformer.

The backbone (`lensfm/models/equivariant.py`) turns each 4x4 patch into irreps
features ('128x0e + 64x1o + 32x2e' for 'S/4': scalars, vectors and rank-2 parts of
the image plane) and attends between patches with invariant weights and
tensor-product messages, so rotating a lens rotates its token features and leaves
its pooled embedding unchanged. MAE hides 75% of the patches; the encoder sees only
the visible ones (at their true positions) and the usual MAE decoder
(`lensfm/objectives/mae.py`, unchanged: a small ViT on the token arrays) predicts
the hidden pixels. The decoder is not equivariant, so the data keep the rot90/flip
augmentation for it. Data: simulated Model II-like lenses (recipe `model_ii`, 64x64)
made on the accelerator.

On a GPU/TPU:
  python -m lensfm.main --config=configs/mae_equivariant.py --workdir=workdirs/mae_equivariant
On a laptop CPU (tiny model, 32x32 images; ~1.5 min of CPU time, more wall time on a
busy machine):
  python -m lensfm.main --config=configs/mae_equivariant.py:runlocal --workdir=/tmp/lensfm_mae_eq
Other sizes: `:variant=Ti/4` or `:variant=B/4` (see equivariant.SIZES); then fine-tune
with configs/finetune_equivariant.py (same `variant`).

What it should reach: the `runlocal` run's masked-patch loss (per-patch normalised
pixels; 1.0 = predicting each patch's mean) falls well below 1 by step 300
(tests/test_equivariant_train.py checks that it falls); experiments/results/equivariant_*
has the CPU benchmark (supervised, from scratch).
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, variant="S/4", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "pretrain"
  c.seed = 0

  c.data = common.pretrain_data(augment="rot90,flip")

  c.model = common.equivariant_model(arg.variant, arg.runlocal)
  c.objective = dict(name="mae", mask_ratio=0.75, norm_pix_loss=True, decoder_width=256,
                     decoder_depth=4, decoder_heads=8, decoder_mlp_dim=1024)

  c.batch_size = 512
  c.total_steps = 100_000
  c.optim = common.adamw(1.5e-4, 5_000, b2=0.95, weight_decay=0.05, layer_decay=None)
  common.pretrain_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.data.image_size = 32
    c.data.recipe_overrides = {"num_pix": 32}
    c.objective.update(decoder_width=64, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=128)
    c.batch_size = 32
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
  return c
