"""Task 'evaluate': a fine-tuned checkpoint on a dataset -> WORKDIR/summary.json + figures.

  python -m lensfm.main --config=configs/evaluate.py --config.init_from=FINETUNED_WORKDIR \
      --workdir=DIR [--config.data.name=deeplense/model_ii --config.data.manual_dir=FILES]

The checkpoint's own config says what the model is (backbone, head, objective, class
names, regression statistics) and, by default, what data it was trained on; evaluation
then uses the held-out `split` of that data. `config.data` fields that are set replace
the checkpoint's: giving `name` switches to that TFDS dataset ('deeplense/model_ii',
'lensfm_sim/model_ii', ...), and with `manual_dir` the dataset is built from the files
there on first use (`lensfm.data.build.ensure_built`; later runs reuse the build). The
images must have the checkpoint's size and channels (a ValueError names both).

Writes WORKDIR/summary.json (every metric of the task, see `reports`; plus the confusion
matrix, the checkpoint, its step, the data, the device and the JAX version),
WORKDIR/config.json and the task's PNG figures in WORKDIR (ROC curves, confusion matrix,
regression scatter, SR triptychs).

config fields:
  task: 'evaluate'.
  init_from: the fine-tuned workdir (or a checkpoints/<step> directory).
  split: default 'test' (a TFDS dataset without one falls back to 'validation').
  num_examples: simulated examples to evaluate on (default 4096); for a TFDS split an
    optional cap (0: the whole split).
  batch_size: global batch (default 256), divisible by the devices of `mesh`.
  seed: the simulator's stream (default 0); TFDS splits do not depend on it.
  mesh: default (('data', -1), ('fsdp', 1)).
  data: overrides of the checkpoint's config.data: source, name, manual_dir,
    data_dir, recipe ('' = keep the checkpoint's).
  plots: write figures (default True).
"""
import os
import time

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections

from lensfm import models
from lensfm import objectives
from lensfm.evaluate import eval_data
from lensfm.evaluate import label_pool
from lensfm.evaluate import reports
from lensfm.evaluate import restore
from lensfm.train import checkpoint as ckpt_lib
from lensfm.train import sharding as sharding_lib

_OVERRIDABLE = ("source", "name", "manual_dir", "data_dir", "recipe")


def merged_data_config(trained_data, overrides) -> ml_collections.ConfigDict:
  """The checkpoint's data config with the set (non-empty) overrides applied."""
  data = eval_data.as_dict(trained_data)
  given = {k: v for k, v in eval_data.as_dict(overrides or {}).items() if v not in ("", None)}
  unknown = sorted(set(given) - set(_OVERRIDABLE))
  if unknown:
    raise ValueError(f"config.data fields {unknown} cannot be overridden for evaluation; "
                     f"the overridable ones are {list(_OVERRIDABLE)}.")
  if "name" in given and "source" not in given:
    given["source"] = "tfds"
  data.update(given)
  return ml_collections.ConfigDict(data)


def build_if_needed(data_config) -> None:
  """TFDS data given with manual files are built on first use (then reused)."""
  if data_config.get("source") != "tfds" or not data_config.get("manual_dir", ""):
    return
  from lensfm.data import build  # pylint: disable=g-import-not-at-top
  result = build.ensure_built(data_config.name, data_config.get("data_dir", "") or None,
                              manual_dir=data_config.manual_dir)
  print(result.summary(), flush=True)


def describe_data(data_config) -> str:
  if data_config.get("source") == "tfds":
    return str(data_config.name)
  overrides = eval_data.as_dict(data_config.get("recipe_overrides", {}) or {})
  return f"sim:{data_config.get('recipe')}" + (f" {overrides}" if overrides else "")


def load_model(path: str, what: str):
  """(trained, objective) for a fine-tuned checkpoint."""
  label_pool.register_source()  # Its config may name the labelled pool source.
  trained = restore.load_trained(path)
  restore.check_downstream(trained, what)
  model = models.get_model(trained.config.model)
  return trained, objectives.get_objective(trained.config, model)


def run(config, workdir: str) -> dict:
  if not config.get("init_from", ""):
    raise ValueError("config.init_from must name the fine-tuned workdir (or checkpoint) to "
                     "evaluate.")
  start = time.time()
  trained, objective = load_model(config.init_from, "evaluate")
  data_config = merged_data_config(trained.config.data, config.get("data", None))
  build_if_needed(data_config)

  mesh = sharding_lib.make_mesh(config.get("mesh", (("data", -1), ("fsdp", 1))))
  batch_size = int(config.get("batch_size", 256))
  if batch_size % sharding_lib.data_parallel_size(mesh):
    raise ValueError(f"config.batch_size={batch_size} must be divisible by the "
                     f"{sharding_lib.data_parallel_size(mesh)} devices of the mesh.")
  data_sharding = sharding_lib.batch_sharding(mesh)
  split = config.get("split", "test")
  source, num_batches = eval_data.make_eval_input(
      data_config, split=split, batch_size=batch_size, sharding=data_sharding,
      seed=int(config.get("seed", 0)), num_examples=int(config.get("num_examples", 4096)))
  params = jax.device_put(trained.params, NamedSharding(mesh, P()))
  with jax.set_mesh(mesh):
    outputs, first = reports.collect(jax.jit(objective.eval_outputs), params, {}, source,
                                     num_batches)
    pictures = (jax.device_get(jax.jit(objective.pictures)(params, {}, first))
                if hasattr(objective, "pictures") else None)
  if hasattr(source, "close"):
    source.close()
  result, details = reports.summarize(objective, outputs)

  summary = {**result, **reports.json_details(details),
             "task": objective.task, "checkpoint": trained.path,
             "checkpoint_step": trained.step, "data": describe_data(data_config),
             "split": split, "device_kind": jax.devices()[0].device_kind,
             "jax_version": jax.__version__, "seconds": time.time() - start}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    if config.get("plots", True):
      summary["plots"] = reports.write_plots(objective, result, details, pictures, workdir)
    ckpt_lib.write_json_atomically(os.path.join(workdir, "config.json"), config.to_dict())
    ckpt_lib.write_json_atomically(os.path.join(workdir, "summary.json"), summary)
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
