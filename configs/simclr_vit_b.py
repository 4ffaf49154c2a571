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

What it should reach: the `runlocal` run's NT-Xent loss falls well below log(127) = 4.84
and contrastive_accuracy rises above chance (1/127); experiments/studies/compare_ssl.py compares
it with MAE, BYOL and DINO and with a random encoder (experiments/results/ssl_*).
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
      name="simclr", temperature=0.1, proj_hidden_dim=2048, proj_dim=128, proj_layers=2,
      head_norm="layernorm",
      views=dict(augment="rotate,flip,shift,blur,noise,scale", normalize="none",
                 global_crop_scale=(0.8, 1.0), crop_jitter=0.03))

  # Contrastive losses want large batches (more negatives); peak lr = base_lr * B / 256.
  c.batch_size = 1024
  c.total_steps = 100_000
  c.optim = common.adamw(1.5e-4, 5_000, weight_decay=0.1, layer_decay=None)

  c.evals = common.knn_eval("params/encoder")

  common.pretrain_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.data.image_size = 32
    c.data.recipe_overrides = {"num_pix": 32}
    c.objective.update(proj_hidden_dim=128, proj_dim=64)
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20)
    c.evals.knn.update(every=100, num_train_batches=8, num_val_batches=4)
  return c
