"""Task 'predict': a fine-tuned checkpoint on your own .npy / FITS images -> a CSV.

  python -m lensfm.main --config=configs/predict.py --config.init_from=FINETUNED_WORKDIR \
      --config.inputs='my_lenses/*.fits' --workdir=DIR

One row per readable image, in file order: `file`, then the task's columns:
  classification: prob_<class> for every class and predicted_class;
  regression: one column per target, in physical units (e.g. log10_axion_mass);
  super-resolution: sr_file, the path of the SR image written as DIR/superres/<name>_sr.npy
    (in the normalised units of the input LR image).
Images are normalised exactly as the training data were (config.data.normalize of the
checkpoint) and must have the model's input size: config.data.image_size of the
checkpoint, or image_size / scale (the LR size) for super-resolution. Files that cannot
be used (unreadable, truncated, wrong shape, NaN pixels, pickles without allow_pickle)
are skipped, each named with the reason on the console and in
DIR/predictions_skipped.csv; the count is in DIR/predict_summary.json.

config fields:
  task: 'predict'.
  init_from: the fine-tuned workdir (or checkpoints/<step>).
  inputs: a file, a directory, a glob, or several separated by commas.
  output: the CSV path (default WORKDIR/predictions.csv).
  batch_size: images per forward pass (default 64; padded to a multiple of the devices).
  allow_pickle: read pickled .npy files (default False: pickles can run code).
  hdu: FITS extension to read (default -1: the first one holding an image).
  norm_stats: JSON '{"mean": [C values], "std": [C values]}' when the checkpoint used
    normalize='standardize' and its statistics cannot be recomputed (its TFDS dataset is
    not on this machine); '' (default) otherwise.
  progress_bar: default True.
  mesh: default (('data', -1), ('fsdp', 1)).
"""
import csv
import json
import os
import time

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from lensfm.data import pipeline
from lensfm.data import sim_source
from lensfm.data import transforms
from lensfm.tasks import image_files
from lensfm.train import checkpoint as ckpt_lib
from lensfm.train import loading
from lensfm.train import sharding as sharding_lib


def normalization_stats(data_config, override=None):
  """Statistics for normalize='standardize', as the training input computed them."""
  if data_config.get("normalize", transforms.DEFAULT_NORMALIZE) != "standardize":
    return None
  if isinstance(override, str):
    override = json.loads(override) if override.strip() else None
  given = override or data_config.get("norm_stats", None)
  if given:
    return dict(given)
  source = data_config.get("source", None)
  if source in ("sim", "sim_pool"):
    return sim_source.normalization_stats(data_config, sim_source.get_recipe(data_config))
  try:
    path = pipeline.find_dataset_dir(data_config.name, data_config.get("data_dir", None))
    return pipeline.normalization_stats(data_config, tfds.builder_from_directory(path).info)
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(f"The checkpoint normalises with 'standardize' using the statistics of "
                     f"{data_config.get('name')!r}, which cannot be read here ({e}). Set "
                     "config.norm_stats={'mean': [...], 'std': [...]}.") from None


def read_batches(paths, batch_size, read, skipped, progress):
  """Yields (names, images [n, H, W, C]) of up to batch_size readable files."""
  names, images = [], []
  for path in progress(paths):
    try:
      images.append(read(path))
      names.append(path)
    except image_files.UnreadableImage as e:
      skipped.append((path, str(e)))
      print(f"Skipping unreadable image: {e}", flush=True)
    if len(images) == batch_size:
      yield names, np.stack(images)
      names, images = [], []
  if images:
    yield names, np.stack(images)


def run(config, workdir: str) -> dict:
  if not config.get("init_from", ""):
    raise ValueError("config.init_from must name the fine-tuned workdir (or checkpoint).")
  start = time.time()
  paths = image_files.expand_inputs(config.get("inputs", ""))
  trained, objective = loading.load_downstream(config.init_from, "predict")
  data_config = trained.config.data
  size = objective.input_size(int(data_config.image_size))
  channels = int(data_config.get("channels", 1))
  hdu = int(config.get("hdu", -1))
  read = lambda p: image_files.read_image(p, size=size, channels=channels,
                                          allow_pickle=bool(config.get("allow_pickle", False)),
                                          hdu=None if hdu < 0 else hdu)
  transform = transforms.make_transform(
      data_config.get("normalize", transforms.DEFAULT_NORMALIZE), (),
      normalization_stats(data_config, config.get("norm_stats", None)))

  mesh = sharding_lib.make_mesh(config.get("mesh", (("data", -1), ("fsdp", 1))))
  devices = sharding_lib.data_parallel_size(mesh)
  batch_size = -(-int(config.get("batch_size", 64)) // devices) * devices
  data_sharding = sharding_lib.batch_sharding(mesh)
  params, extra = jax.device_put((trained.params, trained.extra), NamedSharding(mesh, P()))

  @jax.jit
  def predict(params, extra, images):
    # Normalisation takes no randomness: one key serves every example.
    keys = jax.random.split(jax.random.key(0), images.shape[0])
    return objective.predict(params, extra, jax.vmap(transform)(keys, images))

  os.makedirs(workdir, exist_ok=True)
  output = config.get("output", "") or os.path.join(workdir, "predictions.csv")
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  progress = lambda xs: xs
  if config.get("progress_bar", True):
    progress = lambda xs: tqdm(xs, unit="image", dynamic_ncols=True, mininterval=1.0)
  skipped, num_written = [], 0
  tmp = f"{output}.tmp-{os.getpid()}"
  with open(tmp, "w", newline="") as f, jax.set_mesh(mesh):
    writer = csv.writer(f)
    writer.writerow(["file"] + objective.output_columns())
    for names, images in read_batches(paths, batch_size, read, skipped, progress):
      n = len(names)
      padded = np.zeros((batch_size,) + images.shape[1:], np.float32)
      padded[:n] = images
      outputs = jax.device_get(predict(params, extra, jax.device_put(padded, data_sharding)))
      outputs = {k: np.asarray(v)[:n] for k, v in outputs.items()}
      rows = objective.output_rows(outputs, [image_files.image_name(p) for p in names],
                                   os.path.join(workdir, "superres"))
      writer.writerows([name] + row for name, row in zip(names, rows))
      num_written += n
  os.replace(tmp, output)

  summary = {"output": output, "num_images": num_written, "num_skipped": len(skipped),
             "skipped": [p for p, _ in skipped], "checkpoint": trained.path,
             "checkpoint_step": trained.step, "seconds": time.time() - start}
  if skipped:
    with open(os.path.join(workdir, "predictions_skipped.csv"), "w", newline="") as f:
      csv.writer(f).writerows([("file", "reason")] + skipped)
    print(f"Skipped {len(skipped)} of {len(paths)} files (listed in "
          f"{os.path.join(workdir, 'predictions_skipped.csv')}).", flush=True)
  if not num_written:
    raise ValueError(f"None of the {len(paths)} input files could be read; first problems: "
                     + "; ".join(r for _, r in skipped[:3]))
  ckpt_lib.write_json_atomically(os.path.join(workdir, "predict_summary.json"), summary)
  print(f"Wrote {num_written} predictions to {output}.", flush=True)
  return summary
