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

What it should reach: kNN and linear-probe accuracy above a random encoder's, without
collapse (embedding_std well above 0); experiments/studies/compare_ssl.py measures both
(experiments/results/ssl_*).
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, backbone="vit", variant="B/8", depth=50, runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "pretrain"
  c.seed = 0

  # No augmentation in the input: the objective makes its own views on device.
  c.data = common.pretrain_data(augment="")

  c.model = common.ssl_backbone(arg.backbone, arg.variant, arg.depth, arg.runlocal)
  c.objective = dict(
      name="byol", ema_momentum=0.996, ema_momentum_end=1.0, proj_hidden_dim=4096,
      proj_dim=256, pred_hidden_dim=4096, head_norm="layernorm",
      views=dict(augment="rotate,flip,shift,blur,noise,scale", normalize="none",
                 global_crop_scale=(0.8, 1.0), crop_jitter=0.03))

  c.batch_size = 1024
  c.total_steps = 100_000
  c.optim = common.adamw(1.5e-4, 5_000, weight_decay=0.1, layer_decay=None)

  c.evals = common.knn_eval("params/encoder")

  common.pretrain_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.data.image_size = 32
    c.data.recipe_overrides = {"num_pix": 32}
    # A faster-moving target suits a run of a few hundred steps.
    c.objective.update(ema_momentum=0.99, proj_hidden_dim=128, proj_dim=64, pred_hidden_dim=128)
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
    c.evals.knn.update(every=100, num_train_batches=8, num_val_batches=4)
  return c
