"""README's "Your own data" commands, run as written (shortened) on tiny generated sets:
a lens / non-lens FITS folder and a 3-band catalogue from lensfm:small, and a regression
target from a catalogue column."""
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
SHORT = ["--config.total_steps=4", "--config.batch_size=8", "--config.evals.val.every=4",
         "--config.evals.val.num_examples=8", "--config.progress_bar=False"]


def readme_commands(section: str) -> list[str]:
  """The `python -m lensfm.main` commands of a README section, joined across lines."""
  text = open(os.path.join(ROOT, "README.md")).read()
  body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```bash\n(.*?)```", body, re.S)
  commands = [b.replace("\\\n", " ") for b in blocks]
  return [" ".join(c.split()) for c in commands if "lensfm.main" in c]


@pytest.fixture(scope="module")
def example_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("own_data")
  examples.write_all(str(root / "examples"), per_class=6)
  return root


def run_readme_command(command: str, root, name: str):
  args = shlex.split(command)[1:]  # Drop "python".
  args = [a.replace("=examples/", f"={root}/examples/").replace("=workdirs/", f"={root}/")
          for a in args]
  env = dict(os.environ, TFDS_DATA_DIR=str(root / "tfds"))
  out = subprocess.run([sys.executable] + args + SHORT, cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, f"{name}: {out.stderr[-3000:]}"
  return out


def test_readme_has_the_three_commands():
  commands = readme_commands("Your own data")
  assert len(commands) == 3
  assert all("--config.init_from=lensfm:small" in c for c in commands)


@pytest.mark.parametrize("index,name", [(0, "fits folder"), (1, "gri catalogue"),
                                        (2, "theta_e column")])
def test_readme_your_own_data_command_runs(example_data, index, name):
  command = readme_commands("Your own data")[index]
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
