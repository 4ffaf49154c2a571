r"""SimCLR pretraining of ViT-B/8 on simulated Model II-like lenses (64x64).

Two lensing-aware views per image (centred crops, rotation by any angle, flips,
sub-pixel shifts, PSF blur, re-drawn noise, intensity scaling; made on device inside
the step), contrasted with NT-Xent against every other view of the global batch.
Data are simulated on the accelerator (recipe `model_ii`), so nothing is downloaded.

On a GPU/TPU:
  python -m lensfm.main --config=configs/simclr_vit_b.py --workdir=workdirs/simclr_vit_b
On a laptop CPU (tiny model, 32x32 images; 300 steps take about a minute on 2 cores):
  python -m lensfm.main --config=configs/simclr_vit_b.py:runlocal --workdir=/tmp/lensfm_simclr
Other backbones with one argument: `:backbone=hybrid` (conv stem + ViT blocks) or
`:backbone=resnet` (ResNet-50 with GroupNorm; `:backbone=resnet,depth=18`), e.g.
  python -m lensfm.main --config=configs/simclr_vit_b.py:runlocal,backbone=resnet --workdir=...

Monitoring: `evals.knn` logs knn/knn_accuracy (20-NN on the validation split against a
bank from the train split) and knn/embedding_std; the loss metrics include
embedding_std of the training batch (collapse indicator: ~1/sqrt(D) healthy, 0
collapsed) and contrastive_accuracy.

What it should reach (measured once, CPU, `runlocal`, 63 s): the NT-Xent loss falls
from log(127) = 4.84 to 3.2, contrastive_accuracy reaches ~0.1 (chance 1/127 = 0.008),
and knn/knn_accuracy is 0.35 / 0.39 / 0.37 at steps 100 / 200 / 300 (chance 1/3 for
the three Model II classes; this short run does not yet beat a random encoder's 0.43).
experiments/bench_ssl.py compares it with MAE, BYOL and DINO (experiments/results/ssl_*);
the full run has not been measured on an accelerator yet.
"""
from lensfm.config_args import parse_arg
import ml_collections


def backbone_config(backbone: str, variant: str, depth: int, runlocal: bool) -> dict:
  """config.model for 'vit', 'hybrid' or 'resnet' (tiny versions for runlocal)."""
  if backbone == "vit":
    if runlocal:
      return dict(name="vit", variant=None, width=64, depth=2, mlp_dim=128, num_heads=2,
                  patch_size=4, pool="cls", dtype="float32")
    return dict(name="vit", variant=variant, pool="cls", dtype="bfloat16", remat=False)
  if backbone == "hybrid":
    if runlocal:
      return dict(name="hybrid", variant=None, width=64, depth=2, mlp_dim=128, num_heads=2,
                  patch_size=4, stem="conv", stem_width=16, pool="cls", dtype="float32")
    return dict(name="hybrid", variant=variant, stem="conv", stem_width=64, pool="cls",
                dtype="bfloat16", remat=False)
  if backbone == "resnet":
    if runlocal:
      return dict(name="resnet", depth=18, width=16, stem="small", dtype="float32")
    return dict(name="resnet", depth=depth, width=64, stem="small", dtype="bfloat16")
  raise ValueError(f"Config arg backbone={backbone!r} is not one of 'vit', 'hybrid', 'resnet'.")


def get_config(arg=None):
  arg = parse_arg(arg, backbone="vit", variant="B/8", depth=50, runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "pretrain"
  c.seed = 0

  # No augmentation in the input: the objective makes its own views on device.
  c.data = dict(source="sim", recipe="model_ii", recipe_overrides={}, image_size=64, channels=1,
                normalize="zscore", augment="", prefetch=2)

  c.model = backbone_config(arg.backbone, arg.variant, arg.depth, arg.runlocal)
  c.objective = dict(
      name="simclr", temperature=0.1, proj_hidden_dim=2048, proj_dim=128, proj_layers=2,
      head_norm="layernorm",
      views=dict(augment="rotate,flip,shift,blur,noise,scale", normalize="none",
                 global_crop_scale=(0.8, 1.0), crop_jitter=0.03))

  # Contrastive losses want large batches (more negatives); peak lr = base_lr * B / 256.
  c.batch_size = 1024
  c.total_steps = 100_000
  c.optim = dict(base_lr=1.5e-4, lr_batch_reference=256, min_lr=0., warmup_steps=5_000,
                 b1=0.9, b2=0.999, weight_decay=0.1, grad_clip_norm=1.0, layer_decay=None)

  c.mesh = (("data", -1), ("fsdp", 1))
  c.sharding_rules = ((".*", "fsdp"),)

  c.evals = dict(knn=dict(type="knn", every=2_000, k=20, temperature=0.07,
                          num_train_batches=8, num_val_batches=4, features="params/encoder"))

  c.log_every = 50
  c.checkpoint_every = 2_000
  c.keep_checkpoints = 3
  c.visualize_every = 2_000
  c.nonfinite = "error"
  c.progress_bar = True
  c.watchdog_seconds = 1800  # No step boundary for this long: say where, exit non-zero (0 = off).

  if arg.runlocal:
    c.data.image_size = 32
    c.data.recipe_overrides = {"num_pix": 32}
    c.objective.update(proj_hidden_dim=128, proj_dim=64)
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
    c.evals.knn.update(every=100, num_train_batches=8, num_val_batches=4)
    c.log_every = 20
    c.checkpoint_every = 100
    c.visualize_every = 100
  return c
