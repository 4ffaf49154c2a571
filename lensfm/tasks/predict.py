"""Task 'predict': a fine-tuned checkpoint on your own .npy / FITS images -> a CSV.

  python -m lensfm.main --config=configs/predict.py --config.checkpoint=FINETUNED_WORKDIR \
      --config.inputs='my_lenses/*.fits' --workdir=DIR

`inputs` may instead be one CSV catalogue, in the format of the `files` dataset
(lensfm/data/builders/files_source.py): a `path` column (relative to the catalogue) or
`path_<band>` columns (one file per band, stacked in the order of config.data.bands, else
the checkpoint's bands when the catalogue has a column for each, else the columns'), and
any other columns (label, split, ids, RA/Dec, ...), which the output keeps.

One row per readable image, in file (or catalogue) order within each image size (sizes
are batched apart): `file` (for a catalogue its path cell(s) as written, ';'-joined for
bands), then a catalogue's other columns as written, then the task's columns, then
`flag`:
  classification: prob_<class> for every class and predicted_class;
  regression: one column per target, in physical units (e.g. log10_axion_mass);
  super-resolution: sr_file, the path of the SR image written as DIR/superres/<name>_sr.npy
    (in the units of the input LR file: the normalisation is undone);
  flag: '' for an unremarkable image, else what is doubtful: a suspicious input (NaN or
    infinite pixels, an all-zero or constant image: no confident class or value is
    given for it, the task's columns stay empty) or a doubtful answer (a regression
    value outside the range seen in training), from the objective's `output_flags`.
Images of any size are mapped onto the model's grid (config.data.image_size x pixel_scale
of the checkpoint; for super-resolution its LR grid, image_size / scale pixels at
pixel_scale x scale) and normalised exactly as the training data were, by the path every
task takes (`lensfm.data.model_input.array_batches`). A file's pixel
scale is a catalogue row's `pixel_scale` cell if it has one, else config.pixel_scale if
set, else its FITS WCS, else assumed to be the model's (said once on the console). Files
that cannot be used (missing, unreadable, truncated, not an image, pickles without
allow_pickle; for a catalogue row, any of its band files) are skipped, each named with
the reason on the console and in DIR/predictions_skipped.csv; the counts are in
DIR/predict_summary.json. A catalogue's own mistakes (no path column, an empty path cell,
a bad split or pixel_scale cell) are an error naming its line.

The three outputs are one set: each is written to a temporary file and renamed into
place only when all are complete, the summary last (it holds the SHA-256 of the two
CSVs, so a set can be checked); a run without skipped files removes an older
predictions_skipped.csv. A run that can read no image writes nothing: the previous
results stay as they were (and it says so).

config fields:
  task: 'predict'.
  checkpoint: the fine-tuned workdir (or checkpoints/<step>); `init_from` is its older
    spelling.
  inputs: a file, a directory, a glob, or several separated by commas; or one CSV
    catalogue.
  data.bands: the band order of a catalogue's path_<band> columns (e.g. 'g,r,i').
  output: the CSV path (default WORKDIR/predictions.csv).
  batch_size: images per forward pass (padded to a multiple of the devices).
  allow_pickle: read pickled .npy files (pickles can run code).
  hdu: FITS extension to read (-1: the first one holding an image).
  pixel_scale: arcsec/pixel of the input files (0: FITS WCS, else the model's; a
    catalogue's pixel_scale cells come first).
  norm_stats: JSON '{"mean": [C values], "std": [C values]}' when the checkpoint used
    normalize='standardize' and its statistics cannot be recomputed (its TFDS dataset is
    not on this machine); '' otherwise.
  progress_bar, mesh.
"""
import csv
import dataclasses
import hashlib
import json
import os
import time
from typing import Optional

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
from tqdm import tqdm

from lensfm.data import image_files
from lensfm.data import model_input
from lensfm.data.builders import files_source
from lensfm import errors
from lensfm.train import contract
from lensfm.train import sharding as sharding_lib
from lensfm import utils


def read_batches(items, batch_size, read, skipped, progress, name=str):
  """Yields (items, images [n, H, W, C], pixel scale) of up to batch_size readable items
  (files or catalogue rows) of one shape and scale (others wait in their own group);
  an unreadable item is appended to `skipped` as (name(item), reason)."""
  groups = {}
  for item in progress(items):
    try:
      image, scale = read(item)
    except image_files.UnreadableImage as e:
      skipped.append((name(item), str(e)))
      print(f"Skipping unreadable image: {e}", flush=True)
      continue
    members, images = groups.setdefault((image.shape, scale), ([], []))
    members.append(item)
    images.append(image)
    if len(images) == batch_size:
      yield members, np.stack(images), scale
      del groups[(image.shape, scale)]
  for (_, scale), (members, images) in groups.items():
    yield members, np.stack(images), scale


@dataclasses.dataclass
class Inputs:
  """What predict reads: files (`items` are paths) or a catalogue's rows (`items` are
  files_source.Row), and the catalogue columns each output row keeps."""
  items: list
  catalogue: str = ""
  kept_columns: list = dataclasses.field(default_factory=list)

  def name(self, item) -> str:
    """The output's `file`: the path, or the catalogue's path cell(s) as written."""
    return item.filename if self.catalogue else item

  def first_file(self, item) -> str:
    return item.files[0] if self.catalogue else item

  def kept_cells(self, item) -> list:
    return [item.cells[c] for c in self.kept_columns] if self.catalogue else []


def catalogue_in(inputs) -> str:
  """The CSV catalogue config.inputs names ('' if none); a catalogue is read alone."""
  specs = ([s.strip() for s in inputs.split(",") if s.strip()] if isinstance(inputs, str)
           else [str(s) for s in inputs])
  catalogues = [s for s in specs if files_source.is_catalogue(os.path.expanduser(s))]
  if catalogues and len(specs) > 1:
    raise errors.UserError(f"config.inputs={','.join(specs)}: a CSV catalogue "
                           f"({catalogues[0]}) is read alone; expected one catalogue, or "
                           "files, directories and globs without one.")
  return os.path.expanduser(catalogues[0]) if catalogues else ""


def read_catalogue(path: str, config, checkpoint_bands=()) -> Inputs:
  """The rows of the CSV catalogue config.inputs names, in order, and the columns the
  output keeps (all but the file columns). path_<band> columns are stacked in the order
  of config.data.bands if set, else of the checkpoint's bands when the catalogue has a
  column for each (the order it was trained in), else of the columns."""
  given = config.get("data", {}).get("bands", "")
  bands = tuple(b.strip() for b in str(given or "").split(",") if b.strip())
  source = files_source.catalogue(path, label=None, targets=(), bands=bands,
                                  require_labels=False)
  if (not bands and checkpoint_bands and source.band_names
      and set(checkpoint_bands) <= set(source.band_names)
      and list(checkpoint_bands) != source.band_names):
    source = files_source.catalogue(path, label=None, targets=(),
                                    bands=tuple(checkpoint_bands), require_labels=False)
  return Inputs(source.rows, path, source.kept_columns())


def row_reader(read_file, channels: int):
  """fn(catalogue row) -> (float32 [H, W, C], arcsec/pixel of its first file or None):
  its one file, or its band files (one band each) stacked in the catalogue's band order."""

  def read(row):
    try:
      if len(row.files) == 1:
        return read_file(row.files[0], channels)
      if len(row.files) != channels:
        raise image_files.UnreadableImage(
            f"has {len(row.files)} band files; expected {channels}, the bands the "
            "checkpoint takes.")
      bands = [read_file(path, 1) for path in row.files]
    except image_files.UnreadableImage as e:
      raise image_files.UnreadableImage(f"{row.where}: {e}") from None
    sizes = sorted({image.shape[:2] for image, _ in bands})
    if len(sizes) > 1:
      raise image_files.UnreadableImage(f"{row.where}: its bands have sizes {sizes}; "
                                        "expected one size for every band.")
    return np.concatenate([image for image, _ in bands], axis=-1), bands[0][1]

  return read


def file_scale_resolver(given: float, model_scale: float):
  """fn(scale from the file or None) -> the scale to use: `given` if set, else the file's,
  else the model's (said once)."""
  told = []

  def resolve(from_file):
    if given:
      return float(given)
    if from_file:
      return float(from_file)
    if not told:
      told.append(True)
      print(f"Input files without a pixel scale (no config.pixel_scale, no FITS WCS) are "
            f"taken to be on the model's {model_scale:g} arcsec/pixel.", flush=True)
    return float(model_scale)

  return resolve


def checkpoint_band_names(checkpoint) -> tuple:
  """The bands the checkpoint was fine-tuned on, as its data named them (or none)."""
  names = checkpoint.config.data.get("band_names", "") or ""
  return tuple(b for b in str(names).split(",") if b)


def input_grid(checkpoint, objective) -> model_input.Grid:
  """The grid the model's input is on: the checkpoint's, or for a model that makes HR
  images from LR ones, its LR grid (the same field of view)."""
  grid = checkpoint.grid
  return grid.scaled(grid.size // objective.input_size(grid.size))


def given_stats(norm_stats) -> Optional[dict]:
  """config.norm_stats: '' or JSON {"mean": [...], "std": [...]}."""
  if not norm_stats or not str(norm_stats).strip():
    return None
  try:
    return json.loads(norm_stats) if isinstance(norm_stats, str) else dict(norm_stats)
  except json.JSONDecodeError as e:
    raise errors.UserError(f"config.norm_stats={norm_stats!r} is not JSON ({e}); expected "
                           '\'{"mean": [...], "std": [...]}\'.') from None


def model_batch(images, scale, grid, normalization, batch_size, sharding) -> dict:
  """One group of files' images (at most batch_size, one shape and scale) as a padded
  batch on the model grid: 'image' normalised, 'image_on_grid' before normalising."""
  clean = np.nan_to_num(images, nan=0., posinf=0., neginf=0.)
  return next(model_input.array_batches(
      {"image": clean}, src_scale=scale, grid=grid, normalization=normalization,
      batch_size=batch_size, sharding=sharding, keep_on_grid=True, what="predict inputs"))


def run(config, workdir: str) -> dict:
  start = time.time()
  ref = contract.trained_model_ref(config, "predict")
  catalogue = catalogue_in(config.inputs)
  # Files are named before any checkpoint is read; a catalogue once its bands are known.
  paths = None if catalogue else image_files.expand_inputs(config.inputs)
  checkpoint = contract.resolve(ref)
  trained, objective = checkpoint.downstream("predict")
  inputs = (Inputs(paths) if paths is not None else
            read_catalogue(catalogue, config, checkpoint_band_names(checkpoint)))
  grid = input_grid(checkpoint, objective)
  normalization = checkpoint.normalization_with(given_stats(config.norm_stats))
  hdu = int(config.hdu)
  resolve_scale = file_scale_resolver(float(config.pixel_scale or 0.), grid.pixel_scale)

  def read_file(path, channels):
    return image_files.read_image_and_scale(
        path, size=None, channels=channels, allow_pickle=bool(config.allow_pickle),
        hdu=None if hdu < 0 else hdu, allow_nonfinite=True)

  def read(item):
    if not inputs.catalogue:
      image, scale = read_file(item, grid.channels)
      return image, resolve_scale(scale)
    image, scale = row_reader(read_file, grid.channels)(item)
    return image, item.pixel_scale or resolve_scale(scale)  # A row's own cell first.

  mesh = sharding_lib.make_mesh(config.mesh)
  devices = sharding_lib.data_parallel_size(mesh)
  batch_size = -(-int(config.batch_size) // devices) * devices
  data_sharding = sharding_lib.batch_sharding(mesh)
  params, extra = jax.device_put((trained.params, trained.extra), NamedSharding(mesh, P()))
  to_input_units = jax.vmap(normalization.denormalize)

  @jax.jit
  def predict(params, extra, images, on_grid):
    outputs = objective.predict(params, extra, images)
    return objective.outputs_in_input_units(outputs, lambda v: to_input_units(v, on_grid))

  os.makedirs(workdir, exist_ok=True)
  output = config.output or os.path.join(workdir, "predictions.csv")
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  progress = lambda xs: xs
  if config.progress_bar:
    progress = lambda xs: tqdm(xs, unit="image", dynamic_ncols=True, mininterval=1.0)
  skipped, flagged, num_written = [], [], 0
  skipped_path = os.path.join(workdir, "predictions_skipped.csv")
  summary_path = os.path.join(workdir, "predict_summary.json")
  tmp = f"{output}.tmp-{os.getpid()}"
  try:
    with open(tmp, "w", newline="") as f, jax.set_mesh(mesh):
      writer = csv.writer(f)
      writer.writerow(["file"] + inputs.kept_columns + objective.output_columns() + ["flag"])
      for items, images, scale in read_batches(inputs.items, batch_size, read, skipped,
                                               progress, inputs.name):
        n = len(items)
        doubtful_inputs = [image_files.suspicious(image) for image in images]
        batch = model_batch(images, scale, grid, normalization, batch_size, data_sharding)
        outputs = jax.device_get(predict(params, extra, batch["image"], batch["image_on_grid"]))
        outputs = {k: np.asarray(v)[:n] for k, v in outputs.items()}
        rows = objective.output_rows(
            outputs, [image_files.image_name(inputs.first_file(i)) for i in items],
            os.path.join(workdir, "superres"))
        for item, row, doubtful_input, doubtful_answer in zip(
            items, rows, doubtful_inputs, objective.output_flags(outputs)):
          if doubtful_input and not objective.answers_suspicious_inputs:
            row = [""] * len(row)
            doubtful_answer = ""  # No answer, nothing to doubt about it.
          flag = "; ".join(x for x in (doubtful_input, doubtful_answer) if x)
          name = inputs.name(item)
          writer.writerow([name] + inputs.kept_cells(item) + row + [flag])
          if flag:
            flagged.append(name)
        num_written += n
  except BaseException:
    os.remove(tmp)  # An interrupted run leaves the previous results alone.
    raise
  if not num_written:
    os.remove(tmp)
    kept = [p for p in (output, skipped_path, summary_path) if os.path.exists(p)]
    raise errors.UserError(
        f"None of the {len(inputs.items)} input files could be read; first problems: "
        + "; ".join(r for _, r in skipped[:3]) + ". Nothing was written"
        + (f"; the previous results are kept ({', '.join(kept)})." if kept else "."))

  skipped_tmp = None
  if skipped:
    skipped_tmp = f"{skipped_path}.tmp-{os.getpid()}"
    with open(skipped_tmp, "w", newline="") as f:
      csv.writer(f).writerows([("file", "reason")] + skipped)
  summary = {"output": output, "num_images": num_written, "num_skipped": len(skipped),
             "skipped": [p for p, _ in skipped], "num_flagged": len(flagged),
             "flagged": flagged, "checkpoint": trained.path,
             "checkpoint_step": trained.step, "seconds": time.time() - start,
             "sha256": {output: _sha256(tmp)} | (
                 {skipped_path: _sha256(skipped_tmp)} if skipped_tmp else {})}
  summary_tmp = f"{summary_path}.tmp-{os.getpid()}"
  utils.write_json_atomically(summary_tmp, summary)
  # All three are complete: into place, the summary last.
  os.replace(tmp, output)
  if skipped_tmp:
    os.replace(skipped_tmp, skipped_path)
  elif os.path.exists(skipped_path):
    os.remove(skipped_path)  # An older run's list would contradict num_skipped: 0.
  os.replace(summary_tmp, summary_path)
  if skipped:
    print(f"Skipped {len(skipped)} of {len(inputs.items)} files (listed in {skipped_path}).",
          flush=True)
  print(f"Wrote {num_written} predictions to {output}"
        + (f"; {len(flagged)} flagged (see its flag column)." if flagged else "."), flush=True)
  return summary


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()
