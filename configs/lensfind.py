r"""Lens finding: lensed vs. non-lensed scenes (label 1 = lensed), from a pretrained encoder.

Data: the simulator's 'lensfind' recipe (Euclid VIS-like, 64x64; every scene has a lens
galaxy, half of the non-lensed ones an unlensed background galaxy too), made on the
accelerator. The objective is 'classify' with two classes; evaluation adds what lens
searches quote: ROC AUC and the true-positive rate at 1% and 0.1% false positives
(tpr_at_fpr_0.01, tpr_at_fpr_0.001), with a log-scale ROC figure.

  python -m lensfm.main --config=configs/lensfind.py --config.init_from=workdirs/mae_vit_b \
      --workdir=workdirs/lensfind
Modes `:mode=finetune|linear|scratch|resnet|knn` (see configs/common.py).
On a laptop CPU (a minute or two, 32x32 images; needs configs/mae_vit_b.py:runlocal first):
  python -m lensfm.main --config=configs/lensfind.py:runlocal \
      --config.init_from=/tmp/lensfm_mae --workdir=/tmp/lensfm_lensfind
  python -m lensfm.main --config=configs/evaluate.py --config.checkpoint=/tmp/lensfm_lensfind \
      --config.num_examples=20000 --workdir=/tmp/lensfm_lensfind_eval
(TPR at 0.1% FPR needs well over 1,000 negatives to mean anything: evaluate on >= 20k.)

What it should reach: no target is set; the lensed/unlensed contrast of this recipe
is strong (arcs around every lens), so AUC close to 1 is expected at accelerator scale.
See experiments/results/downstream_* for the CPU-scale runs.
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, variant="B/8", runlocal=False, mode="finetune")
  c = ml_collections.ConfigDict()
  c.task = "finetune"
  c.seed = 0
  c.init_from = ""

  c.data = common.sim_data("lensfind", runlocal=arg.runlocal)
  c.model = dict(name="vit", variant=arg.variant, pool="cls", dtype="bfloat16", remat=False)
  c.objective = dict(name="classify", num_classes=2, class_names=("non_lensed", "lensed"),
                     head_hidden=0, head_zero_init=True, feature_norm="batch",
                     label_smoothing=0.)
  c.objective.update(positive_class="", class_weights="")  # classify.py says what they do.

  c.batch_size = 256
  c.total_steps = 10_000
  c.optim = common.adamw(1e-3, 500, min_lr=1e-6, weight_decay=0.05, layer_decay=0.75,
                         freeze="")
  c.evals = dict(val=dict(type="downstream", every=2_000, split="validation",
                          num_examples=8192, plots_dir="plots"))
  c.knn = dict(k=20, temperature=0.07, num_train_examples=4096, num_test_examples=4096)
  common.downstream_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.model = common.runlocal_vit()
    c.batch_size = 64
    c.total_steps = 150
    c.optim.update(base_lr=2e-3, warmup_steps=15)
    c.evals.val.update(every=50, num_examples=512)
    c.knn.update(num_train_examples=512, num_test_examples=512)
  common.apply_mode(c, arg.mode, arg.runlocal)
  return c
