"""Task 'evaluate': a fine-tuned checkpoint on a dataset -> WORKDIR/summary.json + figures.

  python -m lensfm.main --config=configs/evaluate.py --config.checkpoint=FINETUNED_WORKDIR \
      --workdir=DIR [--config.data.name=deeplense/model_ii --config.data.manual_dir=FILES]

The checkpoint's own config says what the model is (backbone, head, objective, class
names, regression statistics) and, by default, what data it was trained on; evaluation
then uses the held-out `split` of that data. `config.data` fields that are set replace
the checkpoint's: giving `name` switches to that TFDS dataset ('deeplense/model_ii',
'lensfm_sim/model_ii', ...), and with `manual_dir` the dataset is built from the files
there on first use (`lensfm.data.build.ensure_built`; later runs reuse the build). Images
of any size and pixel scale are mapped onto the checkpoint's grid (config.data.image_size
x pixel_scale, `lensfm.data.grid`); the data's scale comes from the recipe or the dataset's
metadata, or `source_pixel_scale`. Channels must match (a ValueError names both).
Super-resolution checkpoints can also be evaluated on paired files: `data.hr` and
`data.lr` (a file, directory or glob each; .npy or FITS), paired by file name; HR images
at `source_pixel_scale` (default the model's) and LR images covering the same field are
mapped onto the model's HR and LR grids, then both normalised by the map that normalises
the HR image (`Normalization.normalize_like`), so a pair keeps its relative brightness.

Writes WORKDIR/summary.json (every metric of the task, see `objectives.reports`; plus
the confusion matrix, the checkpoint, its step, the data, the device and the JAX version),
WORKDIR/config.json and the task's PNG figures in WORKDIR (ROC curves, confusion matrix,
regression scatter, SR triptychs).

config fields:
  task: 'evaluate'.
  checkpoint: the fine-tuned workdir (or a checkpoints/<step> directory); `init_from`
    is its older spelling.
  split: default 'test' (a TFDS dataset without one falls back to 'validation').
  num_examples: simulated examples to evaluate on (default 4096); for a TFDS split an
    optional cap (0: the whole split).
  batch_size: global batch, divisible by the devices of `mesh`.
  seed: the simulator's stream; TFDS splits do not depend on it.
  mesh: the device mesh.
  data: overrides of the checkpoint's config.data: source, name, manual_dir,
    data_dir, recipe ('' = keep the checkpoint's); hr and lr for paired SR files.
  plots: write figures (default True).
"""
import os
import time

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from lensfm.data import eval_input
from lensfm.data import grid as grid_lib
from lensfm.data import image_files
from lensfm.data import model_input
from lensfm.data import pipeline
from lensfm import errors
from lensfm.evaluators import common
from lensfm.objectives import reports
from lensfm.train import contract
from lensfm.train import sharding as sharding_lib
from lensfm.train import writer as writer_lib
from lensfm import utils

_OVERRIDABLE = ("source", "name", "manual_dir", "data_dir", "recipe", "hr", "lr",
                "source_pixel_scale", "label", "targets", "bands", "hdu", "skip_bad",
                "require_labels")
_MODEL_GRID = ("image_size", "pixel_scale")
PAIRS = "pairs"


def merged_data_config(trained_data, overrides) -> ml_collections.ConfigDict:
  """The checkpoint's data config with the set (non-empty) overrides applied."""
  data = utils.as_dict(trained_data)
  given = {k: v for k, v in utils.as_dict(overrides or {}).items()
           if v not in ("", None) and not (k in _MODEL_GRID + ("source_pixel_scale",)
                                           and not v)}
  grid = sorted(set(given) & set(_MODEL_GRID))
  if grid:
    raise errors.UserError(
        f"config.data.{grid[0]} is the checkpoint's model grid ({data.get('image_size')} px "
        f"at {data.get('pixel_scale') or 'the default'} arcsec/px) and cannot change for "
        "evaluation: images of any size and pixel scale are mapped onto it. Drop the "
        "override; give the data's own pixel scale with config.data.source_pixel_scale "
        "if they do not declare it.")
  unknown = sorted(set(given) - set(_OVERRIDABLE))
  if unknown:
    raise errors.UserError(f"config.data fields {unknown} cannot be overridden for evaluation; "
                           f"the overridable ones are {list(_OVERRIDABLE)}.")
  if "name" in given and "source" not in given:
    given["source"] = "tfds"
  if ("hr" in given or "lr" in given) and "source" not in given:
    given["source"] = PAIRS
  data.update(given)
  return ml_collections.ConfigDict(data)


def paired_files(data_config) -> list[tuple[str, str]]:
  """(HR path, LR path) pairs: files of `hr` and `lr` with the same name (extension aside)."""
  if not data_config.get("hr", "") or not data_config.get("lr", ""):
    raise errors.UserError("Paired super-resolution evaluation needs both config.data.hr and "
                           "config.data.lr (a file, directory or glob each).")
  lr_by_name = {image_files.image_name(p): p for p in image_files.expand_inputs(data_config.lr)}
  hr = image_files.expand_inputs(data_config.hr)
  pairs = [(p, lr_by_name[image_files.image_name(p)]) for p in hr
           if image_files.image_name(p) in lr_by_name]
  if not pairs:
    raise errors.UserError(f"No HR file of config.data.hr={data_config.hr!r} has an LR file of the "
                           f"same name in config.data.lr={data_config.lr!r}.")
  if len(pairs) < len(hr):
    print(f"Evaluating {len(pairs)} of {len(hr)} HR files (the others have no LR file of "
          "the same name).", flush=True)
  return pairs


def paired_batches(data_config, objective, checkpoint, batch_size: int, sharding):
  """Batches {'image': HR, 'image_lr': LR, 'mask'} from paired files, each mapped onto its
  grid; both images of a pair are normalised by the HR image's map."""
  factor = objective.paired_lr_factor
  if factor is None:
    raise errors.UserError("config.data.hr/lr (paired files) are for super-resolution "
                           f"checkpoints; this one is a {objective.task} model.")
  grid, normalization = checkpoint.grid, checkpoint.normalization
  lr_grid = grid.scaled(factor)
  hr_scale = float(data_config.get("source_pixel_scale", 0.) or grid.pixel_scale)
  pairs = paired_files(data_config)
  for start in range(0, len(pairs), batch_size):
    chunk = pairs[start:start + batch_size]
    hr = np.zeros((batch_size, grid.size, grid.size, grid.channels), np.float32)
    lr = np.zeros((batch_size, lr_grid.size, lr_grid.size, grid.channels), np.float32)
    for i, (hr_path, lr_path) in enumerate(chunk):
      h = image_files.read_image(hr_path, size=None, channels=grid.channels)
      l = image_files.read_image(lr_path, size=None, channels=grid.channels)
      lr_scale = hr_scale * h.shape[1] / l.shape[1]  # The pair covers one field.
      h = grid_lib.map_images(h[None], hr_scale, grid.size, grid.pixel_scale)[0]
      l = grid_lib.map_images(l[None], lr_scale, lr_grid.size, lr_grid.pixel_scale)[0]
      hr[i], lr[i] = normalization.normalize_like(h, h), normalization.normalize_like(l, h)
    mask = np.arange(batch_size) < len(chunk)
    yield {k: jax.device_put(v, sharding) for k, v in
           (("image", hr), ("image_lr", lr), ("mask", mask))}


def describe_data(data_config) -> str:
  if data_config.get("source") == PAIRS:
    return f"pairs:{data_config.hr}|{data_config.lr}"
  if data_config.get("source") == "tfds":
    return str(data_config.name)
  overrides = utils.as_dict(data_config.get("recipe_overrides", {}) or {})
  return f"sim:{data_config.get('recipe')}" + (f" {overrides}" if overrides else "")


def input_batches(config, checkpoint, objective, data_config, sharding):
  """(batches, number of batches or None) of what evaluation scores."""
  if data_config.get("source") == PAIRS:
    return paired_batches(data_config, objective, checkpoint, config.batch_size, sharding), None
  return eval_input.make_eval_input(data_config, split=config.split,
                                    batch_size=config.batch_size, sharding=sharding,
                                    seed=config.seed, num_examples=config.num_examples)


def labels_in_model_classes(labels, model_names, data_config, class_map: str):
  """The data's labels as the model's class indices (folders 'lens' / 'nonlens' scored by
  a model of 'non_lensed' / 'lensed'); unlabelled (-1) stay so."""
  if data_config.get("source") != "tfds":
    return labels
  data_names = model_input.describe(data_config).class_names
  mapping = model_input.match_classes(model_names, data_names, class_map)
  if mapping is None:
    return labels
  if jax.process_index() == 0:
    pairs = ", ".join(f"{d} -> {model_names[m]}" for d, m in zip(data_names, mapping))
    print(f"Classes of the data as the model's: {pairs} (--config.class_map to say "
          f"otherwise).", flush=True)
  labels = np.asarray(labels)
  return np.where(labels >= 0, mapping[np.clip(labels, 0, None)], labels)


def run(config, workdir: str) -> dict:
  start = time.time()
  checkpoint = contract.resolve(contract.trained_model_ref(config, "evaluate"))
  trained, objective = checkpoint.downstream("evaluate")
  data_config = merged_data_config(checkpoint.config.data, config.data)
  if data_config.get("source") == "tfds":
    pipeline.build_if_needed(data_config)  # Files given with manual_dir: built on first use.

  mesh = sharding_lib.make_mesh(config.mesh)
  if config.batch_size % sharding_lib.data_parallel_size(mesh):
    raise errors.UserError(f"config.batch_size={config.batch_size} must be divisible by the "
                           f"{sharding_lib.data_parallel_size(mesh)} devices of the mesh.")
  source, num_batches = input_batches(config, checkpoint, objective, data_config,
                                      sharding_lib.batch_sharding(mesh))
  params, extra = jax.device_put((trained.params, trained.extra), NamedSharding(mesh, P()))
  try:
    with jax.set_mesh(mesh):
      outputs, first = common.collect(jax.jit(objective.eval_outputs), params, extra, source,
                                      num_batches)
      pictures = jax.device_get(jax.jit(objective.pictures)(params, extra, first))
  finally:
    if data_config.get("source") != PAIRS:
      source.close()
  if objective.task == "classification":
    outputs["label"] = labels_in_model_classes(outputs["label"], objective.class_names,
                                               data_config, config.get("class_map", ""))
  result, details = objective.summarize(outputs)

  summary = {**reports.json_safe(result), **reports.json_details(details),
             "task": objective.task, "checkpoint": trained.path,
             "checkpoint_step": trained.step, "data": describe_data(data_config),
             "split": "files" if data_config.get("source") == PAIRS else config.split,
             "device_kind": jax.devices()[0].device_kind,
             "jax_version": jax.__version__, "seconds": time.time() - start}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    if config.plots:
      summary["plots"] = objective.plots(result, details, pictures, common.figure_path(workdir))
      writer_lib.log_pictures(workdir, trained.step, summary["plots"])
    utils.write_json_atomically(os.path.join(workdir, "config.json"), config.to_dict())
    utils.write_json_atomically(os.path.join(workdir, "summary.json"), summary)
    print(format_summary(summary), flush=True)
  return summary


def format_summary(summary: dict) -> str:
  scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float))
             and k not in ("checkpoint_step", "seconds")}
  lines = [f"Evaluated {summary['checkpoint']} (step {summary['checkpoint_step']}) on "
           f"{summary['data']} {summary['split']}:"]
  lines += [f"  {k}: {v:.6g}" if isinstance(v, float) else f"  {k}: {v}"
            for k, v in scalars.items()]
  return "\n".join(lines)
