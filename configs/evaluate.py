r"""Evaluation of a fine-tuned checkpoint: WORKDIR/summary.json with every metric + PNGs.

By default the checkpoint's own data, held-out split ('test'):
  python -m lensfm.main --config=configs/evaluate.py --config.checkpoint=FINETUNED_WORKDIR \
      --workdir=DIR
On the released DeepLense files (the TFDS dataset is built from the directory on first
use, then reused; images of any size and pixel scale, e.g. Model I's 150x150 at 0.05"/px,
are mapped onto the checkpoint's grid):
  python -m lensfm.main --config=configs/evaluate.py --config.checkpoint=FINETUNED_WORKDIR \
      --config.data.name=deeplense/model_ii --config.data.manual_dir=DEEPLENSE_DIR \
      [--config.data.data_dir=TFDS_DIR] --workdir=DIR
A super-resolution checkpoint on paired files (matched by file name; LR of 1/scale size):
  python -m lensfm.main --config=configs/evaluate.py --config.checkpoint=SR_WORKDIR \
      --config.data.hr='hr/*.npy' --config.data.lr='lr/*.npy' --workdir=DIR
On a laptop CPU: `configs/evaluate.py:runlocal` (1024 simulated examples, batch 64).

summary.json: classification: accuracy, auc_macro, auc_<class>, confusion_matrix (and
auc, tpr_at_fpr_0.01, tpr_at_fpr_0.001 for lens finding); regression: mae_/rmse_/r2_/
num_<target>; super-resolution: psnr, ssim, psnr_bicubic, ssim_bicubic, psnr_gain_db.
Plus checkpoint, checkpoint_step, data, split, device_kind, jax_version. Figures: roc.png
(roc_log.png), confusion_matrix.png, scatter_<target>.png, sr_triptych.png,
sr_vs_bicubic.png. Fields: see lensfm/tasks/evaluate.py.
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "evaluate"
  c.checkpoint = ""  # The fine-tuned workdir (or checkpoints/<step>) to evaluate.
  c.init_from = ""  # Its older spelling (deprecated).
  c.split = "test"
  # 'data=model,...': which of the checkpoint's classes each of the data's classes is
  # ('' = matched by name, e.g. folders lens/nonlens to lensed/non_lensed).
  c.class_map = ""
  c.num_examples = 1024 if arg.runlocal else 8192  # Simulated data; a cap for TFDS (0: all).
  c.batch_size = 64 if arg.runlocal else 256
  c.seed = 0
  c.mesh = (("data", -1), ("fsdp", 1))
  # Overrides of the checkpoint's config.data ('' keeps the checkpoint's value).
  # source_pixel_scale: arcsec/pixel of the data when they do not say it (0: their own).
  # image_size / pixel_scale are the checkpoint's model grid and cannot change: any image
  # size is mapped onto it (they exist only to explain that when set).
  c.data = dict(source="", name="", manual_dir="", data_dir="", recipe="", hr="", lr="",
                source_pixel_scale=0., image_size=0, pixel_scale=0., **common.files_fields())
  c.plots = True
  return c
