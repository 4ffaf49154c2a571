r"""BYOL pretraining of ViT-B/8 on simulated Model II-like lenses (64x64).

An online network (backbone, projector, predictor) predicts a slowly moving target
network's projection of another view of the same lens; the target is an EMA of the
online network whose momentum rises from 0.996 to 1 along a cosine over the run. No
negatives, so it does not need SimCLR's large batches. Views as in SimCLR (centred
crops, rotation by any angle, flips, shifts, PSF blur, re-drawn noise, intensity
scaling), made on device inside the step; data simulated on the accelerator.

On a GPU/TPU:
  python -m lensfm.main --config=configs/byol_vit_b.py --workdir=workdirs/byol_vit_b
On a laptop CPU (tiny model, 32x32 images; a few minutes, like SimCLR's runlocal):
  python -m lensfm.main --config=configs/byol_vit_b.py:runlocal --workdir=/tmp/lensfm_byol
Other backbones with one argument: `:backbone=hybrid` or `:backbone=resnet`
(`:backbone=resnet,depth=18`).

Monitoring: `evals.knn` logs knn/knn_accuracy and knn/embedding_std of the online
backbone (set evals.knn.features='extra/target/encoder' for the target's); training
metrics include embedding_std (collapse indicator), prediction_similarity and
ema_momentum.

What it should reach: in the CPU benchmark (experiments/bench_ssl.py, 150 steps of the
runlocal setting, z-score inputs; experiments/results/ssl_*) the loss fell to 0.016 at
step 150 with embedding_std 0.005 (below a random encoder's 0.009: the embeddings
concentrate); kNN accuracy 0.42 and linear-probe accuracy 0.73 against a random
encoder's 0.43 / 0.68 (chance 1/3): at this budget BYOL does not yet beat random
features. The full run has not been measured on an accelerator yet.
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
      name="byol", ema_momentum=0.996, ema_momentum_end=1.0, proj_hidden_dim=4096,
      proj_dim=256, pred_hidden_dim=4096, head_norm="layernorm",
      views=dict(augment="rotate,flip,shift,blur,noise,scale", normalize="none",
                 global_crop_scale=(0.8, 1.0), crop_jitter=0.03))

  c.batch_size = 1024
  c.total_steps = 100_000
  c.optim = dict(base_lr=1.5e-4, lr_batch_reference=256, min_lr=0., warmup_steps=5_000,
                 b1=0.9, b2=0.999, weight_decay=0.1, grad_clip_norm=1.0, layer_decay=None)

  c.mesh = (("data", -1), ("fsdp", 1))
  # The EMA target (extra/target) is sharded by the same rules as the parameters.
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
    # A faster-moving target suits a run of a few hundred steps.
    c.objective.update(ema_momentum=0.99, proj_hidden_dim=128, proj_dim=64, pred_hidden_dim=128)
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
    c.evals.knn.update(every=100, num_train_batches=8, num_val_batches=4)
    c.log_every = 20
    c.checkpoint_every = 100
    c.visualize_every = 100
  return c
