r"""Fine-tune a checkpoint on your own labelled files: a folder or a catalogue (README,
"Your own data"), for classification (any classes) or regression (catalogue columns).

  python -m lensfm.main --config=configs/finetune_files.py --config.init_from=lensfm:small \
      --config.data.name=files/lenses --config.data.manual_dir=DIR_OR_CATALOGUE \
      --workdir=workdirs/my_lenses
  python -m lensfm.main --config=configs/finetune_files.py:task=regress \
      --config.init_from=lensfm:small --config.data.name=files/theta_e \
      --config.data.manual_dir=catalogue.csv --config.data.targets=theta_e --workdir=...

The classes (or targets) come from the data; the model's grid from the checkpoint (files
of any size and pixel scale are mapped onto it). Made for the hundreds-of-labels sets
users bring, on a CPU in minutes: batches of 32, the validation split (the data's own,
else carved from train) evaluated every 25 steps, early stopping after 8 evaluations
without improvement (val/auc_macro for classification, val/r2_mean for regression),
capped at 1,500 steps; the best state is kept in WORKDIR/best, the one to evaluate:
  python -m lensfm.main --config=configs/evaluate.py --config.checkpoint=WORKDIR/best \
      --workdir=WORKDIR/eval      # the data's test split
Modes (`:mode=`, configs/common.py): finetune (default), linear, scratch, resnet, cnn
(a plain 3-layer CNN from scratch: the baseline of lens searches). `:runlocal` shortens
every run to a few steps (tests).
What it should reach: on realistic Euclid-like lens / non-lens cutouts (150 + 150 for
training), ROC AUC above what a plain CNN trained on the same files reaches;
experiments/studies/own_data.py measures it
(experiments/results/own_data_realistic_faint_cpu.md).
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections

TASKS = ("classify", "regress")


def get_config(arg=None):
  arg = parse_arg(arg, task="classify", mode="finetune", runlocal=False)
  if arg.task not in TASKS:
    raise ValueError(f"Config arg task={arg.task!r} is not one of {TASKS}.")
  c = ml_collections.ConfigDict()
  c.task = "finetune"
  c.seed = 0
  c.init_from = ""
  c.data = common.sim_data("lensfind", runlocal=False)
  c.data.update(source="tfds", name="", recipe="")  # name: 'files/NAME' (required).
  c.model = common.runlocal_vit()  # Replaced by init_from's backbone (contract.ADOPTION).
  if arg.task == "classify":
    c.objective = dict(name="classify", num_classes=2, class_names=(), head_hidden=0,
                       head_zero_init=True, feature_norm="batch", label_smoothing=0.,
                       positive_class="", class_weights="")
    metric, direction = "val/auc_macro", "max"
  else:
    c.objective = dict(name="regress", targets=(), target_stats={}, stats_examples=2048,
                       head_hidden=0, head_zero_init=True, feature_norm="batch", loss="mse")
    metric, direction = "val/r2_mean", "max"
  c.batch_size = 32
  c.total_steps = 1_500
  c.optim = common.adamw(1e-3, 50, min_lr=1e-6, weight_decay=0.05, layer_decay=0.75,
                         freeze="")
  c.evals = dict(val=dict(type="downstream", every=25, split="validation",
                          num_examples=0, plots_dir="plots"))
  common.downstream_loop(c, runlocal=arg.runlocal)
  c.early_stopping = common.early_stopping(metric, direction, every=25, patience=8)
  c.checkpoint_every = 500
  if arg.runlocal:
    c.total_steps = 8
    c.batch_size = 8
    c.evals.val.update(every=4, num_examples=16)
    c.early_stopping.update(every=4)
  common.apply_mode(c, arg.mode, arg.runlocal, allowed=("finetune", "linear", "scratch",
                                                       "resnet", "cnn"))
  return c
