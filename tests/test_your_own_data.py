"""README's "Your own data" commands, run as written (training shortened) on tiny
generated sets: a lens / non-lens FITS folder and a 3-band catalogue from lensfm:small, a
regression target from a catalogue column, then evaluate and predict on the catalogue."""
import csv
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from lensfm.data import examples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A few steps of a small batch: the commands' mechanics, not their accuracy.
SHORT = ["--config.total_steps=4", "--config.batch_size=8", "--config.evals.val.every=2",
         "--config.evals.val.num_examples=8", "--config.early_stopping.every=2",
         "--config.progress_bar=False"]


def readme_commands(section: str) -> list[str]:
  """The `python -m lensfm.main` commands of a README section, joined across lines."""
  text = open(os.path.join(ROOT, "README.md")).read()
  body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```bash\n(.*?)```", body, re.S)
  lines = [line for b in blocks for line in b.replace("\\\n", " ").splitlines()]
  return [" ".join(c.split()) for c in lines if "lensfm.main" in c]


@pytest.fixture(scope="module")
def example_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("own_data")
  examples.write_all(str(root / "examples"), per_class=6)
  return root


def run_readme_command(command: str, root, name: str, short: bool = True):
  args = shlex.split(command)[1:]  # Drop "python".
  args = [a.replace("=examples/", f"={root}/examples/").replace("=workdirs/", f"={root}/")
          for a in args]
  env = dict(os.environ, TFDS_DATA_DIR=str(root / "tfds"))
  out = subprocess.run([sys.executable] + args + (SHORT if short else []), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, f"{name}: {out.stderr[-3000:]}"
  return out


def training_commands() -> list[str]:
  return [c for c in readme_commands("Your own data") if "finetune_files.py" in c]


def test_readme_has_the_five_commands():
  commands = readme_commands("Your own data")
  assert len(commands) == 5 and len(training_commands()) == 3
  assert all("--config.init_from=lensfm:small" in c for c in training_commands())
  assert "configs/evaluate.py" in commands[3] and "configs/predict.py" in commands[4]


@pytest.mark.parametrize("index,name", [(0, "fits folder"), (1, "gri catalogue"),
                                        (2, "theta_e column")])
def test_readme_your_own_data_command_runs(example_data, index, name):
  command = training_commands()[index]
  out = run_readme_command(command, example_data, name)
  workdir = re.search(r"--workdir=workdirs/(\S+)", command).group(1)
  config = json.loads((example_data / workdir / "config.json").read_text())
  summary = json.loads((example_data / workdir / "summary.json").read_text())
  assert summary["final_step"] == 4
  if index < 2:  # Classes from the folders / the label column, no list passed.
    assert list(config["objective"]["class_names"]) == ["lens", "nonlens"]
    assert "Classes from the data" in out.stdout
  if index == 1:  # Three bands: the 1-band checkpoint's input filters adapt.
    assert config["data"]["channels"] == 3 and config["data"]["band_names"] == "g,r,i"
    assert "averaged over them and replicated" in out.stdout
  if index == 2:
    assert list(config["objective"]["targets"]) == ["theta_e"]


def test_readme_evaluate_and_predict_the_catalogue_run(example_data):
  if not (example_data / "my_gri" / "best").exists():
    run_readme_command(training_commands()[1], example_data, "gri catalogue")
  evaluate, predict = readme_commands("Your own data")[3:]
  run_readme_command(evaluate, example_data, "evaluate", short=False)
  summary = json.loads((example_data / "my_gri_test" / "summary.json").read_text())
  assert summary["split"] == "test" and 0 <= summary["auc"] <= 1 and "pr_auc" in summary
  run_readme_command(predict, example_data, "predict", short=False)
  with open(example_data / "my_gri_predict" / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  with open(example_data / "examples" / "gri" / "catalogue.csv") as f:
    catalogue = list(csv.DictReader(f))
  assert [r["id"] for r in rows] == [r["id"] for r in catalogue]  # Extra columns kept.
  assert all(r["ra"] == c["ra"] for r, c in zip(rows, catalogue))
  assert {"prob_lens", "prob_nonlens"} <= set(rows[0])
