r"""Your own data, measured: a checkpoint fine-tuned on a user's labelled files by
configs/finetune_files.py, beside a plain 3-layer CNN and ResNet-18 trained from scratch on
the same files with the same recipe and search.

  python -m experiments.studies.own_data --out=/tmp/own_data [--sky=realistic] \
      [--source_mags=22.5,25.5] [--checkpoint=lensfm:small] [--sets=fits,gri,theta_e]

Data: `python -m lensfm.data.examples --sky=SKY --per_class=150 --test_per_class=300`
(lensfm's realistic sky by default: EPL lenses with lens light, clumpy sources, arc-like
contaminants and mergers among the non-lenses, survey noise):
  fits     a lens / non-lens folder of Euclid VIS-like FITS cutouts, train + test folders
           (validation: 10% of train, carved by the builder);
  gri      a 3-band (g, r, i) LSST-like catalogue of .npy cutouts with a split column;
  theta_e  the Einstein radius (arcsec) of 150 lenses, regression.
Runs: every mode (--modes: finetune from the checkpoint; cnn, resnet from scratch on the
checkpoint's grid) at every learning-rate factor of --lr_grid times the config's rate;
each early-stopped on its validation split (configs/finetune_files.py), the factor with
the best validation score chosen per mode, its best state scored on the test split
(`configs/evaluate.py`). The rows give validation and test of the chosen run and of the
config's default rate (factor 1: what the README command gives). Every run's JSON is
kept in OUT/runs/ (a restarted study skips finished runs).
Results: experiments/results/own_data_<sky>[_faint]_<device>.{json,md}.
"""
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from configs import finetune_files
from experiments import results

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETS = {  # name: (dataset name, manual_dir under OUT/data, task, extra config flags)
    "fits": ("files/lenses", "lenses_fits", "classify",
             ["--config.objective.positive_class=lens"]),
    "gri": ("files/gri", "gri/catalogue.csv", "classify",
            ["--config.objective.positive_class=lens", "--config.data.bands=g,r,i"]),
    "theta_e": ("files/theta_e", "theta_e/catalogue.csv", "regress",
                ["--config.data.targets=theta_e"]),
}
HEADLINE = {"classify": ("auc", "val/auc_macro"), "regress": ("mae_theta_e", "val/r2_mean")}

_OUT = flags.DEFINE_string("out", "/tmp/own_data", "Work directory (data, runs).")
_SKY = flags.DEFINE_enum("sky", "realistic", ["toy", "realistic"], "lensfm.data.examples sky.")
_MAGS = flags.DEFINE_list("source_mags", [], "Source magnitude range (realistic sky).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "lensfm:small", "What finetune starts from.")
_SETS = flags.DEFINE_list("sets", list(SETS), "Which data sets.")
_MODES = flags.DEFINE_list("modes", ["finetune", "cnn"], "Modes.")
_LR_GRID = flags.DEFINE_list("lr_grid", ["0.3", "1", "3"], "Learning-rate factors.")
_PER_CLASS = flags.DEFINE_integer("per_class", 150, "Training cutouts per class.")
_TEST = flags.DEFINE_integer("test_per_class", 300, "Test cutouts per class.")
_MODEL_DTYPE = flags.DEFINE_string("model_dtype", "bfloat16", "Every run's compute dtype.")


def sh(args: list[str], log: str) -> None:
  os.makedirs(os.path.dirname(log), exist_ok=True)
  with open(log, "w") as f:
    proc = subprocess.run(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                          env=dict(os.environ, TFDS_DATA_DIR=os.path.join(_OUT.value, "tfds")))
  if proc.returncode:
    raise RuntimeError(f"{' '.join(args)} failed; see {log}")


def make_data(data_dir: str) -> None:
  if os.path.exists(os.path.join(data_dir, "DONE")):
    return
  args = [sys.executable, "-m", "lensfm.data.examples", f"--out={data_dir}",
          f"--sky={_SKY.value}", f"--per_class={_PER_CLASS.value}",
          f"--test_per_class={_TEST.value}"]
  if _MAGS.value:
    args.append(f"--source_mags={','.join(_MAGS.value)}")
  os.makedirs(data_dir, exist_ok=True)
  sh(args, os.path.join(data_dir, "examples.log"))
  open(os.path.join(data_dir, "DONE"), "w").close()


def base_lr(mode: str, task: str) -> float:
  return finetune_files.get_config(f"task={task},mode={mode}").optim.base_lr


def one_run(set_name: str, mode: str, factor: str) -> dict:
  """Fine-tunes (or trains) one run and scores its best state on the test split."""
  name, manual, task, extra = SETS[set_name]
  run_id = f"{set_name}__{mode}__lr{factor}"
  path = os.path.join(_OUT.value, "runs", run_id + ".json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  workdir = os.path.join(_OUT.value, "work", run_id)
  manual_dir = os.path.join(_OUT.value, "data", manual)
  train = [sys.executable, "-m", "lensfm.main",
           f"--config=configs/finetune_files.py:task={task},mode={mode}",
           f"--config.init_from={_CHECKPOINT.value}", f"--config.data.name={name}",
           f"--config.data.manual_dir={manual_dir}", f"--workdir={workdir}",
           f"--config.optim.base_lr={base_lr(mode, task) * float(factor)}",
           "--config.progress_bar=False"] + extra
  if _MODEL_DTYPE.value:
    train.append(f"--config.model.dtype={_MODEL_DTYPE.value}")
  start = time.time()
  sh(train, workdir + ".train.log")
  train_seconds = time.time() - start
  sh([sys.executable, "-m", "lensfm.main", "--config=configs/evaluate.py",
      f"--config.checkpoint={workdir}/best", f"--workdir={workdir}_test"],
     workdir + ".test.log")
  with open(os.path.join(workdir, "summary.json")) as f:
    stopping = json.load(f)["early_stopping"]
  with open(os.path.join(workdir + "_test", "summary.json")) as f:
    test = json.load(f)
  metric, _ = HEADLINE[task]
  row = {"set": set_name, "mode": mode, "lr_factor": float(factor), "task": task,
         "validation": stopping["best_value"], "best_step": stopping["best_step"],
         "steps": stopping["steps"], "hit_cap": stopping["hit_cap"],
         "train_seconds": train_seconds, "test": test[metric],
         "test_metrics": {k: v for k, v in test.items() if isinstance(v, (int, float))},
         "command": " ".join(train[1:])}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  results.write_json(path, row)
  print(f"{run_id}: validation {row['validation']:.4f} at step {row['best_step']}, "
        f"test {metric} {row['test']:.4f} ({train_seconds:.0f} s)", flush=True)
  return row


def all_runs() -> list[dict]:
  folder = os.path.join(_OUT.value, "runs")
  out = []
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name)) as f:
      out.append(json.load(f))
  return out


def summarize(runs: list[dict]) -> tuple[list[dict], list[str]]:
  """Per set and mode: the run chosen on validation, and the one at the default rate."""
  rows, lines = [], []
  for set_name in SETS:
    task = SETS[set_name][2]
    metric, selection = HEADLINE[task]
    for mode in sorted({r["mode"] for r in runs if r["set"] == set_name}):
      mine = [r for r in runs if r["set"] == set_name and r["mode"] == mode]
      if not mine:
        continue
      chosen = max(mine, key=lambda r: r["validation"])  # Ties: the first (lowest) rate.
      default = next((r for r in mine if r["lr_factor"] == 1.0), chosen)
      rows.append({"set": set_name, "mode": mode, "metric": metric, "selection": selection,
                   "chosen_lr_factor": chosen["lr_factor"], "test": chosen["test"],
                   "validation": chosen["validation"], "best_step": chosen["best_step"],
                   "train_seconds": chosen["train_seconds"],
                   "default_lr_test": default["test"], "num_lr": len(mine),
                   "runs": {str(r["lr_factor"]): r["test"] for r in mine}})
  header = ["set", "mode", "test metric", "lr factors tried", "chosen (on validation)",
            "validation", "test", "test at lr x1 (README)", "best step", "train s"]
  table = [[r["set"], r["mode"], r["metric"], ", ".join(sorted(r["runs"])), r["chosen_lr_factor"],
            f"{r['validation']:.4f}", f"{r['test']:.4f}", f"{r['default_lr_test']:.4f}",
            r["best_step"], f"{r['train_seconds']:.0f}"] for r in rows]
  lines += results.table(header, table)
  return rows, lines


def main(argv):
  del argv
  make_data(os.path.join(_OUT.value, "data"))
  for s in _SETS.value:
    for m in _MODES.value:
      for f in _LR_GRID.value:
        one_run(s, m, f)
  runs = all_runs()  # Earlier invocations' too (e.g. another grid for a costly mode).
  rows, lines = summarize(runs)
  faint = "faint" if _MAGS.value else ""
  stem = results.stem("own_data", _SKY.value, faint)
  intro = [f"# Your own data: {_CHECKPOINT.value} fine-tuned vs. from-scratch CNNs", "",
           f"Sky: {_SKY.value}" + (f", source magnitudes {_MAGS.value}" if _MAGS.value else "")
           + f"; {_PER_CLASS.value} training cutouts per class, {_TEST.value} test per class "
           "(lensfm.data.examples). Selection on validation (selection metric: val/auc_macro "
           "or val/r2_mean); test: ROC AUC (lens finding) or MAE in arcsec (theta_e). "
           f"Command: `{results.command()}`.", ""]
  results.write(stem, {"rows": rows, "runs": runs, "sky": _SKY.value,
                       "source_mags": _MAGS.value, "checkpoint": _CHECKPOINT.value},
                intro + lines)
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
