r"""Masked-autoencoder pretraining of ViT-B/8 on simulated Model II-like lenses (64x64).

Data are made on the accelerator by lensfm's simulator (recipe `model_ii`: Euclid-like,
classes no_sub / cdm / axion mixed), so nothing needs downloading.

On a GPU/TPU:
  python -m lensfm.main --config=configs/mae_vit_b.py --workdir=workdirs/mae_vit_b
On a laptop CPU (about a minute, tiny model):
  python -m lensfm.main --config=configs/mae_vit_b.py:runlocal --workdir=/tmp/lensfm_mae
Other sizes: `--config=configs/mae_vit_b.py:variant=S/8`; any field can be overridden,
e.g. `--config.batch_size=256 --config.mesh="(('data',-1),('fsdp',4))"`.

What it should reach: the `runlocal` run's masked-patch loss (per-patch normalised
pixels) falls from ~1.3 at step 20 to ~0.4 by step 300 (measured on 2 quiet CPU cores:
1.27 -> 0.37 in 25 s, install and compilation aside). The full ViT-B/8 run
costs 18.9 GFLOP per image per step (XLA's count, experiments/bench_train.py); its
accelerator throughput and final loss have not been measured yet.
"""
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, variant="B/8", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "pretrain"
  c.seed = 0

  c.data = dict(source="sim", recipe="model_ii", recipe_overrides={}, image_size=64, channels=1,
                normalize="zscore", augment="rot90,flip", prefetch=2)

  c.model = dict(name="vit", variant=arg.variant, pool="cls", dtype="bfloat16", remat=False)
  c.objective = dict(name="mae", mask_ratio=0.75, norm_pix_loss=True, decoder_width=512,
                     decoder_depth=8, decoder_heads=16, decoder_mlp_dim=2048)

  # Linear scaling: the peak lr is base_lr * batch_size / 256 (MAE's rule).
  c.batch_size = 1024
  c.total_steps = 100_000
  c.optim = dict(base_lr=1.5e-4, lr_batch_reference=256, min_lr=0., warmup_steps=5_000,
                 b1=0.9, b2=0.95, weight_decay=0.05, grad_clip_norm=1.0, layer_decay=None)

  # Pure data parallelism by default; raise `fsdp` to split parameters and optimizer
  # state when the model no longer fits one device (ViT-L/H).
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
    c.model = dict(name="vit", variant=None, width=64, depth=2, mlp_dim=128, num_heads=2,
                   patch_size=8, pool="cls", dtype="float32", remat=False)
    c.objective.update(decoder_width=64, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=128)
    c.batch_size = 32
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
    c.log_every = 20
    c.checkpoint_every = 100
    c.visualize_every = 100
  return c
