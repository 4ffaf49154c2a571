r"""Predictions of a fine-tuned checkpoint on your own .npy or FITS images -> CSV.

  python -m lensfm.main --config=configs/predict.py --config.checkpoint=FINETUNED_WORKDIR \
      --config.inputs='my_lenses/*.fits' --workdir=DIR
`inputs` is a file, a directory, a glob, or several separated by commas; or one CSV
catalogue in the `files` dataset's format (`path` or `path_<band>` columns, relative to
the catalogue; `--config.data.bands=g,r,i` orders the bands; an optional `pixel_scale`
column, arcsec/pixel per row), whose other columns (ids, RA/Dec, label, split, ...) the
output keeps after `file`. DIR/predictions.csv
has one row per readable image: the file, then class probabilities and the predicted class
(classification), the regressed values in physical units (regression), or the path of the
SR image DIR/superres/<name>_sr.npy (super-resolution; give LR images; the SR image is
in the LR file's units), then `flag`: why an answer is doubtful (a NaN, all-zero or
constant image gets no answer; a regression value outside its training range is
marked). Unreadable or missing files (or not images) are skipped and named (console,
DIR/predictions_skipped.csv).
Images of any size (e.g. 64x64 or 150x150) are mapped onto the model's grid (its
image_size x pixel_scale) at their pixel scale: a catalogue row's `pixel_scale`, else
`--config.pixel_scale`, else the FITS WCS, else the model's; then normalised like its
training data.
On a laptop CPU `:runlocal` only lowers the batch size.
"""
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = "predict"
  c.checkpoint = ""  # The fine-tuned workdir (or checkpoints/<step>) to predict with.
  c.init_from = ""  # Its older spelling (deprecated).
  c.inputs = ""  # Files, directories, globs (comma-separated), or one CSV catalogue.
  c.data = ml_collections.ConfigDict(dict(bands=""))  # A catalogue's band order: 'g,r,i'.
  c.output = ""  # Default WORKDIR/predictions.csv.
  c.batch_size = 16 if arg.runlocal else 64
  c.allow_pickle = False  # Pickled .npy files can run code: only for files you trust.
  c.hdu = -1  # FITS extension; -1 = the first holding an image.
  c.pixel_scale = 0.  # arcsec/pixel of the files; 0 = their FITS WCS, else the model's.
  c.norm_stats = ""  # JSON {"mean": [...], "std": [...]}, only for 'standardize' checkpoints.
  c.progress_bar = True
  c.mesh = (("data", -1), ("fsdp", 1))
  return c
