r"""Task 'bench' (LensBench): one command scores a checkpoint on the field's tasks.

  python -m lensfm.main --config=configs/bench.py:preset=cpu --config.init_from=CKPT \
      --workdir=DIR

CKPT is any pretraining or fine-tuning workdir (or checkpoints/<step>); its backbone and
input grid (config.data.image_size x pixel_scale) are adopted, and every row is trained
and scored on that grid (the fixed sets are mapped onto it, `lensfm.data.grid`). Without
init_from only the baselines run (on config.grid with config.default_model).

Rows (a row = one training run, scored on the fixed sets of `bench_sets`):
  classify/model_ii/<labels>/<mode>/s<seed>  no_sub/cdm/axion on Model II with 10, 100,
      1000 labels per class (seeded pools) and all labels (the endless simulator), for
      modes finetune and linear (the checkpoint) and the baselines scratch (the same
      backbone, random init) and resnet (ResNet-18 from scratch); config.seeds seeds at
      labels in config.multi_seed_labels, the first seed otherwise. Model II@100 runs are
      also scored unchanged on Model I and Model III (cross-instrument transfer) and on
      Model II scenes rotated by the simulator (rotation robustness).
  classify/model_i/100/..., classify/model_iii/100/...: other instruments.
  regress/axion/all/<mode>/s0: log10 axion mass, MAE in dex.
  superres/model_ii/all/<mode>/s0: x2 super-resolution, PSNR gain over bicubic (dB).
  lensfind/lensfind/all/<mode>/s0: lens finding, AUC and TPR at 1% FPR.
  extra/<name>/100/<mode>/s0: config.extra_datasets, the user's released DeepLense
      directories ('name=DIR,...', name e.g. model_ii), built into TFDS on first use,
      trained with 100 labels per class and scored on their test split.
Every row reports validation and test metrics: tune on validation, report test.

Budgets: config.steps[task] steps of config.batch_size per run (the same for every mode);
compiled train steps are shared by every run with the same model, objective, optimizer and
budget (seeds and label counts reuse them). Progress prints the row; each row's result is
written atomically to DIR/rows/<row>.json as it ends, and a restarted bench skips the rows
already scored (resume at the next row; a row that failed is run again). At the end: DIR/bench.json (meta: device, JAX
version, budgets, seeds, wall times; every row; the aggregated table), DIR/BENCH.md and
the plots DIR/label_efficiency.png, DIR/cross_instrument.png.
"""
import functools
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lensfm import data as data_lib
from lensfm import errors
from lensfm.data import eval_input
from lensfm.data import grid as grid_lib
from lensfm.data import sim_source
from lensfm.data import transforms
from lensfm.evaluators import common
from lensfm.objectives import reports
from lensfm.tasks import bench_report
from lensfm.tasks import bench_sets
from lensfm.tasks import finetune
from lensfm.train import checkpoint as ckpt_lib
from lensfm.train import loading
from lensfm.train import sharding as sharding_lib
from lensfm.train import trainer as trainer_lib
from lensfm import utils

CHECKPOINT_MODES = ("finetune", "linear")
TRANSFER_SETS = ("model_i", "model_iii", "model_ii_rotated")
TASK_SETS = {"regress": "axion", "superres": "superres", "lensfind": "lensfind"}
# The headline metric of each task (higher is better except MAE).
HEADLINE = {"classify": "auc_macro", "regress": "mae_log10_axion_mass",
            "superres": "psnr_gain_db", "lensfind": "auc", "extra": "auc_macro"}


# -- the rows ---------------------------------------------------------------------------


def row_id(task, data, labels, mode, seed) -> str:
  return f"{task}/{data}/{labels or 'all'}/{mode}/s{seed}"


def plan_rows(config, has_checkpoint: bool) -> list[dict]:
  """Every row of the bench, in running order."""
  modes = [m for m in config.modes if has_checkpoint or m not in CHECKPOINT_MODES]
  seeds = list(config.seeds)
  rows = []

  def add(task, data, labels, mode, seed, **more):
    rows.append(dict(id=row_id(task, data, labels, mode, seed), task=task, data=data,
                     labels=int(labels), mode=mode, seed=int(seed), **more))

  for labels in config.labels:
    for mode in modes:
      for seed in (seeds if labels in config.multi_seed_labels else seeds[:1]):
        add("classify", "model_ii", labels, mode, seed,
            transfer=labels == config.transfer_labels)
  other_modes = [m for m in modes if m in config.get("other_modes", modes)]
  for data in config.other_instruments:
    for mode in other_modes:
      add("classify", data, config.transfer_labels, mode, seeds[0])
  for task in config.other_tasks:
    for mode in other_modes:
      add(task, TASK_SETS[task], 0, mode, seeds[0])
  for name, directory in extra_datasets(config.get("extra_datasets", "")):
    for mode in other_modes:
      add("extra", name, config.transfer_labels, mode, seeds[0], manual_dir=directory)
  pattern = config.get("only", "")
  if pattern:
    rows = [r for r in rows if re.search(pattern, r["id"])]
  return rows


def extra_datasets(spec: str) -> list[tuple[str, str]]:
  """'model_ii=DIR,model_iii=DIR2' -> [(name, DIR), ...] (names of the deeplense builder)."""
  out = []
  for item in [s.strip() for s in (spec or "").split(",") if s.strip()]:
    name, sep, directory = item.partition("=")
    if not sep or not directory:
      raise errors.UserError(f"config.extra_datasets item {item!r}: expected NAME=DIR, e.g. "
                       "model_ii=/data/deeplense/model_ii.")
    if not os.path.isdir(os.path.expanduser(directory)):
      raise errors.MissingFileError(f"config.extra_datasets: {directory} is not a directory.")
    out.append((name, os.path.expanduser(directory)))
  return out


# -- what is benchmarked -----------------------------------------------------------------


def backbone(config) -> dict:
  """The checkpoint's model and input grid (or the defaults for baselines only)."""
  path = config.get("init_from", "")
  if not path:
    return {"path": "", "model": config.default_model.to_dict(),
            "image_size": int(config.grid.image_size),
            "pixel_scale": float(config.grid.pixel_scale),
            "normalize": transforms.DEFAULT_NORMALIZE, "channels": 1, "step": None}
  pre = loading.load_config(path)
  try:
    _, step = loading.find_checkpoint(path)
  except (FileNotFoundError, ValueError):  # e.g. a named checkpoint shipped in the package
    step = None
  size, scale = grid_lib.model_grid(pre.data)
  return {"path": path, "model": pre.model.to_dict(), "image_size": size,
          "pixel_scale": scale, "step": step, "channels": int(pre.data.get("channels", 1)),
          "normalize": pre.data.get("normalize", transforms.DEFAULT_NORMALIZE),
          "objective": pre.get("objective", {}).get("name", None)}


def training_num_pix(recipe_name: str, native: int, size: int, scale: float) -> int:
  """Pixels the simulator renders for training: the model's field of view (and a margin)
  at the recipe's scale, with the native count's parity, so the rendered field is the
  centre of the native one (the fixed sets are native and mapped the same way)."""
  src_scale = bench_sets.recipes_lib.PIXEL_SCALES[recipe_name]
  need = int(np.ceil(size * scale / src_scale)) + 2
  need += (need - native) % 2
  return min(native, need)


def run_config(config, row, bb) -> ml_collections.ConfigDict:
  """The downstream config of one row: the task's recipe for the mode, on the backbone's
  grid, with the bench's budget."""
  task = "classify" if row["task"] == "extra" else row["task"]
  recipe = config.recipes[task][row["mode"]]
  c = ml_collections.ConfigDict(recipe.to_dict())
  if row["mode"] != "resnet":
    c.model = bb["model"]
  c.init_from = bb["path"] if row["mode"] in CHECKPOINT_MODES else ""
  c.seed = row["seed"]
  c.batch_size = int(config.batch_size)
  c.total_steps = int(config.steps[task])
  c.optim.warmup_steps = max(c.total_steps // 10, 1)
  c.evals = {}
  c.progress_bar = False
  d = c.data
  d.update(image_size=bb["image_size"], pixel_scale=bb["pixel_scale"],
           normalize=bb["normalize"], channels=bb["channels"], labels_seed=row["seed"],
           labels_per_class=row["labels"])
  if row["task"] == "extra":
    d.update(source="tfds", name=f"deeplense/{row['data']}", manual_dir=row["manual_dir"],
             data_dir=config.get("tfds_dir", "") or "", recipe="")
  else:
    recipe_name, overrides, _ = bench_sets.SETS[row["data"] if task == "classify"
                                                else TASK_SETS[task]]
    native = bench_sets.recipe_of(row["data"] if task == "classify"
                                  else TASK_SETS[task]).num_pix
    overrides = dict(overrides)
    overrides["num_pix"] = training_num_pix(recipe_name, native, bb["image_size"],
                                            bb["pixel_scale"])
    d.update(source="sim", recipe=recipe_name, recipe_overrides=overrides)
  return c


# -- training, with compiled functions shared between runs -----------------------------


def _key(c) -> str:
  return json.dumps({k: c.get(k).to_dict() if hasattr(c.get(k), "to_dict") else c.get(k)
                     for k in ("model", "objective", "optim", "batch_size", "total_steps",
                               "mesh")} | {"grid": [c.data.image_size, c.data.pixel_scale,
                                                     c.data.get("channels", 1)]},
                    sort_keys=True, default=str)


_COMPILED: dict = {}


def compiled_for(c, workdir: str):
  """(trainer, init fn(rng) -> state, step fn, eval fn), built once per model, objective,
  optimizer, budget and grid, and shared by every run (seed, label count) with them."""
  key = _key(c)
  if key not in _COMPILED:
    c = ml_collections.ConfigDict(c.to_dict())
    c.seed = 0  # Step randomness (dropout, masks) is the trainer's; seeds vary the rest.
    c.init_from = ""
    trainer = trainer_lib.Trainer(c, workdir)
    init = jax.jit(functools.partial(trainer._init_state, batch=trainer._batch),  # pylint: disable=protected-access
                   out_shardings=trainer.state_sharding)
    _COMPILED[key] = (trainer, init, trainer.compile_step(),
                      jax.jit(trainer.objective.eval_outputs))
  return _COMPILED[key]


def train(c, workdir: str):
  """Trains one run in-process; returns (trainer, state, eval fn, seconds)."""
  start = time.time()
  if c.objective.name == "regress":
    c = finetune.prepare_config(c)  # Target statistics from the training data.
  loading.check_init_from(c)
  trainer, init, step_fn, eval_fn = compiled_for(c, workdir)
  with jax.set_mesh(trainer.mesh):
    state = init(jax.random.fold_in(jax.random.key(c.seed), 1))
  if c.get("init_from", ""):
    state = trainer._load_pretrained_encoder(state, c.init_from)  # pylint: disable=protected-access
  source = pipeline_input(c, trainer)
  with jax.set_mesh(trainer.mesh):
    for _ in range(c.total_steps):
      state, metrics = step_fn(state, next(source))
    metrics = jax.device_get(metrics)
  if hasattr(source, "close"):
    source.close()
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"non-finite training loss {metrics['loss']}")
  return trainer, state, eval_fn, time.time() - start, float(metrics["loss"])


def pipeline_input(c, trainer):
  return data_lib.make_input(c.data, global_batch_size=c.batch_size,
                             sharding=trainer.data_sharding, seed=c.seed)


# -- scoring on the fixed sets ------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _prepare_fn(src_shape, src_scale, size, scale, normalize, stats_key, sharding):
  """Jitted raw images -> the model grid -> normalised, as the training input does."""
  mapper = grid_lib.make_mapper(src_shape, src_scale, size, scale)
  stats = None if stats_key is None else {k: list(v) for k, v in stats_key}
  transform = transforms.make_transform(normalize, (), stats)

  def prepare(images):
    if mapper is not None:
      images = jax.vmap(mapper)(images)
    return jax.vmap(transform)(jax.random.split(jax.random.key(0), images.shape[0]), images)

  return jax.jit(prepare, out_shardings=sharding)


def set_batches(arrays, src_scale, c, trainer):
  """Padded, sharded batches (mask False on padding) of a cached set, on the model grid."""
  stats = sim_source_stats(c)
  stats_key = None if stats is None else tuple((k, tuple(v)) for k, v in sorted(stats.items()))
  prepare = _prepare_fn(tuple(arrays["image"].shape[1:]), float(src_scale),
                        int(c.data.image_size), float(c.data.pixel_scale),
                        c.data.get("normalize", transforms.DEFAULT_NORMALIZE), stats_key,
                        trainer.data_sharding)
  n, b = len(arrays["label"]), int(c.batch_size)
  for start in range(0, n, b):
    stop = min(start + b, n)
    batch = {}
    for k, v in arrays.items():
      part = np.zeros((b,) + v.shape[1:], v.dtype)
      part[:stop - start] = v[start:stop]
      batch[k] = part
    batch["mask"] = np.arange(b) < stop - start
    out = {k: jax.device_put(v, trainer.data_sharding) for k, v in batch.items() if k != "image"}
    out["image"] = prepare(jax.device_put(batch["image"], trainer.data_sharding))
    yield out


def sim_source_stats(c):
  if c.data.get("normalize", transforms.DEFAULT_NORMALIZE) != "standardize":
    return None
  return sim_source.normalization_stats(c.data, sim_source.get_recipe(c.data))


def summarize(trainer, state, eval_fn, batches, num_batches=None) -> dict:
  with jax.set_mesh(trainer.mesh):
    outputs, _ = common.collect(eval_fn, state["params"], state["extra"], batches, num_batches)
  result, _ = trainer.objective.summarize(outputs)
  return reports.json_safe(result)


def score_set(config, name, split, c, trainer, state, eval_fn) -> dict:
  arrays = bench_sets.load_set(data_dir(config), name, split, int(config.set_sizes[split]))
  return summarize(trainer, state, eval_fn,
                   set_batches(arrays, bench_sets.pixel_scale(name), c, trainer))


def score_tfds(c, split, trainer, state, eval_fn) -> dict:
  source, num = eval_input.make_eval_input(c.data, split=split, batch_size=c.batch_size,
                                           sharding=trainer.data_sharding, seed=0,
                                           num_examples=0)
  try:
    return summarize(trainer, state, eval_fn, source, num)
  finally:
    if hasattr(source, "close"):
      source.close()


def data_dir(config) -> str:
  return os.path.expanduser(config.get("data_dir", "") or bench_sets.default_dir())


def run_row(config, row, bb, workdir) -> dict:
  c = run_config(config, row, bb)
  trainer, state, eval_fn, train_seconds, loss = train(c, os.path.join(workdir, "scratch"))
  scores = {}
  for split in bench_sets.SPLITS:
    if row["task"] == "extra":
      scores[split] = score_tfds(c, split, trainer, state, eval_fn)
    else:
      data = row["data"] if row["task"] == "classify" else TASK_SETS[row["task"]]
      scores[split] = score_set(config, data, split, c, trainer, state, eval_fn)
  if row.get("transfer"):
    for name in TRANSFER_SETS:
      scores[f"{name}/test"] = score_set(config, name, "test", c, trainer, state, eval_fn)
  return {"train_seconds": train_seconds, "final_loss": loss, "steps": c.total_steps,
          "batch_size": c.batch_size, "model": c.model.get("name"),
          "init_from": c.get("init_from", ""), "scores": scores}


# -- the bench -------------------------------------------------------------------------


def row_file(workdir: str, rid: str) -> str:
  return os.path.join(workdir, "rows", rid.replace("/", "__") + ".json")


def read_row(path: str) -> dict | None:
  """A row's saved result, or None if it was never written (a failed row is re-run)."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def meta(config, bb) -> dict:
  return {"version": bench_sets.VERSION, "preset": config.get("preset", ""),
          "checkpoint": bb["path"], "checkpoint_step": bb["step"],
          "checkpoint_objective": bb.get("objective"), "model": bb["model"],
          "grid": {"image_size": bb["image_size"], "pixel_scale": bb["pixel_scale"]},
          "normalize": bb["normalize"], "device_kind": jax.devices()[0].device_kind,
          "num_devices": jax.device_count(), "jax_version": jax.__version__,
          "steps": config.steps.to_dict(), "batch_size": int(config.batch_size),
          "seeds": list(config.seeds), "set_sizes": config.set_sizes.to_dict(),
          "resnet": config.recipes.classify.resnet.model.to_dict()}


def run(config, workdir: str) -> dict:
  start = time.time()
  bb = backbone(config)
  rows = plan_rows(config, bool(bb["path"]))
  info = meta(config, bb)
  os.makedirs(os.path.join(workdir, "rows"), exist_ok=True)
  results = []
  for i, row in enumerate(rows):
    path = row_file(workdir, row["id"])
    before = read_row(path)
    if before is not None and "error" not in before:
      results.append(before)
      print(f"LensBench [{i + 1}/{len(rows)}] {row['id']}: done before, kept.", flush=True)
      continue
    print(f"LensBench [{i + 1}/{len(rows)}] {row['id']} ...", flush=True)
    t0 = time.time()
    try:
      result = {**row, **run_row(config, row, bb, workdir)}
    except Exception as e:  # pylint: disable=broad-except  (one failing row: say, go on)
      if config.get("fail_fast", False):
        raise
      result = {**row, "error": f"{type(e).__name__}: {e}"}
      print(f"  FAILED: {result['error']}", flush=True)
    result.update(seconds=time.time() - t0, device_kind=info["device_kind"],
                  jax_version=info["jax_version"])
    if "scores" in result:
      head = HEADLINE[row["task"]]
      print(f"  test {head} = {result['scores']['test'].get(head)}, "
            f"validation {result['scores']['validation'].get(head)} "
            f"({result['seconds']:.0f} s)", flush=True)
    utils.write_json_atomically(path, result)
    results.append(result)
  info["wall_seconds_this_call"] = time.time() - start
  info["row_seconds_total"] = float(sum(r.get("seconds", 0.) for r in results))
  summary = bench_report.write_all(workdir, info, results)
  print(f"LensBench: {len(results)} rows, table in {os.path.join(workdir, 'BENCH.md')}",
        flush=True)
  return summary
