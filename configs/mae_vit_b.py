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
pixels) falls from ~1.3 at step 20 to ~0.4 by step 300; the full run's throughput is
measured by experiments/benchmarks/train.py (experiments/results/train_*).
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, variant="B/8", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "pretrain"
  c.seed = 0

  c.data = common.pretrain_data(augment="rot90,flip")

  c.model = dict(name="vit", variant=arg.variant, pool="cls", dtype="bfloat16", remat=False)
  c.objective = dict(name="mae", mask_ratio=0.75, norm_pix_loss=True, decoder_width=512,
                     decoder_depth=8, decoder_heads=16, decoder_mlp_dim=2048)

  # Linear scaling: the peak lr is base_lr * batch_size / 256 (MAE's rule).
  c.batch_size = 1024
  c.total_steps = 100_000
  c.optim = common.adamw(1.5e-4, 5_000, b2=0.95, weight_decay=0.05, layer_decay=None)
  common.pretrain_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.model = dict(name="vit", variant=None, width=64, depth=2, mlp_dim=128, num_heads=2,
                   patch_size=8, pool="cls", dtype="float32", remat=False)
    c.objective.update(decoder_width=64, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=128)
    c.batch_size = 32
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
  return c
