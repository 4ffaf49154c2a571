r"""The downstream targets, measured at the scale of the machine it runs on.

  python experiments/bench_downstream.py                     # CPU scale (default)
  python experiments/bench_downstream.py --preset=accelerator --pretrained=workdirs/mae_vit_b

Targets (accelerator scale, Model II-like data) and what this script runs for each:
  axion mass      MAE <= 0.015 dex (ResNet-18: 0.021): configs/finetune_regress.py, modes
                  finetune (pretrained), scratch and resnet;
  super-res. x2   PSNR >= bicubic + 10 dB: configs/superres.py, modes finetune and scratch;
  lens finding    (no target; AUC, TPR at 1% / 0.1% FPR): configs/lensfind.py, finetune and
                  scratch;
  classification  macro AUC >= 0.999 (all labels), accuracy >= 0.95 (100 labels / class):
                  taken from experiments/label_efficiency.py's results for the same preset
                  and device when they exist (it runs those fine-tunings).
Every run is scored by the 'evaluate' task on fresh simulated test lenses.

Presets: 'cpu' = the runlocal configs (2-block width-64 ViT, 32x32 images, batch 64,
--steps steps; regression and SR train on seeded pools of simulated examples, so the
simulator is not the bottleneck) after --pretrain_steps of MAE (shared with
label_efficiency.py's default workdir); 'accelerator' = the configs as they are.
CPU-scale numbers show that everything runs and how the modes compare; they are not the
target configuration and are not expected to meet the targets.

Writes experiments/results/downstream_<preset>_<device>.{json,md}.
"""
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top

from lensfm import config_args  # pylint: disable=g-import-not-at-top
from experiments import common
from lensfm.tasks import evaluate
from lensfm.tasks import finetune
from lensfm.tasks import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
# experiments/label_efficiency.py's default pretraining run, shared when it exists.
SHARED_PRETRAIN = "/tmp/lensfm_label_efficiency/pretrain"

_PRESET = flags.DEFINE_enum("preset", "cpu", ["cpu", "accelerator"], "Scale.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lensfm_bench_downstream", "Run directories.")
_PRETRAINED = flags.DEFINE_string(
    "pretrained", None, "Pretraining workdir; default (cpu): label_efficiency.py's, "
    "pretrained now if it does not exist.")
_PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", 1500, "cpu: MAE steps if pretraining.")
_STEPS = flags.DEFINE_integer("steps", 300, "cpu: fine-tuning steps per run.")
_TASKS = flags.DEFINE_list("tasks", ["regress", "superres", "lensfind"], "Tasks to run.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of runs, pools and test sets.")
_POOL = flags.DEFINE_integer("pool_per_class", -1, "cpu: labelled pool size per class "
                             "(-1: the task's default in TASKS; 0: the endless stream).")
_TEST = flags.DEFINE_integer("test_examples", 0, "cpu: test lenses (0: the task's default).")
_REFRESH = flags.DEFINE_bool(
    "refresh_classification", False, "Run nothing: re-read the classification numbers of "
    "an existing downstream_<preset>_<device>.json from label_efficiency's results (after "
    "label_efficiency.py ran again) and rewrite the JSON and table.")
_RESULTS = flags.DEFINE_string("results_dir", RESULTS, "Where the JSON/table go.")

# task: (config file, extra config arg, modes, cpu pool size per class (0 = stream),
#        cpu test examples, metrics to report)
TASKS = {
    "regress": ("finetune_regress.py", "", ("finetune", "scratch", "resnet"), 2000, 1024,
                ("mae_log10_axion_mass", "rmse_log10_axion_mass", "r2_log10_axion_mass")),
    "superres": ("superres.py", "scale=2", ("finetune", "scratch"), 400, 512,
                 ("psnr", "psnr_bicubic", "psnr_gain_db", "ssim", "ssim_bicubic")),
    "lensfind": ("lensfind.py", "", ("finetune", "scratch"), 0, 8192,
                 ("auc", "accuracy", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001")),
}
TARGETS = {"mae_log10_axion_mass": "<= 0.015 dex (ResNet-18 reference 0.021)",
           "psnr_gain_db": ">= 10 dB (x2)", "auc_macro": ">= 0.999 (all labels)",
           "accuracy@100": ">= 0.95 (100 labels per class, pretrained)"}


def task_config(task, mode, preset, pretrained, steps, seed):
  name, extra, _, pool, _, _ = TASKS[task]
  args = ",".join(a for a in (extra, f"mode={mode}", "runlocal" if preset == "cpu" else "") if a)
  c = config_args.load(os.path.join(ROOT, "configs", f"{name}:{args}"))
  c.seed = seed
  c.progress_bar = False
  c.evals = {}
  c.init_from = pretrained if mode in ("finetune", "linear") else ""
  if preset == "cpu":
    c.data.labels_per_class = pool if _POOL.value < 0 else _POOL.value
    c.data.labels_seed = seed
    c.update(total_steps=steps, checkpoint_every=steps, log_every=max(steps // 4, 1))
    c.optim.warmup_steps = max(steps // 10, 1)
  return c


def run_task(task, mode, preset, pretrained, steps, seed, root) -> dict:
  workdir = os.path.join(root, f"{task}_{mode}")
  c = task_config(task, mode, preset, pretrained, steps, seed)
  start = time.time()
  train_summary = finetune.run(c, workdir)
  if train_summary.get("preempted"):  # SIGTERM: the run saved and returned; stop here.
    sys.exit(f"Preempted during {workdir}; run the same command again to continue.")
  train_seconds = time.time() - start
  e = config_args.load(os.path.join(ROOT, "configs", "evaluate.py" +
                                    (":runlocal" if preset == "cpu" else "")))
  e.update(init_from=workdir, seed=seed, num_examples=(_TEST.value or TASKS[task][4])
           if preset == "cpu" else 8192)
  result = evaluate.run(e, workdir + "_eval")
  row = {"task": task, "mode": mode, "steps": int(c.total_steps),
         "train_seconds": train_seconds,
         "train_images_per_sec": train_summary.get("images_per_sec"),
         "pool_per_class": int(c.data.get("labels_per_class", 0) or 0),
         "num_test_examples": result.get("num_examples", result.get("num_log10_axion_mass")),
         **{k: result[k] for k in TASKS[task][5]}}
  print(json.dumps(row), flush=True)
  return row


def classification_from_label_efficiency(preset, device, results_dir):
  path = os.path.join(results_dir, f"label_efficiency_{preset}_{device.replace(' ', '_')}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = json.load(f)["rows"]
  pick = lambda n, m: next((r for r in rows if r["labels_per_class"] == n and r["mode"] == m),
                           None)
  out = {"source": os.path.relpath(path, ROOT)}
  for n in ("all", "100"):
    for m in ("finetune", "scratch", "linear", "knn"):
      r = pick(n, m)
      if r:
        out[f"{m}@{n}"] = {"accuracy": r["accuracy"], "auc_macro": r["auc_macro"]}
  return out


def write_table(rows, classification, path):
  lines = ["| task | mode | metric | value |", "|---|---|---|---|"]
  for r in rows:
    for k in TASKS[r["task"]][5]:
      lines.append(f"| {r['task']} | {r['mode']} | {k} | {r[k]:.4g} |")
  for key, vals in (classification or {}).items():
    if key != "source":
      for k, v in vals.items():
        lines.append(f"| classify | {key} | {k} | {v:.4g} |")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return "\n".join(lines)


def refresh_classification(preset):
  device = jax.devices()[0].device_kind
  stem = os.path.join(_RESULTS.value, f"downstream_{preset}_{device.replace(' ', '_')}")
  with open(stem + ".json") as f:
    report = json.load(f)
  report["classification"] = classification_from_label_efficiency(preset, device,
                                                                  _RESULTS.value)
  with open(stem + ".json", "w") as f:
    json.dump(report, f, indent=2, default=str)
  print(write_table(report["rows"], report["classification"], stem + ".md"), flush=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _REFRESH.value:
    refresh_classification(_PRESET.value)
    return
  preset, root = _PRESET.value, _WORKDIR.value
  os.makedirs(root, exist_ok=True)
  start = time.time()
  pretrained = _PRETRAINED.value
  if not pretrained:
    if preset != "cpu":
      raise app.UsageError("--preset=accelerator needs --pretrained=PRETRAIN_WORKDIR.")
    pretrained = SHARED_PRETRAIN  # Trains it, or finds it finished and does nothing.
    pretrain.run(common.cpu_pretrain_config(_PRETRAIN_STEPS.value), pretrained)
  rows = [run_task(t, m, preset, pretrained, _STEPS.value, _SEED.value, root)
          for t in _TASKS.value for m in TASKS[t][2]]
  device = jax.devices()[0].device_kind
  classification = classification_from_label_efficiency(preset, device, _RESULTS.value)
  scale = ("CPU-scale runs (tiny ViT, 32x32, minutes of training): they show the mechanics "
           "and how modes compare, NOT the issue's target configuration" if preset == "cpu"
           else "target configuration (the configs as they are)")
  report = {"experiment": "bench_downstream", "preset": preset, "scale_note": scale,
            "device_kind": device, "num_devices": jax.device_count(),
            "jax_version": jax.__version__, "python": platform.python_version(),
            "pretrained": pretrained, "finetune_steps": _STEPS.value if preset == "cpu" else None,
            "seed": _SEED.value, "targets": TARGETS,
            "configs": {t: task_config(t, "finetune", preset, pretrained, _STEPS.value,
                                       _SEED.value).to_dict() for t in _TASKS.value},
            "rows": rows, "classification": classification,
            "total_seconds": time.time() - start}
  stem = os.path.join(_RESULTS.value, f"downstream_{preset}_{device.replace(' ', '_')}")
  os.makedirs(_RESULTS.value, exist_ok=True)
  with open(stem + ".json", "w") as f:
    json.dump(report, f, indent=2, default=str)
  table = write_table(rows, classification, stem + ".md")
  print(f"\n{scale}\n{table}\nWrote {stem}.json/.md", flush=True)


if __name__ == "__main__":
  app.run(main)
