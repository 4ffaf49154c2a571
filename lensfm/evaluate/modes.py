"""What the downstream configs share: adaptation modes and the common fields.

Adaptation modes (`configs/<task>.py:mode=...`), all with the same data, evaluation and
step budget so that they compare fairly:
  finetune  every weight trained from the pretrained encoder (init_from), with layer-wise
            learning-rate decay (config.optim.layer_decay);
  linear    linear probe: the encoder frozen bit-for-bit (config.optim.freeze=
            '^encoder/'), only the head trained, at 10x the learning rate, no weight decay,
            on standardised features (objective.feature_norm='batch', MAE's protocol,
            which the classification and regression configs use in every mode);
            for super-resolution the whole decoder trains on the frozen tokens;
  scratch   the same backbone randomly initialised (init_from ignored): the supervised
            baseline that pretraining must beat;
  resnet    ResNet-18 from scratch (GroupNorm, small stem), the CNN of the DeepLense
            literature, at 4x the ViT's learning rate;
  knn       (classification only) no training: kNN on frozen features (task 'knn').
"""
import ml_collections

MODES = ("finetune", "linear", "scratch", "resnet", "knn")


def runlocal_vit() -> dict:
  """The backbone of configs/mae_vit_b.py:runlocal (init_from needs the same one)."""
  return dict(name="vit", variant=None, width=64, depth=2, mlp_dim=128, num_heads=2,
              patch_size=8, pool="cls", dtype="float32", remat=False)


def resnet18(runlocal: bool) -> dict:
  if runlocal:  # Two stages of width 16: a CNN about the size of the tiny ViT.
    return dict(name="resnet", depth=None, stage_sizes=(1, 1), width=16, stem="small",
                dtype="float32")
  return dict(name="resnet", depth=18, width=64, stem="small", dtype="bfloat16")


def apply_mode(c: ml_collections.ConfigDict, mode: str, runlocal: bool,
               allowed=MODES) -> None:
  """Changes `c` in place for the adaptation `mode`."""
  if mode not in allowed:
    raise ValueError(f"Config arg mode={mode!r} is not one of {tuple(allowed)}.")
  # Read when the run starts: init_from may still be set on the command line, and a fresh
  # mode then takes only its backbone and grid (restore.adopt_init_from).
  c.mode = mode
  if mode == "finetune":
    return
  c.optim.layer_decay = None
  if mode == "linear":
    c.optim.freeze = "^encoder/"
    c.optim.update(base_lr=c.optim.base_lr * 10, weight_decay=0.)
    if c.objective.name in ("classify", "regress"):
      c.objective.feature_norm = "batch"
  elif mode in ("scratch", "resnet"):
    c.init_from = ""
    c.optim.layer_decay = None
    if mode == "resnet":
      c.model = resnet18(runlocal)
      # The ViT's rate is too low for the CNN: the runlocal ResNet reached macro AUC
      # 0.62 in 150 steps at it and 0.79 at 4x (measured; 8 CPU devices, batch 64).
      c.optim.base_lr = c.optim.base_lr * 4
  elif mode == "knn":
    c.task = "knn"


def common(c: ml_collections.ConfigDict, *, runlocal: bool) -> None:
  """Mesh, logging, checkpointing and the fields every downstream config has."""
  c.mesh = (("data", -1), ("fsdp", 1))
  c.sharding_rules = ((".*", "fsdp"),)
  c.log_every = 10 if runlocal else 50
  c.checkpoint_every = 50 if runlocal else 2_000
  c.keep_checkpoints = 2
  c.visualize_every = 0
  c.nonfinite = "error"
  c.progress_bar = True


def sim_data(recipe: str, *, runlocal: bool, augment: str = "rot90,flip", **overrides) -> dict:
  """config.data for simulated lenses (32x32 under runlocal, for CPU speed). `name` and
  `data_dir` exist so that --config.data.source=tfds --config.data.name=... works."""
  recipe_overrides = dict(overrides)
  if runlocal:
    recipe_overrides["num_pix"] = 32
  return dict(source="sim", recipe=recipe, recipe_overrides=recipe_overrides,
              image_size=32 if runlocal else 64, channels=1, normalize="zscore",
              augment=augment, prefetch=2, name="", data_dir="", labels_per_class=0,
              labels_seed=0)


def cpu_pretrain_config(steps: int) -> ml_collections.ConfigDict:
  """MAE pretraining of the runlocal ViT on 32x32 simulated lenses, batch 64: what the
  CPU-scale benchmarks in experiments/ fine-tune from."""
  from lensfm import config_args  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  c = config_args.load(os.path.join(root, "configs", "mae_vit_b.py:runlocal"))
  c.data.image_size = 32
  c.data.recipe_overrides = {"num_pix": 32}
  c.update(batch_size=64, total_steps=steps, log_every=50, checkpoint_every=steps,
           visualize_every=0, progress_bar=False)
  c.optim.update(base_lr=1.5e-3, warmup_steps=max(steps // 10, 1))
  return c
