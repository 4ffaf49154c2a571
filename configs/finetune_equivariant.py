r"""Substructure classification (no_sub / cdm / axion) with the equivariant transformer.

Fine-tunes an encoder pretrained by configs/mae_equivariant.py or
configs/simclr_equivariant.py (`init_from`; same `variant`), through the shared
downstream machinery (task 'finetune', objective 'classify', evaluation 'downstream';
see configs/finetune_classify.py for the details and the evaluation commands).

On a GPU/TPU:
  python -m lensfm.main --config=configs/finetune_equivariant.py \
      --config.init_from=workdirs/mae_equivariant --workdir=workdirs/cls_eq
Adaptation modes (`:mode=...`): finetune (default; layer-wise lr decay 0.75 over the
equivariant blocks), linear (frozen encoder), scratch (no init_from), knn.
Label efficiency: `--config.data.labels_per_class=100`.
On a laptop CPU (32x32 images, ~1.5 min of CPU time; pretrain first):
  python -m lensfm.main --config=configs/mae_equivariant.py:runlocal --workdir=/tmp/lensfm_mae_eq
  python -m lensfm.main --config=configs/finetune_equivariant.py:runlocal \
      --config.init_from=/tmp/lensfm_mae_eq --workdir=/tmp/lensfm_cls_eq
Evaluation as for any fine-tuned run: configs/evaluate.py with --config.checkpoint.
(It switches augmentations off, so it cannot make a rotated test set yet;
experiments/studies/equivariance.py rotates its own.)

The training data keep no rotation augmentation ('flip' only would be redundant too):
the backbone is invariant to the pixel grid's rotations and mirrors by construction,
which is the point of the comparison with the ViT (configs/finetune_classify.py uses
'rot90,flip'). What it should reach: see
experiments/results/equivariant_* for the CPU-scale comparison with a ViT and a
group-pooled ViT.
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections

CLASS_NAMES = ("no_sub", "cdm", "axion")


def get_config(arg=None):
  arg = parse_arg(arg, variant="S/4", runlocal=False, mode="finetune")
  c = ml_collections.ConfigDict()
  c.task = "finetune"
  c.seed = 0
  c.init_from = ""  # The pretraining workdir (or checkpoints/<step>); '' = from scratch.

  c.data = common.sim_data("model_ii", runlocal=arg.runlocal, augment="")
  # Must equal the pretraining run's config.model (dtype and remat may differ).
  c.model = common.equivariant_model(arg.variant, arg.runlocal)
  c.objective = dict(name="classify", num_classes=3, class_names=CLASS_NAMES,
                     head_hidden=0, head_zero_init=True, label_smoothing=0.)

  c.batch_size = 256
  c.total_steps = 20_000
  c.optim = common.adamw(1e-3, 1_000, min_lr=1e-6, weight_decay=0.05, layer_decay=0.75,
                         freeze="")
  c.evals = dict(val=dict(type="downstream", every=2_000, split="validation",
                          num_examples=2048, plots_dir="plots"))
  c.knn = dict(k=20, temperature=0.07, num_train_examples=4096, num_test_examples=2048)
  common.downstream_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.batch_size = 64
    c.total_steps = 150
    c.optim.update(base_lr=2e-3, warmup_steps=15)
    c.evals.val.update(every=50, num_examples=256)
    c.knn.update(num_train_examples=512, num_test_examples=256)
  common.apply_mode(c, arg.mode, arg.runlocal, allowed=("finetune", "linear", "scratch", "knn"))
  return c
