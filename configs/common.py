"""What the configs share: backbones, optimizer, data, mesh, logging and checkpointing
blocks, and the downstream adaptation modes. Configs import it as `from configs import
common` (run lensfm from the directory that holds configs/).

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
  cnn       a plain 3-layer CNN from scratch (lensfm/models/cnn.py), the notebook
            baseline of lens searches, at 4x the ViT's learning rate;
  knn       (classification only) no training: kNN on frozen features (task 'knn').
"""
import ml_collections

from lensfm.sim import catalog

MODES = ("finetune", "linear", "scratch", "resnet", "cnn", "knn")


# -- backbones -----------------------------------------------------------------------


def precision(dtype: str) -> dict:
  """A backbone's compute dtype and its other layers.Precision fields; None leaves the
  choice to the platform the run is on (lensfm/train/precision.py), not to the config."""
  return dict(dtype=dtype, activation_dtype=None, dot_output_dtype=None,
              weight_grad_transpose=None)


def ssl_backbone(backbone: str, variant: str, depth: int, runlocal: bool) -> dict:
  """config.model for 'vit', 'hybrid' or 'resnet' (tiny versions for runlocal)."""
  if backbone == "vit":
    if runlocal:
      return dict(name="vit", variant=None, width=64, depth=2, mlp_dim=128, num_heads=2,
                  patch_size=4, pool="cls", **precision("float32"))
    return dict(name="vit", variant=variant, pool="cls", **precision("bfloat16"), remat=False)
  if backbone == "hybrid":
    if runlocal:
      return dict(name="hybrid", variant=None, width=64, depth=2, mlp_dim=128, num_heads=2,
                  patch_size=4, stem="conv", stem_width=16, pool="cls", **precision("float32"))
    return dict(name="hybrid", variant=variant, stem="conv", stem_width=64, pool="cls",
                **precision("bfloat16"), remat=False)
  if backbone == "resnet":
    if runlocal:
      return dict(name="resnet", depth=18, width=16, stem="small", dtype="float32")
    return dict(name="resnet", depth=depth, width=64, stem="small", dtype="bfloat16")
  raise ValueError(f"Config arg backbone={backbone!r} is not one of 'vit', 'hybrid', 'resnet'.")


def equivariant_model(variant: str, runlocal: bool) -> dict:
  """config.model shared by the equivariant pretraining and fine-tuning configs
  (init_from needs them equal)."""
  if runlocal:
    return dict(name="equivariant", variant=None, irreps="16x0e + 8x1o + 4x2e", depth=2,
                num_heads=2, patch_size=4, mlp_ratio=2, num_radial=6, sh_lmax=2,
                geo_divisor=4, patch_window="square", **precision("float32"), remat=False)
  return dict(name="equivariant", variant=variant, mlp_ratio=2, num_radial=6, sh_lmax=2,
              geo_divisor=4, patch_window="square", **precision("float32"), remat=False)


def runlocal_vit() -> dict:
  """The backbone of configs/mae_vit_b.py:runlocal (init_from needs the same one)."""
  return dict(name="vit", variant=None, width=64, depth=2, mlp_dim=128, num_heads=2,
              patch_size=8, pool="cls", **precision("float32"), remat=False)


def resnet18(runlocal: bool) -> dict:
  if runlocal:  # Two stages of width 16: a CNN about the size of the tiny ViT.
    return dict(name="resnet", depth=None, stage_sizes=(1, 1), width=16, stem="small",
                dtype="float32")
  return dict(name="resnet", depth=18, width=64, stem="small", dtype="bfloat16")


def plain_cnn() -> dict:
  """Three conv + pool layers (32, 64, 128): the notebook CNN of lens searches."""
  return dict(name="cnn", widths=(32, 64, 128), dtype="float32")


def apply_mode(c: ml_collections.ConfigDict, mode: str, runlocal: bool,
               allowed=MODES, standardize_features: bool = True) -> None:
  """Changes `c` in place for the adaptation `mode`; `standardize_features`: a linear
  probe's head sees standardised features (heads on the pooled embedding)."""
  if mode not in allowed:
    raise ValueError(f"Config arg mode={mode!r} is not one of {tuple(allowed)}.")
  # Read when the run starts: init_from may still be set on the command line, and a fresh
  # mode then takes only its grid and backbone (`contract.ADOPTION`).
  c.mode = mode
  if mode == "finetune":
    return
  c.optim.layer_decay = None
  if mode == "linear":
    c.optim.freeze = "^encoder/"
    c.optim.update(base_lr=c.optim.base_lr * 10, weight_decay=0.)
    if standardize_features:
      c.objective.feature_norm = "batch"
  elif mode in ("scratch", "resnet", "cnn"):
    c.init_from = ""
    c.optim.layer_decay = None
    if mode == "resnet":
      c.model = resnet18(runlocal)
      c.optim.base_lr = c.optim.base_lr * 4  # The ViT's rate is too low for the CNN.
    elif mode == "cnn":
      c.model = plain_cnn()
      c.optim.base_lr = c.optim.base_lr * 4
  elif mode == "knn":
    c.task = "knn"


# -- the loop: mesh, logging, checkpointing -------------------------------------------


def mesh(c: ml_collections.ConfigDict) -> None:
  """Pure data parallelism; raise `fsdp` to split parameters and optimizer state (and
  EMA targets, sharded by the same rules) when the model no longer fits one device."""
  c.mesh = (("data", -1), ("fsdp", 1))
  c.sharding_rules = ((".*", "fsdp"),)


def pretrain_loop(c: ml_collections.ConfigDict, *, runlocal: bool) -> None:
  """Mesh, logging, checkpointing and pictures of a pretraining run."""
  mesh(c)
  c.log_every = 20 if runlocal else 50
  c.checkpoint_every = 100 if runlocal else 2_000
  c.keep_checkpoints = 3
  c.visualize_every = 100 if runlocal else 2_000
  c.nonfinite = "error"
  c.progress_bar = True
  # No step boundary (a save or an evaluation included) for this long: the process
  # says where it is stuck and exits non-zero (0 = off).
  c.watchdog_seconds = 1800


def downstream_loop(c: ml_collections.ConfigDict, *, runlocal: bool) -> None:
  """Mesh, logging and checkpointing of a downstream run (no pictures)."""
  mesh(c)
  c.log_every = 10 if runlocal else 50
  c.checkpoint_every = 50 if runlocal else 2_000
  c.keep_checkpoints = 2
  c.visualize_every = 0
  c.nonfinite = "error"
  c.progress_bar = True
  # No step boundary (a save or an evaluation included) for this long: the process
  # says where it is stuck and exits non-zero (0 = off).
  c.watchdog_seconds = 1800
  # Off until a metric is named: --config.early_stopping.metric=val/auc_macro.
  c.early_stopping = early_stopping(metric="")


def early_stopping(metric: str, mode: str = "max", every: int = 0, patience: int = 5,
                   min_delta: float = 0.) -> dict:
  """config.early_stopping (lensfm/train/early_stopping.py): stop when `metric` (e.g.
  'val/auc_macro', an evaluator's) has not improved by min_delta for `patience`
  evaluations, made every `every` steps (0: the evaluator's); the best state is kept
  and total_steps is the cap. metric='' = off."""
  return dict(metric=metric, mode=mode, every=every, patience=patience, min_delta=min_delta)


def adamw(base_lr: float, warmup_steps: int, *, b2: float = 0.999, weight_decay: float,
          min_lr: float = 0., grad_clip_norm: float = 1.0, **more) -> dict:
  """config.optim: AdamW with linear lr scaling (peak = base_lr * batch_size / 256),
  warmup and cosine decay."""
  return dict(base_lr=base_lr, lr_batch_reference=256, min_lr=min_lr,
              warmup_steps=warmup_steps, b1=0.9, b2=b2, weight_decay=weight_decay,
              grad_clip_norm=grad_clip_norm, **more)


def knn_eval(features: str = "params/encoder", every: int = 2_000) -> dict:
  """config.evals for SSL pretraining: kNN accuracy and embedding spread."""
  return dict(knn=dict(type="knn", every=every, k=20, temperature=0.07,
                       num_train_batches=8, num_val_batches=4, features=features))


# -- data ----------------------------------------------------------------------------


def pretrain_data(augment: str) -> dict:
  """config.data for pretraining on simulated Model II lenses: the model grid is 64 px at
  Model II's 0.101"/px (image_size x pixel_scale, stored in every checkpoint)."""
  return dict(source="sim", recipe="model_ii", recipe_overrides={}, image_size=64,
              pixel_scale=catalog.PIXEL_SCALES["model_ii"], channels=1,
              normalize="zscore", augment=augment, prefetch=2)


def sim_data(recipe: str, *, runlocal: bool, augment: str = "rot90,flip", **overrides) -> dict:
  """config.data for simulated lenses (32x32 under runlocal, for CPU speed) on the model
  grid image_size x pixel_scale (the recipe's pixel scale; other data are mapped onto it).
  `name`, `data_dir`, `manual_dir` exist so that --config.data.source=tfds
  --config.data.name=... works; `source_pixel_scale` for datasets that do not say theirs;
  `files_fields` for datasets of your own files (lensfm/data/builders/files.py)."""
  recipe_overrides = dict(overrides)
  if runlocal:
    recipe_overrides["num_pix"] = 32
  return dict(source="sim", recipe=recipe, recipe_overrides=recipe_overrides,
              image_size=32 if runlocal else 64, pixel_scale=catalog.PIXEL_SCALES[recipe],
              channels=1, normalize="zscore", augment=augment, prefetch=2, name="",
              data_dir="", manual_dir="", source_pixel_scale=0., labels_per_class=0,
              labels_seed=0, balanced=False, **files_fields())


def files_fields() -> dict:
  """What a `files` dataset (a folder or a catalogue of your own) reads from config.data:
  label: the catalogue's label column ('' = 'label'); targets: numeric columns
  'a,b' (regression); bands: band names in order, 'g,r,i' ('' = the data's); hdu: FITS
  HDU (index, EXTNAME, 'a,b' or 'all'; '' = the first image); skip_bad: skip and count
  unreadable files instead of stopping; require_labels: every row must have a label."""
  return dict(label="", targets="", bands="", hdu="", skip_bad=False, require_labels=False)
