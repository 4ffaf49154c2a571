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
  extra/<name>/100/<mode>/s0: config.extra_datasets ('NAME=PATH,...'), the user's own
      data, built into TFDS on first use: deeplense/NAME for a DeepLense config's name
      (model_i, model_ii, model_iii, common_test) and a folder in its released layout,
      else files/NAME from PATH, a labelled folder or CSV catalogue
      (lensfm/data/builders/files.py). Classified with the data's own classes (their
      number and names from the data), config.extra_labels (100) labels per class of the
      train split (all there are where fewer: the row's labels_used and notes say so),
      validated on its validation split (a dataset without one falls back to its test
      split, and the row notes it) and scored on its test split; headline auc_macro,
      which for two classes equals the binary ROC AUC.
Every row reports validation and test metrics: tune on validation, report test.

Two regimes (config.regimes), each row in both (config.converge_only: a regex limiting
the converged ones):
  budget      config.steps[task] steps of config.batch_size per run, the same for every
              mode, the recipe's learning rate: compute efficiency (ids as above);
  converged   'converged/<id>': every mode gets the same search, chosen on validation
              only: one run per learning rate config.lr_grid (factors of the recipe's),
              each validated on the row's validation split every
              config.early_stopping.every steps and stopped after `patience` validations
              without improvement (cap config.cap_steps[task], also the cosine
              schedule's length; rows say when it was reached), its best-validation
              state kept; the best run's state is scored on the test split. Rows report
              steps and seconds to the best validation score and the whole search.
Both regimes share the augmentations of the task's recipe (configs/<task>.py).
config.model_dtype ('' = the checkpoint's) sets every row's compute dtype (bfloat16 on
CPU: see experiments/results/bench_bf16_check_cpu.md).
Compiled train steps are shared by every run with the same model, objective, optimizer and
budget (seeds and label counts reuse them). Progress prints the row; each row's result is
written atomically to DIR/rows/<row>.json as it ends, and a restarted bench skips the rows
already scored (resume at the next row; a row that failed is run again). At the end: DIR/bench.json (meta: device, JAX
version, budgets, seeds, wall times; every row; the aggregated table), DIR/BENCH.md and
the plots DIR/label_efficiency.png, DIR/cross_instrument.png.
"""
import json
import os
import re
import time

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from lensfm import data as data_lib
from lensfm.data import eval_input
from lensfm.data import model_input
from lensfm.data import pipeline
from lensfm.data import transforms
from lensfm.data.builders import deeplense as deeplense_builder
from lensfm.data.builders import files as files_builder
from lensfm.data.builders import files_source
from lensfm import errors
from lensfm.evaluators import common
from lensfm.objectives import reports
from lensfm.tasks import bench_report
from lensfm.tasks import bench_sets
from lensfm.tasks import finetune
from lensfm.train import contract
from lensfm.train import trainer as trainer_lib
from lensfm import utils

# Modes that start from the checkpoint's weights; the others are the baselines.
CHECKPOINT_MODES = tuple(m for m, rule in contract.ADOPTION.items() if rule.weights and m != "knn")
TRANSFER_SETS = ("model_i", "model_iii", "model_ii_rotated")
TASK_SETS = {"regress": "axion", "superres": "superres", "lensfind": "lensfind"}
# The headline metric of each task (higher is better except MAE).
# For two classes auc_macro equals the binary ROC AUC: class 0's one-vs-rest AUC ranks by
# p0 = 1 - p1 with the labels swapped, the same pairs in the same order.
HEADLINE = {"classify": "auc_macro", "regress": "mae_log10_axion_mass",
            "superres": "psnr_gain_db", "lensfind": "auc", "extra": "auc_macro"}
# Labels per class of an extra row (config.extra_labels; all there are where fewer).
EXTRA_LABELS = 100
LOWER_IS_BETTER = ("regress",)
# 'budget': config.steps[task] steps (compute efficiency); 'converged': early stopping on
# the validation split, learning rate chosen on it from config.lr_grid (accuracy ceiling).
REGIMES = ("budget", "converged")


# -- the rows ---------------------------------------------------------------------------


def row_id(task, data, labels, mode, seed, regime="budget") -> str:
  rid = f"{task}/{data}/{labels or 'all'}/{mode}/s{seed}"
  return rid if regime == "budget" else f"{regime}/{rid}"


def plan_rows(config, has_checkpoint: bool) -> list[dict]:
  """Every row of the bench, in running order: the fixed-budget rows, then their
  converged twins (config.regimes; config.converge_only limits the latter)."""
  rows = []
  for regime in config.get("regimes", ("budget",)):
    if regime not in REGIMES:
      raise errors.UserError(f"config.regimes: {regime!r} is not one of {REGIMES}.")
    only = config.get("converge_only", "") if regime == "converged" else ""
    rows += [{**r, "id": row_id(r["task"], r["data"], r["labels"], r["mode"], r["seed"],
                                regime), "regime": regime}
             for r in _plan_budget_rows(config, has_checkpoint)
             if not only or re.search(only, r["id"])]
  pattern = config.get("only", "")
  if pattern:
    rows = [r for r in rows if re.search(pattern, r["id"])]
  return rows


def _plan_budget_rows(config, has_checkpoint: bool) -> list[dict]:
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
  for name, path in extra_datasets(config.get("extra_datasets", "")):
    for mode in other_modes:
      add("extra", name, config.get("extra_labels", EXTRA_LABELS), mode, seeds[0],
          manual_dir=path, dataset=extra_dataset_name(name, path))
  return rows


def extra_datasets(spec: str) -> list[tuple[str, str]]:
  """'model_ii=DIR,my_lenses=CATALOGUE.csv' -> [(name, path), ...]: each path a folder or
  a CSV catalogue."""
  out = []
  for item in [s.strip() for s in (spec or "").split(",") if s.strip()]:
    name, sep, path = item.partition("=")
    name, path = name.strip(), os.path.expanduser(path.strip())
    if not sep or not name or not path:
      raise errors.UserError(f"config.extra_datasets item {item!r}: expected NAME=PATH, e.g. "
                             "model_ii=/data/deeplense/model_ii or "
                             "my_lenses=/data/lenses/catalogue.csv.")
    if not (os.path.isdir(path) or files_source.is_catalogue(path)):
      raise errors.MissingFileError(f"config.extra_datasets: {name}={path} is not a folder "
                                    "or a .csv catalogue; expected one of them.")
    files_builder.config_for(name)  # A bad NAME is named now, not rows later.
    out.append((name, path))
  return out


def extra_dataset_name(name: str, path: str) -> str:
  """'deeplense/NAME' for a DeepLense config's name and a folder in its released layout
  (its class folders, directly or under train/), else 'files/NAME' (your own folder or
  catalogue, lensfm/data/builders/files.py)."""
  config = next((c for c in deeplense_builder.CONFIGS if c.name == name), None)
  if config is None or not os.path.isdir(path):
    return f"files/{name}"
  folders = set(_subdirs(path)) | set(_subdirs(os.path.join(path, "train")))
  return f"deeplense/{name}" if set(config.class_dirs) <= folders else f"files/{name}"


def _subdirs(path: str) -> list[str]:
  return [d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))] \
      if os.path.isdir(path) else []


# -- what is benchmarked -----------------------------------------------------------------


def backbone(config) -> dict:
  """The checkpoint's model and input grid (or the defaults for baselines only)."""
  checkpoint = contract.start_from(config)
  if checkpoint is None:
    return {"path": "", "checkpoint": None, "model": config.default_model.to_dict(),
            "image_size": int(config.grid.image_size),
            "pixel_scale": float(config.grid.pixel_scale),
            "normalize": transforms.DEFAULT_NORMALIZE, "channels": 1, "step": None}
  grid = checkpoint.grid
  return {"path": checkpoint.ref, "checkpoint": checkpoint,
          "model": checkpoint.model_config.to_dict(), "image_size": grid.size,
          "pixel_scale": grid.pixel_scale, "step": checkpoint.step, "channels": grid.channels,
          "normalize": checkpoint.config.data.get("normalize", transforms.DEFAULT_NORMALIZE),
          "objective": checkpoint.objective_name}


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
  if contract.ADOPTION[row["mode"]].backbone:
    c.model = bb["model"]
  if config.get("model_dtype", ""):  # A speed field: bfloat16 on CPU is 1.6-2x fp32.
    c.model.dtype = config.model_dtype
  c.init_from = bb["path"] if row["mode"] in CHECKPOINT_MODES else ""
  c.seed = row["seed"]
  c.batch_size = int(config.batch_size)
  c.total_steps = int(config.steps[task])
  c.optim.warmup_steps = max(c.total_steps // 10, 1)
  c.early_stopping = {"metric": ""}
  if row.get("regime") == "converged":  # The budget's warmup; the cap is rarely reached.
    c.total_steps = int(config.cap_steps[task])
    c.early_stopping = dict(utils.as_dict(config.early_stopping), metric=HEADLINE[row["task"]],
                            mode="min" if task in LOWER_IS_BETTER else "max")
  c.evals = {}
  c.progress_bar = False
  d = c.data
  d.update(image_size=bb["image_size"], pixel_scale=bb["pixel_scale"],
           normalize=bb["normalize"], channels=bb["channels"], labels_seed=row["seed"],
           labels_per_class=row["labels"])
  if row["task"] == "extra":
    d.update(source="tfds", name=row["dataset"], manual_dir=row["manual_dir"],
             data_dir=config.get("tfds_dir", "") or "", recipe="")
    d.channels = model_input.describe(d).channels  # The data's bands (the model adapts).
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
  return json.dumps({k: c[k].to_dict() if isinstance(c[k], ml_collections.ConfigDict)
                     else c[k] for k in ("model", "objective", "optim", "batch_size",
                                         "total_steps", "mesh", "early_stopping")}
                    | {"grid": [c.data.image_size, c.data.pixel_scale, c.data.channels]},
                    sort_keys=True, default=str)


def trainer_for(c, workdir: str, trainers: dict) -> trainer_lib.Trainer:
  """One trainer per model, objective, optimizer, budget and grid, shared by every run
  (seed, label count) with them, so they share its compiled step."""
  key = _key(c)
  if key not in trainers:
    c = ml_collections.ConfigDict(c.to_dict())
    c.seed = 0  # Step randomness (dropout, masks) is the trainer's; seeds vary the rest.
    c.init_from = ""  # Each run says where it starts from.
    trainers[key] = trainer_lib.Trainer(c, workdir)
  return trainers[key]


def train(c, workdir: str, trainers: dict, start_from, validate=None):
  """Trains one run in-process; returns (trainer, state, seconds, final loss, early
  stopping summary or None). `validate(trainer, state) -> float` for early stopping."""
  start = time.time()
  c = finetune.prepare_config(c)  # The objective's data-dependent fields.
  start_from = start_from if c.init_from else None
  if start_from is not None:
    start_from.check_fits(c)
  trainer = trainer_for(c, workdir, trainers)
  source = data_lib.make_input(c.data, global_batch_size=c.batch_size,
                               sharding=trainer.data_sharding, seed=c.seed)
  try:
    state, metrics, stopping = trainer.train_in_memory(
        source, rng=jax.random.fold_in(jax.random.key(c.seed), 1), start_from=start_from,
        validate=None if validate is None else lambda s: validate(trainer, s))
  finally:
    source.close()
  if not np.isfinite(float(metrics["loss"])) and stopping is None:
    raise FloatingPointError(f"non-finite training loss {metrics['loss']}")
  return trainer, state, time.time() - start, float(metrics["loss"]), stopping


# -- scoring on the fixed sets ------------------------------------------------------------


def set_batches(arrays, src_scale, c, sharding):
  """A cached set's raw images as model batches, by the path every task takes."""
  return model_input.array_batches(
      arrays, src_scale=src_scale, grid=model_input.Grid.of(c.data),
      normalization=model_input.Normalization.of(c.data), batch_size=int(c.batch_size),
      sharding=sharding, what="a LensBench set")


def tfds_batches(c, split, sharding):
  """(batches, count) of a built dataset's split (config.extra_datasets rows)."""
  return eval_input.make_eval_input(c.data, split=split, batch_size=c.batch_size,
                                    sharding=sharding, seed=0, num_examples=0)


def summarize(trainer, state, batches, num_batches=None) -> dict:
  with jax.set_mesh(trainer.mesh):
    outputs, _ = common.collect(trainer.eval_outputs, state["params"], state["extra"], batches,
                                num_batches)
  result, _ = trainer.objective.summarize(outputs)
  return reports.json_safe(result)


def score_set(config, name, split, c, trainer, state) -> dict:
  arrays = bench_sets.load_set(data_dir(config), name, split, int(config.set_sizes[split]))
  return summarize(trainer, state, set_batches(arrays, bench_sets.pixel_scale(name), c,
                                                trainer.data_sharding))


def score_tfds(c, split, trainer, state) -> dict:
  source, num = tfds_batches(c, split, trainer.data_sharding)
  try:
    return summarize(trainer, state, source, num)
  finally:
    source.close()


def data_dir(config) -> str:
  return os.path.expanduser(config.get("data_dir", "") or bench_sets.default_dir())


def row_data(row) -> str:
  return row["data"] if row["task"] == "classify" else TASK_SETS.get(row["task"], row["data"])


def scores_of(config, row, c, trainer, state) -> dict:
  """Every split's (and the transfer sets') metrics of a trained state."""
  scores = {}
  for split in bench_sets.SPLITS:
    if row["task"] == "extra":
      scores[split] = score_tfds(c, split, trainer, state)
    else:
      scores[split] = score_set(config, row_data(row), split, c, trainer, state)
  if row.get("transfer"):
    for name in TRANSFER_SETS:
      scores[f"{name}/test"] = score_set(config, name, "test", c, trainer, state)
  return scores


def extra_data_notes(c, labels: int) -> dict:
  """What an extra row's data gave it: labelled train examples used per class, and notes
  where they fall short of `labels` or there is no validation split to tune on."""
  facts = model_input.describe(c.data)
  path = pipeline.find_dataset_dir(c.data.name, c.data.get("data_dir", "") or None)
  builder = tfds.builder_from_directory(path)
  train = pipeline.split_labels(path, "train", builder.as_data_source(split="train"))
  used = {name: int(min(labels, (train == k).sum()))
          for k, name in enumerate(facts.class_names)}
  notes = []
  if min(used.values(), default=labels) < labels:
    notes.append(f"fewer than {labels} labels per class in the train split: " + ", ".join(
        f"{name} {n}" for name, n in used.items()) + " (all used)")
  if "validation" not in builder.info.splits:
    notes.append("no validation split: its validation scores (and a converged run's "
                 "choices) are on the test split, not held out")
  return {"labels_used": used, "classes": list(facts.class_names), "notes": notes}


def run_row(config, row, bb, workdir, trainers: dict) -> dict:
  if row.get("regime") == "converged":
    result = run_converged(config, row, bb, workdir, trainers)
  else:
    result = run_budget(config, row, bb, workdir, trainers)
  if row["task"] == "extra":
    result.update(extra_data_notes(run_config(config, row, bb), row["labels"]))
    for note in result["notes"]:
      print(f"  note: {note}", flush=True)
  return result


def run_budget(config, row, bb, workdir, trainers: dict) -> dict:
  c = run_config(config, row, bb)
  trainer, state, train_seconds, loss, _ = train(c, os.path.join(workdir, "scratch"),
                                                 trainers, bb["checkpoint"])
  return {"train_seconds": train_seconds, "final_loss": loss, "steps": c.total_steps,
          "steps_to_best": c.total_steps, "seconds_to_best": train_seconds,
          "batch_size": c.batch_size, "model": c.model.get("name"),
          "init_from": c.get("init_from", ""),
          "scores": scores_of(config, row, c, trainer, state)}


def validator(config, row, c):
  """validate(trainer, state) -> the row's headline metric on its validation split (the
  set's batches made once)."""
  key, batches = HEADLINE[row["task"]], []
  if row["task"] == "extra":
    return lambda trainer, state: score_tfds(c, "validation", trainer, state)[key]

  def validate(trainer, state):
    if not batches:
      arrays = bench_sets.load_set(data_dir(config), row_data(row), "validation",
                                   int(config.set_sizes["validation"]))
      batches.extend(set_batches(arrays, bench_sets.pixel_scale(row_data(row)), c,
                                 trainer.data_sharding))
    return summarize(trainer, state, batches)[key]
  return validate


def choose(runs: list[dict], lower_is_better: bool) -> int:
  """The index of the run with the best validation score (never a test score)."""
  values = [r["validation"] if r["validation"] is not None and np.isfinite(r["validation"])
            else (np.inf if lower_is_better else -np.inf) for r in runs]
  return int(np.argmin(values) if lower_is_better else np.argmax(values))


def run_converged(config, row, bb, workdir, trainers: dict) -> dict:
  """One run per learning rate of config.lr_grid (x the recipe's), each early-stopped on
  the validation split; the best validation run is scored on every split."""
  runs, best = [], None
  lower = row["task"] in LOWER_IS_BETTER
  for factor in config.lr_grid:
    c = run_config(config, row, bb)
    c.optim.base_lr = float(c.optim.base_lr) * float(factor)
    trainer, state, seconds, loss, stopping = train(
        c, os.path.join(workdir, "scratch"), trainers, bb["checkpoint"],
        validate=validator(config, row, c))
    runs.append({"lr_factor": float(factor), "base_lr": c.optim.base_lr,
                 "validation": stopping["best_value"], "best_step": stopping["best_step"],
                 "seconds_to_best": stopping["seconds_to_best"], "steps": stopping["steps"],
                 "seconds": seconds, "hit_cap": stopping["hit_cap"], "final_loss": loss})
    print(f"  lr x{factor:g}: validation {HEADLINE[row['task']]} {stopping['best_value']} at "
          f"step {stopping['best_step']} of {stopping['steps']}"
          + (" (cap reached)" if stopping["hit_cap"] else ""), flush=True)
    if choose(runs, lower) == len(runs) - 1:
      best = (c, trainer, state, stopping)
    del state
  c, trainer, state, stopping = best
  chosen = runs[choose(runs, lower)]
  return {"train_seconds": float(sum(r["seconds"] for r in runs)), "steps": stopping["steps"],
          "steps_to_best": stopping["best_step"], "seconds_to_best": stopping["seconds_to_best"],
          "hit_cap": stopping["hit_cap"], "lr_factor": chosen["lr_factor"], "lr_search": runs,
          "early_stopping": {k: v for k, v in stopping.items() if k != "best_metrics"},
          "cap_steps": c.total_steps, "batch_size": c.batch_size, "model": c.model.get("name"),
          "init_from": c.get("init_from", ""),
          "scores": scores_of(config, row, c, trainer, state)}


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
          "regimes": list(config.get("regimes", ("budget",))),
          "cap_steps": utils.as_dict(config.get("cap_steps", None)),
          "early_stopping": utils.as_dict(config.get("early_stopping", None)),
          "lr_grid": list(config.get("lr_grid", (1.,))),
          "model_dtype": config.get("model_dtype", "") or bb["model"].get("dtype"),
          "seeds": list(config.seeds), "set_sizes": config.set_sizes.to_dict(),
          "resnet": config.recipes.classify.resnet.model.to_dict()}


def run(config, workdir: str) -> dict:
  start = time.time()
  bb = backbone(config)
  rows = plan_rows(config, bool(bb["path"]))
  info = meta(config, bb)
  os.makedirs(os.path.join(workdir, "rows"), exist_ok=True)
  results, trainers = [], {}
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
      result = {**row, **run_row(config, row, bb, workdir, trainers)}
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
