r"""lensfm-small: the accelerator-sized lensfm-tiny (same recipe, ViT-S, Model II's grid).

configs/lensfm_tiny.py's recipe (same-lens SimCLR + simulation-supervised regression on
the instrument mixture) with ViT-S/8 (width 384, 12 blocks) on 64 x 64 px at 0.101"/px
(Model II's own grid, a 6.46" field), batch 256, sized so that one H100/H200 pretrains
it in about 4 minutes. The whole recipe -- pretraining, the encoder exported in files of
at most 16 MiB, LensBench `runlocal` on it -- is one command:
  bash experiments/accelerator_pretrain.sh OUT_DIR
which runs
  python -m lensfm.main --config=configs/lensfm_small.py --workdir=OUT_DIR/pretrain
On CPU, a tiny version of the same chain (what the tests and the script's CPU check run):
  python -m lensfm.main --config=configs/lensfm_small.py:runlocal --workdir=/tmp/lensfm_small

What it should reach: not yet run on an accelerator (none was available when it was
written); see lensfm/weights/tiny/MODEL_CARD.md for the CPU model's numbers.
"""
import os

from lensfm import config_args
from lensfm.config_args import parse_arg
import ml_collections

_TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lensfm_tiny.py")


def get_config(arg=None):
  arg = parse_arg(arg, objective="simclr", aux=1.0, steps=0, batch=0, runlocal=False)
  c = config_args.load(f"{_TINY}:objective={arg.objective},aux={arg.aux}"
                       + (",runlocal" if arg.runlocal else ""))
  if arg.runlocal:
    return _override_steps(c, arg)
  c.data.update(image_size=64, pixel_scale=0.101)
  c.model = dict(name="vit", variant="S/8", pool="cls", dtype="bfloat16", remat=False)
  if "proj_hidden_dim" in c.objective:
    c.objective.proj_hidden_dim = 2048
  c.batch_size = 256
  c.total_steps = 3_000
  c.optim.update(base_lr=1e-3, warmup_steps=200)
  c.evals.knn.update(every=1_000, num_train_batches=8, num_val_batches=4)
  c.log_every = 100
  c.checkpoint_every = 1_000
  c.keep_checkpoints = 4
  return _override_steps(c, arg)


def _override_steps(c: ml_collections.ConfigDict, arg) -> ml_collections.ConfigDict:
  if arg.steps:
    c.total_steps = arg.steps
  if arg.batch:
    c.batch_size = arg.batch
  return c
