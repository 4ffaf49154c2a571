r"""lensfm-small: lensfm-tiny's recipe at accelerator scale (a 6.3 M-parameter ViT, 64 px).

configs/lensfm_tiny.py's recipe (same-lens SimCLR + simulation-supervised regression on
the instrument mixture), unchanged, on a wider and deeper ViT (width 256, 8 blocks, 8 x 8
px patches on 64 x 64 px at 0.101"/px: Model II's own grid, a 6.46" field; 24 MiB of
float32 weights, under the 25 MB a released checkpoint may take) and 14x the lenses
lensfm-tiny saw (batch 512 lenses, 4,000 steps: 2 M lenses, 4 M observations). One
H100/H200 pretrains it in about 4 minutes. The whole recipe -- pretraining, the encoder
exported in files of at most 16 MiB, LensBench rows on it -- is one command:
  bash experiments/tools/accelerator_pretrain.sh OUT_DIR
which runs
  python -m lensfm.main --config=configs/lensfm_small.py --workdir=OUT_DIR/pretrain
On CPU, a tiny version of the same chain (what the tests and the script's CPU check run):
  python -m lensfm.main --config=configs/lensfm_small.py:runlocal --workdir=/tmp/lensfm_small

What it reached is in lensfm/weights/small/MODEL_CARD.md (when shipped) and
experiments/results/; lensfm/weights/tiny/MODEL_CARD.md has the CPU model's numbers.
"""
import os

from lensfm import config_args
from lensfm.config_args import parse_arg
import ml_collections

_TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lensfm_tiny.py")


def small_vit() -> dict:
  """The lensfm-small backbone: ViT, width 256, 8 blocks, 8 px patches (8 x 8 tokens)."""
  return dict(name="vit", variant=None, width=256, depth=8, mlp_dim=1024, num_heads=8,
              patch_size=8, pool="cls", dtype="bfloat16", remat=False)


def get_config(arg=None):
  arg = parse_arg(arg, objective="simclr", aux=1.0, steps=0, batch=0, runlocal=False)
  c = config_args.load(f"{_TINY}:objective={arg.objective},aux={arg.aux}"
                       + (",runlocal" if arg.runlocal else ""))
  if arg.runlocal:
    return _override_steps(c, arg)
  c.data.update(image_size=64, pixel_scale=0.101)
  c.model = small_vit()
  if "proj_hidden_dim" in c.objective:
    c.objective.proj_hidden_dim = 1024
  c.batch_size = 512
  c.total_steps = 4_000
  # Peak 1e-3 at batch 512 (linear scaling from 5e-4 at 256).
  c.optim.update(base_lr=5e-4, warmup_steps=300)
  c.evals.knn.update(every=1_000, num_train_batches=8, num_val_batches=4)
  c.log_every = 100
  c.checkpoint_every = 1_000
  c.keep_checkpoints = 8
  return _override_steps(c, arg)


def _override_steps(c: ml_collections.ConfigDict, arg) -> ml_collections.ConfigDict:
  if arg.steps:
    c.total_steps = arg.steps
  if arg.batch:
    c.batch_size = arg.batch
  return c
