r"""A lens finder trained only on lensfm's simulator, scored unchanged on a folder of
lens / non-lens cutouts (no training on the folder: what a search would do).

  python -m experiments.studies.lensfind_on_files --folder=DIR [--init_from=lensfm:small] \
      [--config=configs/lensfind.py:runlocal] [--out=/tmp/lensfind_on_files]

DIR: `DIR/{train,test}/{lens,nonlens}/*.fits` (e.g. `python -m lensfm.data.examples
--sky=realistic --source_mags=21.5,25.5`, or files from another simulator); its test split
is scored (`configs/evaluate.py`; the folders' classes are matched to the finder's
non_lensed / lensed by name). Results: experiments/results/lensfind_on_files_<tag>_<device>.
{json,md}: ROC AUC, TPR at 1% FPR, PR AUC of the finder on the folder, and its own
validation AUC on the simulator.
"""
import json
import os
import subprocess
import sys

from absl import app
from absl import flags

from experiments import results

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_FOLDER = flags.DEFINE_string("folder", None, "Lens / non-lens folder to score.", required=True)
_INIT = flags.DEFINE_string("init_from", "lensfm:small", "Checkpoint the finder starts from.")
_CONFIG = flags.DEFINE_string("config", "configs/lensfind.py:runlocal", "Training config.")
_OUT = flags.DEFINE_string("out", "/tmp/lensfind_on_files", "Work directory.")
_TAG = flags.DEFINE_string("tag", "", "Results file tag (e.g. the folder's sky).")
_EXTRA = flags.DEFINE_list("overrides", [], "More --config.X=Y flags for training.")


def run(args: list[str], log: str) -> None:
  os.makedirs(os.path.dirname(log), exist_ok=True)
  with open(log, "w") as f:
    if subprocess.run([sys.executable, "-m", "lensfm.main"] + args, cwd=ROOT, stdout=f,
                      stderr=subprocess.STDOUT).returncode:
      raise RuntimeError(f"lensfm.main {' '.join(args)} failed; see {log}")


def main(argv):
  del argv
  finder = os.path.join(_OUT.value, "finder")
  scored = os.path.join(_OUT.value, "scored")
  train = [f"--config={_CONFIG.value}", f"--config.init_from={_INIT.value}",
           f"--workdir={finder}", "--config.progress_bar=False"]
  train += [f"--config.{o}" for o in _EXTRA.value]
  if not os.path.exists(os.path.join(finder, "summary.json")):
    run(train, finder + ".log")
  evaluate = ["--config=configs/evaluate.py", f"--config.checkpoint={finder}",
              "--config.data.source=tfds", "--config.data.name=files/lensfind_scored",
              f"--config.data.manual_dir={_FOLDER.value}", f"--workdir={scored}"]
  run(evaluate, scored + ".log")
  with open(os.path.join(finder, "summary.json")) as f:
    own = json.load(f)
  with open(os.path.join(scored, "summary.json")) as f:
    test = json.load(f)
  keys = ("auc", "tpr_at_fpr_0.01", "pr_auc", "purity_at_completeness_0.9", "num_examples")
  result = {"folder": _FOLDER.value, "init_from": _INIT.value, "config": _CONFIG.value,
            "train_command": "python -m lensfm.main " + " ".join(train),
            "evaluate_command": "python -m lensfm.main " + " ".join(evaluate),
            "simulator_validation_auc": own.get("val/auc"),
            "folder_test": {k: test.get(k) for k in keys}}
  lines = [f"# A lens finder from {_INIT.value}, trained on lensfm's simulator only "
           f"(`{_CONFIG.value}`), scored unchanged on `{_FOLDER.value}` (test split)", "",
           *results.table(["", "ROC AUC", "TPR at 1% FPR", "PR AUC",
                           "purity at 90% completeness", "examples"],
                          [["simulator validation", f"{own.get('val/auc', float('nan')):.4f}",
                            "", "", "", ""],
                           ["the folder", *(f"{test.get(k, float('nan')):.4f}"
                                            for k in keys[:-1]), test.get("num_examples")]]),
           "", f"Training: `{result['train_command']}`.",
           f"Scoring: `{result['evaluate_command']}`."]
  text = results.write(results.stem("lensfind_on_files", _TAG.value), result, lines)
  print(text)


if __name__ == "__main__":
  app.run(main)
