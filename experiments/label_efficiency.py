r"""Label efficiency: substructure classification with 10 / 100 / 1,000 labels per class
and all labels, pretrained (MAE) vs. the same backbone from scratch (and, with the
default modes, a linear probe and kNN on the pretrained features).

  python experiments/label_efficiency.py                      # CPU scale (default)
  python experiments/label_efficiency.py --preset=accelerator \
      --pretrained=workdirs/mae_vit_b                         # the target configuration

Presets:
  cpu:          the runlocal configs: a 2-block, width-64 ViT with 8x8 patches on 32x32
                simulated Model II lenses; MAE pretraining for --pretrain_steps (unless
                --pretrained is given), then --steps fine-tuning steps of batch 64 per run.
                Minutes on a laptop; it shows the mechanics and the trend, not the
                accuracy the issue targets.
  accelerator:  configs/finetune_classify.py as is (ViT-B/8, 64x64, batch 256, its
                step budget), from the pretraining run given by --pretrained.
"All" labels = the endless simulator stream (a fresh labelled batch every step); N
labels per class = the seeded pool of `lensfm.data.sim_pool` (exactly N per class,
the same pool for every mode). Every run is scored by the task 'evaluate' on the same
`--test_examples` simulated test lenses (accuracy, macro and per-class ROC AUC).

Writes experiments/results/label_efficiency_<preset>_<device>.{json,md,png}: the device
kind, JAX version, settings and one row per (labels, mode).
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
from lensfm.objectives import pictures
from lensfm.tasks import evaluate
from lensfm.tasks import finetune
from lensfm.tasks import knn as knn_task
from lensfm.tasks import pretrain
from lensfm.train import loading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")

_PRESET = flags.DEFINE_enum("preset", "cpu", ["cpu", "accelerator"], "Scale of the study.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lensfm_label_efficiency", "Run directories.")
_PRETRAINED = flags.DEFINE_string("pretrained", None,
                                  "Pretraining workdir; default: pretrain one (cpu preset).")
_PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", 1500, "cpu preset: MAE steps.")
_STEPS = flags.DEFINE_integer("steps", 500, "cpu preset: fine-tuning steps per run.")
_LABELS = flags.DEFINE_list("labels", ["10", "100", "1000", "all"], "Labels per class.")
_MODES = flags.DEFINE_list("modes", ["finetune", "scratch", "resnet", "linear", "knn"],
                           "Adaptation modes (see configs/common.py).")
_TEST = flags.DEFINE_integer("test_examples", 1024, "Simulated test lenses per run.")
_SEED = flags.DEFINE_integer("seed", 0, "Run and label-pool seed.")
_RESULTS = flags.DEFINE_string("results_dir", RESULTS, "Where the JSON/table/plot go.")


def load(spec):
  return config_args.load(os.path.join(ROOT, "configs", spec))


def quiet(c):
  c.progress_bar = False
  return c


def pretrain_cpu(workdir: str, steps: int) -> str:
  """MAE pretraining of the runlocal ViT on 32x32 simulated lenses (a no-op if done)."""
  summary = pretrain.run(common.cpu_pretrain_config(steps), workdir)
  print(f"Pretrained {workdir}: final masked-patch loss {summary.get('loss')}", flush=True)
  return workdir


def pretraining_summary(workdir: str) -> dict:
  """Objective, steps and final loss of the pretraining run (from its summary.json)."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    summary = json.load(f)
  config = loading.load_config(workdir)
  return {"objective": config.objective.name, "steps": summary.get("final_step"),
          "final_loss": summary.get("loss"), "batch_size": config.batch_size,
          "image_size": config.data.image_size}


def run_config(labels: str, mode: str, pretrained: str, preset: str, steps: int, seed: int):
  arg = f"mode={mode}" + (",runlocal" if preset == "cpu" else "")
  c = quiet(load(f"finetune_classify.py:{arg}"))
  c.seed = seed
  c.data.labels_seed = seed
  c.data.labels_per_class = 0 if labels == "all" else int(labels)
  if mode in ("finetune", "linear", "knn"):
    c.init_from = pretrained
  c.evals = {}  # Scored once at the end by the 'evaluate' task, on the same test set.
  if preset == "cpu":
    c.update(total_steps=steps, checkpoint_every=steps, log_every=max(steps // 4, 1))
    c.optim.warmup_steps = max(steps // 10, 1)
  return c


def stop_if_preempted(summary: dict) -> None:
  """The trainer turns SIGTERM into a saved checkpoint and a normal return; a study of
  many runs must then stop instead of starting the next one."""
  if summary.get("preempted"):
    sys.exit("Preempted: the current run saved a checkpoint; run the same command again "
             "to continue.")


def evaluate_run(workdir: str, preset: str, test_examples: int, seed: int) -> dict:
  e = load("evaluate.py" + (":runlocal" if preset == "cpu" else ""))
  e.update(init_from=workdir, num_examples=test_examples, seed=seed, plots=False)
  return evaluate.run(e, workdir + "_eval")


def one_run(labels, mode, pretrained, preset, steps, test_examples, seed, root) -> dict:
  name = f"{mode}_{labels}"
  workdir = os.path.join(root, name)
  c = run_config(labels, mode, pretrained, preset, steps, seed)
  start = time.time()
  if mode == "knn":
    c.knn.num_test_examples = test_examples
    c.knn.num_train_examples = 3 * 1000 if labels == "all" else c.knn.num_train_examples
    result = knn_task.run(c, workdir)
  else:
    stop_if_preempted(finetune.run(c, workdir))
    result = evaluate_run(workdir, preset, test_examples, seed)
  row = {"labels_per_class": labels, "mode": mode, "seconds": time.time() - start,
         "steps": 0 if mode == "knn" else int(c.total_steps)}
  row.update({k: result[k] for k in ("accuracy", "auc_macro", "auc_no_sub", "auc_cdm",
                                     "auc_axion", "num_examples")})
  if mode == "knn":
    row["bank_size"] = result["bank_size"]
  print(json.dumps(row), flush=True)
  return row


def write_table(rows, path):
  modes = list(dict.fromkeys(r["mode"] for r in rows))
  labels = list(dict.fromkeys(r["labels_per_class"] for r in rows))
  cell = {(r["labels_per_class"], r["mode"]): r for r in rows}
  lines = ["| labels / class | " + " | ".join(f"{m} acc | {m} AUC" for m in modes) + " |",
           "|---|" + "---|" * (2 * len(modes))]
  for n in labels:
    vals = []
    for m in modes:
      r = cell.get((n, m))
      vals += [f"{r['accuracy']:.3f}", f"{r['auc_macro']:.3f}"] if r else ["", ""]
    lines.append(f"| {n} | " + " | ".join(vals) + " |")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return "\n".join(lines)


def write_plot(rows, path, title):
  plt = pictures.plt
  labels = list(dict.fromkeys(r["labels_per_class"] for r in rows))
  numeric = [int(n) for n in labels if n != "all"]
  xpos = {n: (int(n) if n != "all" else (max(numeric) * 10 if numeric else 1)) for n in labels}
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for metric, ax in zip(("accuracy", "auc_macro"), axes):
    for mode in dict.fromkeys(r["mode"] for r in rows):
      pts = sorted((xpos[r["labels_per_class"]], r[metric]) for r in rows if r["mode"] == mode)
      ax.plot(*zip(*pts), marker="o", label=mode)
    ax.set_xscale("log")
    ax.set_xticks([xpos[n] for n in labels], labels)
    ax.set_xlabel("labels per class")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle(title, fontsize=10)
  pictures.save_figure(fig, path)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint operation at INFO.
  preset, root = _PRESET.value, _WORKDIR.value
  os.makedirs(root, exist_ok=True)
  pretrained = _PRETRAINED.value
  start = time.time()
  if not pretrained:
    if preset != "cpu":
      raise app.UsageError("--preset=accelerator needs --pretrained=PRETRAIN_WORKDIR.")
    pretrained = pretrain_cpu(os.path.join(root, "pretrain"), _PRETRAIN_STEPS.value)
  rows = [one_run(n, m, pretrained, preset, _STEPS.value, _TEST.value, _SEED.value, root)
          for n in _LABELS.value for m in _MODES.value]
  device = jax.devices()[0].device_kind
  stem = os.path.join(_RESULTS.value, f"label_efficiency_{preset}_{device.replace(' ', '_')}")
  os.makedirs(_RESULTS.value, exist_ok=True)
  scale = ("CPU-scale run (tiny ViT, 32x32, minutes of training): shows the mechanics and "
           "trends, NOT the issue's target configuration" if preset == "cpu" else
           "target configuration (configs/finetune_classify.py)")
  report = {"experiment": "label_efficiency", "preset": preset, "scale_note": scale,
            "device_kind": device, "num_devices": jax.device_count(),
            "jax_version": jax.__version__, "python": platform.python_version(),
            "pretrained": pretrained, "pretraining": pretraining_summary(pretrained),
            "finetune_steps": _STEPS.value if preset == "cpu" else None,
            "test_examples": _TEST.value, "seed": _SEED.value,
            "config": run_config("100", "finetune", pretrained, preset, _STEPS.value,
                                 _SEED.value).to_dict(),
            "total_seconds": time.time() - start, "rows": rows}
  with open(stem + ".json", "w") as f:
    json.dump(report, f, indent=2, default=str)
  table = write_table(rows, stem + ".md")
  write_plot(rows, stem + ".png", f"Label efficiency, Model II-like sim ({preset}; {device})")
  print(f"\n{scale}\n{table}\nWrote {stem}.json/.md/.png", flush=True)


if __name__ == "__main__":
  app.run(main)
