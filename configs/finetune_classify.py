r"""Substructure classification (no_sub / cdm / axion) from a pretrained encoder.

Data: simulated Model II-like lenses (recipe `model_ii`, 64x64, made on the accelerator),
so nothing needs preparing; `--config.data.source=tfds --config.data.name=deeplense/model_ii`
trains on the released files instead (build them first: `python -m lensfm.data.build
deeplense/model_ii --manual_dir=DIR`).

Fine-tune a pretraining run (configs/mae_vit_b.py) on a GPU/TPU:
  python -m lensfm.main --config=configs/finetune_classify.py \
      --config.init_from=workdirs/mae_vit_b --workdir=workdirs/cls_ft
Adaptation modes (`:mode=...`, the same data, evaluation and budget):
  finetune  all weights, layer-wise lr decay 0.75 (default; needs init_from);
  linear    linear probe: encoder frozen (config.optim.freeze='^encoder/');
  scratch   the same ViT, randomly initialised (leave init_from empty);
  resnet    ResNet-18 from scratch, the CNN baseline of the DeepLense literature;
  knn       no training: kNN on the frozen encoder's features (task 'knn').
Label efficiency: `--config.data.labels_per_class=100` (a seeded pool of exactly 100 per
class; `--config.data.labels_seed` picks another pool).
On a laptop CPU (a minute or two, 32x32 images; needs a runlocal pretraining run first):
  python -m lensfm.main --config=configs/mae_vit_b.py:runlocal --workdir=/tmp/lensfm_mae
  python -m lensfm.main --config=configs/finetune_classify.py:runlocal \
      --config.init_from=/tmp/lensfm_mae --workdir=/tmp/lensfm_cls
Then the full report (summary.json with auc_macro, accuracy, per-class AUC, confusion
matrix; ROC and confusion-matrix PNGs):
  python -m lensfm.main --config=configs/evaluate.py --config.checkpoint=/tmp/lensfm_cls \
      --workdir=/tmp/lensfm_cls_eval

What it should reach (accelerator scale): macro AUC >= 0.999 with all
labels; accuracy >= 0.95 with 100 labels per class after self-supervised pretraining.
Not yet measured on an accelerator; experiments/results/label_efficiency* has the CPU-scale
runs (tiny models, minutes of training), which show the mechanics, not the targets.
During training, `val/*` metrics (accuracy, auc_macro, auc_<class>) are computed on 2048
fresh validation lenses every `evals.val.every` steps and at the end.
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections

CLASS_NAMES = ("no_sub", "cdm", "axion")


def get_config(arg=None):
  arg = parse_arg(arg, variant="B/8", runlocal=False, mode="finetune")
  c = ml_collections.ConfigDict()
  c.task = "finetune"
  c.seed = 0
  c.init_from = ""  # The pretraining workdir (or checkpoints/<step>); '' = from scratch.

  c.data = common.sim_data("model_ii", runlocal=arg.runlocal)
  # Must equal the pretraining run's config.model (dtype and remat may differ).
  c.model = dict(name="vit", variant=arg.variant, pool="cls", dtype="bfloat16", remat=False)
  c.objective = dict(name="classify", num_classes=3, class_names=CLASS_NAMES,
                     head_hidden=0, head_zero_init=True, feature_norm="batch",
                     label_smoothing=0.)
  c.objective.update(positive_class="", class_weights="")  # classify.py says what they do.

  c.batch_size = 256
  c.total_steps = 20_000
  c.optim = common.adamw(1e-3, 1_000, min_lr=1e-6, weight_decay=0.05, layer_decay=0.75,
                         freeze="")
  c.evals = dict(val=dict(type="downstream", every=2_000, split="validation",
                          num_examples=2048, plots_dir="plots"))
  c.knn = dict(k=20, temperature=0.07, num_train_examples=4096, num_test_examples=2048)
  common.downstream_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.model = common.runlocal_vit()
    c.batch_size = 64
    c.total_steps = 150
    c.optim.update(base_lr=2e-3, warmup_steps=15)
    c.evals.val.update(every=50, num_examples=256)
    c.knn.update(num_train_examples=512, num_test_examples=256)
  common.apply_mode(c, arg.mode, arg.runlocal)
  return c
