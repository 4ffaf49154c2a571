r"""Regression of physical parameters (default: log10 axion mass) from a pretrained encoder.

Data: simulated Model II-like axion lenses (recipe `model_ii` with classes=('axion',), so
every example carries an axion mass; 64x64, made on the accelerator). Other targets:
`:targets=theta_e+sub_mass_fraction,recipe=randomized` (Model II's Einstein radius is a
constant; the 'randomized' recipe varies every parameter). A target that does not apply
to an example (e.g. the axion mass of a CDM lens, with `--config.data.recipe_overrides`
left at all classes) is masked out of loss and metrics.

Fine-tune a pretraining run (configs/mae_vit_b.py) on a GPU/TPU:
  python -m lensfm.main --config=configs/finetune_regress.py \
      --config.init_from=workdirs/mae_vit_b --workdir=workdirs/axion_ft
Modes `:mode=finetune|linear|scratch|resnet` (see configs/common.py); the
ResNet-18 baseline is `:mode=resnet`.
On a laptop CPU (a minute or two, 32x32 images; needs configs/mae_vit_b.py:runlocal first):
  python -m lensfm.main --config=configs/finetune_regress.py:runlocal \
      --config.init_from=/tmp/lensfm_mae --workdir=/tmp/lensfm_axion
Evaluate (summary.json with mae_/rmse_/r2_<target>, and prediction-vs-truth scatter PNGs):
  python -m lensfm.main --config=configs/evaluate.py --config.checkpoint=/tmp/lensfm_axion \
      --workdir=/tmp/lensfm_axion_eval

What it should reach (accelerator scale): axion-mass MAE <= 0.015 dex
(ResNet-18 reference: 0.021). Not yet measured on an accelerator; see
experiments/results/downstream_* for the CPU-scale runs.
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, variant="B/8", runlocal=False, mode="finetune",
                  targets="log10_axion_mass", recipe="model_ii")
  targets = tuple(t for t in arg.targets.split("+") if t)
  c = ml_collections.ConfigDict()
  c.task = "finetune"
  c.seed = 0
  c.init_from = ""

  overrides = {"classes": ("axion",)} if targets == ("log10_axion_mass",) else {}
  c.data = common.sim_data(arg.recipe, runlocal=arg.runlocal, **overrides)
  c.model = dict(name="vit", variant=arg.variant, pool="cls", dtype="bfloat16", remat=False)
  # target_stats: {target: (mean, std)}; empty = the simulator's prior or estimated.
  c.objective = dict(name="regress", targets=targets, target_stats={}, stats_examples=2048,
                     head_hidden=0, head_zero_init=True, feature_norm="batch",
                     loss="mse")

  c.batch_size = 256
  c.total_steps = 20_000
  c.optim = common.adamw(1e-3, 1_000, min_lr=1e-6, weight_decay=0.05, layer_decay=0.75,
                         freeze="")
  c.evals = dict(val=dict(type="downstream", every=2_000, split="validation",
                          num_examples=2048, plots_dir="plots"))
  common.downstream_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.model = common.runlocal_vit()
    c.batch_size = 64
    c.total_steps = 150
    c.optim.update(base_lr=2e-3, warmup_steps=15)
    c.evals.val.update(every=50, num_examples=256)
    c.objective.stats_examples = 512
  common.apply_mode(c, arg.mode, arg.runlocal, allowed=("finetune", "linear", "scratch",
                                                       "resnet"))
  return c
