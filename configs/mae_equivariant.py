r"""Masked-autoencoder pretraining of the rotation-equivariant transformer (issue 6).

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
pixels; 1.0 = predicting each patch's mean) fell from 1.33 (step 20) to 0.47 (step 300)
when measured on 2 CPU cores (45 s) (tests/test_equivariant_train.py checks that it falls). The full
run has not been measured on an accelerator; experiments/results/equivariant_* has the
CPU benchmark (supervised, from scratch).
"""
from lensfm.config_args import parse_arg
import ml_collections


def model_config(variant: str, runlocal: bool) -> dict:
  """config.model shared by the pretraining and fine-tuning configs (init_from needs
  them equal)."""
  if runlocal:
    return dict(name="equivariant", variant=None, irreps="16x0e + 8x1o + 4x2e", depth=2,
                num_heads=2, patch_size=4, mlp_ratio=2, num_radial=6, sh_lmax=2,
                geo_divisor=4, patch_window="square", dtype="float32", remat=False)
  return dict(name="equivariant", variant=variant, mlp_ratio=2, num_radial=6, sh_lmax=2,
              geo_divisor=4, patch_window="square", dtype="float32", remat=False)


def get_config(arg=None):
  arg = parse_arg(arg, variant="S/4", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "pretrain"
  c.seed = 0

  c.data = dict(source="sim", recipe="model_ii", recipe_overrides={}, image_size=64, channels=1,
                normalize="zscore", augment="rot90,flip", prefetch=2)

  c.model = model_config(arg.variant, arg.runlocal)
  c.objective = dict(name="mae", mask_ratio=0.75, norm_pix_loss=True, decoder_width=256,
                     decoder_depth=4, decoder_heads=8, decoder_mlp_dim=1024)

  c.batch_size = 512
  c.total_steps = 100_000
  c.optim = dict(base_lr=1.5e-4, lr_batch_reference=256, min_lr=0., warmup_steps=5_000,
                 b1=0.9, b2=0.95, weight_decay=0.05, grad_clip_norm=1.0, layer_decay=None)

  c.mesh = (("data", -1), ("fsdp", 1))
  c.sharding_rules = ((".*", "fsdp"),)

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
    c.objective.update(decoder_width=64, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=128)
    c.batch_size = 32
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
    c.log_every = 20
    c.checkpoint_every = 100
    c.visualize_every = 100
  return c
