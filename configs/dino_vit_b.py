r"""DINO pretraining of ViT-B/8 on simulated Model II-like lenses (64x64).

Self-distillation: a student sees 2 global views (centred crops of most of the
field, 64 px) and 6 local views (centred crops of the inner 45-70 %, around the
arcs, at 32 px) and matches the teacher's centred, sharpened distribution over 65536
prototypes for the global views; the teacher is an EMA of the student (momentum 0.996
-> 1, cosine) and the centre a running mean of the teacher's outputs. Views are made
on device inside the step; data simulated on the accelerator.

On a GPU/TPU:
  python -m lensfm.main --config=configs/dino_vit_b.py --workdir=workdirs/dino_vit_b
On a laptop CPU (tiny model, 32x32 images; a few minutes, like SimCLR's runlocal):
  python -m lensfm.main --config=configs/dino_vit_b.py:runlocal --workdir=/tmp/lensfm_dino
Other backbones with one argument: `:backbone=hybrid` or `:backbone=resnet`
(`:backbone=resnet,depth=18`). Local crops must fit the backbone (16 px at patch 8 is
a 2x2 grid).

Monitoring: `evals.knn` logs knn/knn_accuracy and knn/embedding_std of the teacher's
backbone (as DINO evaluates; features='params/encoder' for the student's); training
metrics include embedding_std (collapse indicator), teacher_entropy (0 = one-hot
collapse, log(out_dim) = uniform collapse), center_norm and teacher_temperature.

What it should reach: not established (experiments/studies/compare_ssl.py measures kNN and
linear-probe accuracy against a random encoder's, experiments/results/ssl_*); watch
teacher_entropy for collapse.
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
      name="dino", out_dim=65536, hidden_dim=2048, bottleneck_dim=256, head_layers=3,
      student_temp=0.1, teacher_temp=0.04, warmup_teacher_temp=0.04,
      warmup_teacher_temp_steps=0, center_momentum=0.9, ema_momentum=0.996,
      ema_momentum_end=1.0,
      views=dict(augment="rotate,flip,shift,blur,noise,scale", normalize="none",
                 global_crop_scale=(0.7, 1.0), global_size=64,
                 local_crop_scale=(0.45, 0.7), local_size=32, num_local_crops=6,
                 crop_jitter=0.03))

  c.batch_size = 1024
  c.total_steps = 100_000
  # DINO's recipe: peak lr 5e-4 * B / 256, gradient clipping at 3.
  c.optim = common.adamw(5e-4, 10_000, min_lr=1e-6, weight_decay=0.04, grad_clip_norm=3.0,
                         layer_decay=None)

  c.evals = common.knn_eval("extra/teacher/encoder")

  common.pretrain_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.data.image_size = 32
    c.data.recipe_overrides = {"num_pix": 32}
    c.objective.update(out_dim=256, hidden_dim=128, bottleneck_dim=64, ema_momentum=0.99)
    # 32 px at the same 0.101"/px is half the field, so the ring (radius ~8-10 px)
    # spans most of the image: local crops must keep 80 % of the side to contain it,
    # which makes them lower-resolution views of the lens more than crops of it.
    c.objective.views.update(global_size=32, local_size=16, num_local_crops=2,
                             local_crop_scale=(0.8, 1.0))
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(base_lr=1e-3, warmup_steps=20, min_lr=0.)
    c.evals.knn.update(every=100, num_train_batches=8, num_val_batches=4)
  return c
