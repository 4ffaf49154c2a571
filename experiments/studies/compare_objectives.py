r"""Pretraining objectives compared on the same budget, scored on VALIDATION data only.

  python -m experiments.studies.compare_objectives \
      --pretrained=simclr+aux=W1,simclr=W2,simsup=W3,mae=W4 [--modes=linear,finetune]

Each pretrained encoder (a workdir, or a shipped name such as lensfm:tiny; `random` = a
randomly initialised encoder of the first one's backbone) is adapted to Model II
substructure classification with --labels per class by configs/finetune_classify.py
(runlocal budget: --steps steps of batch 64), adopting the encoder's backbone and grid,
and scored on fresh simulated Model II *validation* lenses (the fine-tune's val/*
metrics): test sets are for reporting, never for choosing. Writes
experiments/results/compare_objectives_<device>.{json,md} with the device, JAX version,
budgets and one row per (encoder, mode).
"""
import json
import os
import platform
import time

from absl import app
from absl import flags
import jax

from configs import finetune_classify
from experiments import results
from lensfm.tasks import finetune
from lensfm.train import loading

_PRETRAINED = flags.DEFINE_string("pretrained", None, "name=path,... (path 'random': none).")
_MODES = flags.DEFINE_list("modes", ["linear", "finetune"], "Adaptation modes.")
_LABELS = flags.DEFINE_integer("labels", 100, "Labels per class.")
_STEPS = flags.DEFINE_integer("steps", 150, "Fine-tuning steps (batch 64).")
_VAL = flags.DEFINE_integer("val_examples", 768, "Validation lenses scored.")
_OUT = flags.DEFINE_string("out", results.RESULTS_DIR, "Output dir.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lensfm_compare", "Scratch workdirs.")


def run_one(path: str, mode: str, backbone_from: str, workdir: str) -> dict:
  c = finetune_classify.get_config(f"runlocal,mode={mode}")
  if path == "random":  # The backbone and grid of the first encoder, random weights.
    c.mode, c.init_from = "scratch", backbone_from
  else:
    c.init_from = path
  # Model II rendered directly at the encoder's grid size (0.101"/px, its own scale).
  c.data.recipe_overrides = {"num_pix": int(loading.load_config(backbone_from).data.image_size)}
  c.data.labels_per_class = _LABELS.value
  c.total_steps = _STEPS.value
  c.evals.val.update(every=_STEPS.value, num_examples=_VAL.value)
  c.checkpoint_every = _STEPS.value
  c.progress_bar = False
  start = time.time()
  summary = finetune.run(c, workdir)
  return {"val_auc_macro": summary.get("val/auc_macro"),
          "val_accuracy": summary.get("val/accuracy"), "wall_s": round(time.time() - start)}


def main(argv):
  del argv
  pairs = [item.split("=", 1) for item in _PRETRAINED.value.split(",")]
  first = next(p for _, p in pairs if p != "random")
  rows = []
  for name, path in pairs:
    for mode in _MODES.value:
      workdir = os.path.join(_WORKDIR.value, f"{name}_{mode}".replace("+", "_"))
      row = {"encoder": name, "path": path, "mode": mode, **run_one(path, mode, first, workdir)}
      print(json.dumps(row), flush=True)
      rows.append(row)
  device = jax.devices()[0].device_kind
  result = {"device": device, "jax": jax.__version__, "host": platform.node(),
            "labels_per_class": _LABELS.value, "steps": _STEPS.value, "batch": 64,
            "val_examples": _VAL.value, "split": "validation", "rows": rows}
  stem = os.path.join(_OUT.value, os.path.basename(results.stem("compare_objectives")))
  lines = [f"# Pretraining objectives, Model II validation, {_LABELS.value} labels/class",
           "", f"Device {device}, JAX {jax.__version__}; fine-tuning {_STEPS.value} steps of "
           f"batch 64 (configs/finetune_classify.py:runlocal), {_VAL.value} validation lenses.",
           "", "| encoder | mode | val macro AUC | val accuracy | wall s |", "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['encoder']} | {r['mode']} | {r['val_auc_macro']:.3f} | "
                 f"{r['val_accuracy']:.3f} | {r['wall_s']} |")
  print(results.write(stem, result, lines))


if __name__ == "__main__":
  app.run(main)
