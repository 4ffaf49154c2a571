r"""LensBench: score a checkpoint on the field's tasks, beside baselines with the same budgets.

  python -m lensfm.main --config=configs/bench.py:preset=cpu --config.init_from=CKPT \
      --workdir=DIR

CKPT: any pretraining or fine-tuning workdir (or its checkpoints/<step>); its backbone and
input grid are adopted. Without init_from only the baselines run. Presets:
  runlocal     a few minutes on a laptop CPU (CI): one seed, 10 labels/class, fine-tune
               and scratch on Model II and fine-tune elsewhere, 10 steps per run, tiny
               sets: the rows' mechanics only.
  cpu          every row, 3 seeds at 10 and 100 labels, 200 steps of batch 32 per
               classification run (150 for super-resolution and lens finding), ResNet-18
               at width 16: 102 min of rows on one CPU core for lensfm:tiny (48 px),
               about 60 min of wall time split over two processes with --config.only.
  accelerator  one GPU/TPU: 2,000 steps of batch 256 per run, full-width ResNet-18,
               larger sets.
Options: --config.extra_datasets='model_ii=DIR,...' adds rows for your released DeepLense
directories (built into TFDS on first use); --config.only=REGEX runs the matching rows;
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

PRESETS = ("runlocal", "cpu", "accelerator")
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
  c.extra_datasets = ""
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

  if arg.preset == "runlocal":
    resnet = common.resnet18(runlocal=True)
    c.batch_size = 32
    c.steps = dict(classify=10, regress=10, superres=10, lensfind=10)
    c.set_sizes = dict(validation=32, test=64)
    c.modes = ("finetune", "scratch")
    c.other_modes = ("finetune",)
    c.labels = (10,)
    c.multi_seed_labels = ()
    c.transfer_labels = 10
    c.seeds = (0,)
    c.other_instruments = ("model_iii",)
  elif arg.preset == "cpu":
    resnet = dict(name="resnet", depth=18, width=16, stem="small", dtype="float32")
    # Halved from 300 x 64 to bring lensfm:tiny's 52 rows towards ~45 min on 2 cores.
    c.batch_size = 32
    c.steps = dict(classify=200, regress=200, superres=150, lensfind=150)
    c.set_sizes = dict(validation=300, test=900)
  else:
    resnet = common.resnet18(runlocal=False)
    c.batch_size = 256
    c.steps = dict(classify=2000, regress=2000, superres=2000, lensfind=1000)
    c.set_sizes = dict(validation=3000, test=9000)
  c.batch_size = int(c.batch_size)
  c.recipes = downstream_recipes(small, resnet)
  return c
