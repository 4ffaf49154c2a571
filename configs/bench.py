r"""LensBench: score a checkpoint on the field's tasks, beside baselines with the same budgets.

  python -m lensfm.main --config=configs/bench.py:preset=cpu --config.init_from=CKPT \
      --workdir=DIR

CKPT: any pretraining or fine-tuning workdir (or its checkpoints/<step>); its backbone and
input grid are adopted. Without init_from only the baselines run. Every row runs in two
regimes (lensfm/tasks/bench.py): at a fixed budget (config.steps) and converged (early
stopping on validation, learning rate chosen on validation from config.lr_grid, capped
at config.cap_steps); BENCH.md has a table for each. Presets:
  runlocal     a few minutes on a laptop CPU (CI): one seed, 10 labels/class, fine-tune
               and scratch on Model II and fine-tune elsewhere, 10 steps per budget run,
               converged twins of the Model II rows (2 learning rates, cap 30), tiny
               sets: the rows' mechanics only.
  cpu          Model II classification at 10, 100 and all labels/class, the four
               modes, one seed, in both regimes (24 rows): 200 steps of batch 32 per
               budget run; converged runs validate every 50 steps on 300 examples,
               patience 5, cap 1,500, 3 learning rates; ResNet-18 at width 16. For
               lensfm:tiny (48 px) in bf16 the rows summed to 160 min on a loaded 2-core
               machine (~80 min of wall time over two processes, README);
               lensfm:small (64 px) costs ~3x per step: run its 10/100-label rows
               (--config.only) or use an accelerator. --config.model_dtype=bfloat16 is
               1.3-1.6x faster at no accuracy cost (experiments/results/
               bench_bf16_check_cpu.md).
  cpu_budget   the earlier cpu table, budget regime only: every row, 3 seeds at 10 and
               100 labels, 200 steps (150 for super-resolution and lens finding): 102
               min of rows on one core for lensfm:tiny, ~60 min on two processes.
  accelerator  one GPU/TPU, the full table: budget runs of 2,000 steps of batch 256,
               converged runs validating every 500 steps (cap 20,000), full-width
               ResNet-18, larger sets.
Options: --config.extra_datasets='NAME=PATH,...' adds rows for your own data: a released
DeepLense directory (NAME model_i, model_ii, model_iii or common_test and its layout:
deeplense/NAME) or any labelled folder or CSV catalogue (files/NAME, README "Your own
data"), built into TFDS on first use, classified with its own classes at
config.extra_labels (100) labels per class (all there are where fewer);
--config.only=REGEX runs the matching rows;
--config.data_dir=DIR caches the fixed sets elsewhere (default
$TFDS_DATA_DIR/lensbench or ~/tensorflow_datasets/lensbench).
Outputs in DIR: bench.json, BENCH.md, label_efficiency.png, cross_instrument.png,
rows/<row>.json (a restarted bench resumes at the next row). See lensfm/tasks/bench.py.
"""
from configs import common
from configs import finetune_classify
from configs import finetune_regress
from configs import lensfind
from configs import superres
from lensfm.config_args import parse_arg
import ml_collections

PRESETS = ("runlocal", "cpu", "cpu_budget", "accelerator")
TASK_CONFIGS = {"classify": finetune_classify, "regress": finetune_regress,
                "superres": superres, "lensfind": lensfind}
MODES = ("finetune", "linear", "scratch", "resnet")


def downstream_recipes(small: bool, resnet: dict) -> dict:
  """{task: {mode: config}}: the downstream configs the rows train (their optimizers,
  heads and modes); the bench puts the checkpoint's backbone and grid and its budget in."""
  out = {}
  for task, module in TASK_CONFIGS.items():
    out[task] = {}
    for mode in MODES:
      c = module.get_config(f"mode={mode}" + (",runlocal" if small else ""))
      if mode == "resnet":
        c.model = resnet
      out[task][mode] = c.to_dict()
  return out


def get_config(arg=None):
  arg = parse_arg(arg, preset="cpu")
  if arg.preset not in PRESETS:
    raise ValueError(f"Config arg preset={arg.preset!r} is not one of {PRESETS}.")
  small = arg.preset != "accelerator"
  c = ml_collections.ConfigDict()
  c.task = "bench"
  c.preset = arg.preset
  c.init_from = ""
  c.data_dir = ""   # The fixed sets' cache ('' = <TFDS data dir>/lensbench).
  c.tfds_dir = ""   # Where extra_datasets are built ('' = the TFDS default).
  c.extra_datasets = ""  # 'NAME=PATH,...': DeepLense directories, your folders, catalogues.
  c.extra_labels = 100  # Labels per class of the extra_datasets rows.
  c.only = ""
  c.fail_fast = False
  c.model_dtype = ""  # Every row's compute dtype ('' = the checkpoint's / recipe's).
  c.mesh = (("data", -1), ("fsdp", 1))
  # Baselines-only runs (no init_from) use this backbone and grid.
  c.default_model = common.runlocal_vit() if small else dict(
      name="vit", variant="S/8", pool="cls", dtype="bfloat16", remat=False)
  c.grid = dict(image_size=32 if small else 64, pixel_scale=0.101)
  c.modes = MODES
  c.other_modes = MODES  # Modes of the rows beyond Model II classification.
  c.labels = (10, 100, 1000, 0)   # 0 = all labels (the endless simulator)
  c.multi_seed_labels = (10, 100)
  c.transfer_labels = 100
  c.seeds = (0, 1, 2)
  c.other_instruments = ("model_i", "model_iii")
  c.other_tasks = ("regress", "superres", "lensfind")
  c.regimes = ("budget", "converged")
  c.converge_only = ""  # Regex on row ids: which rows also run converged ('' = all).
  c.lr_grid = (0.3, 1.0, 3.0)  # Factors of each mode's recipe rate, chosen on validation.
  # Converged runs (metric and mode are each task's headline, bench.HEADLINE).
  c.early_stopping = dict(every=500, patience=5, min_delta=0.0005)

  if arg.preset == "runlocal":
    resnet = common.resnet18(runlocal=True)
    c.batch_size = 32
    c.steps = dict(classify=10, regress=10, superres=10, lensfind=10)
    c.cap_steps = dict(classify=30, regress=30, superres=30, lensfind=30)
    c.early_stopping = dict(every=10, patience=2, min_delta=0.)
    c.lr_grid = (1.0, 3.0)
    c.converge_only = "^classify/model_ii/"
    c.set_sizes = dict(validation=32, test=64)
    c.modes = ("finetune", "scratch")
    c.other_modes = ("finetune",)
    c.labels = (10,)
    c.multi_seed_labels = ()
    c.transfer_labels = 10
    c.seeds = (0,)
    c.other_instruments = ("model_iii",)
  elif arg.preset in ("cpu", "cpu_budget"):
    resnet = dict(name="resnet", depth=18, width=16, stem="small", dtype="float32")
    c.batch_size = 32
    c.steps = dict(classify=200, regress=200, superres=150, lensfind=150)
    c.cap_steps = dict(classify=1500, regress=1500, superres=1000, lensfind=1000)
    c.early_stopping = dict(every=50, patience=5, min_delta=0.001)
    c.set_sizes = dict(validation=300, test=900)
    if arg.preset == "cpu_budget":
      c.regimes = ("budget",)
    else:  # Rows that converge in ~2 h on 2 cores (README: the split over processes).
      c.labels = (10, 100, 0)
      c.multi_seed_labels = ()
      c.seeds = (0,)
      c.other_instruments = ()
      c.other_tasks = ()
  else:
    resnet = common.resnet18(runlocal=False)
    c.batch_size = 256
    c.steps = dict(classify=2000, regress=2000, superres=2000, lensfind=1000)
    c.cap_steps = dict(classify=20_000, regress=20_000, superres=10_000, lensfind=10_000)
    c.set_sizes = dict(validation=3000, test=9000)
  c.batch_size = int(c.batch_size)
  c.recipes = downstream_recipes(small, resnet)
  return c
