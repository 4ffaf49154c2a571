"""The command line as a new user meets it: mistakes in what was asked for print one
line naming the thing (with a suggestion) and exit non-zero without a traceback; real
bugs keep theirs; `--help` lists the configs and tasks. Every error here surfaces before
anything compiles, so each subprocess costs its imports only."""
import json
import os

import pytest

from lensfm import config_args
from lensfm import main as lensfm_main
from lensfm import tasks
from helpers_runs import ROOT, run_main


def fake_checkpoint(workdir, config_spec) -> str:
  """A workdir whose checkpoint holds only the config of `config_spec` (what init_from's
  checks read before anything is built)."""
  step = os.path.join(workdir, "checkpoints", "5")
  os.makedirs(os.path.join(step, "state"))
  os.makedirs(os.path.join(step, "config"))
  with open(os.path.join(step, "config", "metadata"), "w") as f:
    json.dump(config_args.load(os.path.join(ROOT, config_spec)).to_dict(), f)
  return str(workdir)


def assert_user_error(out, *expected):
  assert out.returncode not in (0, None), out.stdout[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("Error: ")]
  assert len(errors) == 1, out.stderr[-3000:]
  for text in expected:
    assert text in errors[0], errors[0]
  return errors[0]


MAE = "--config=configs/mae_vit_b.py:runlocal"


def test_misspelt_config_field_suggests_the_right_one(tmp_path):
  out = run_main(MAE, "--config.optim.bse_lr=1", f"--workdir={tmp_path}")
  assert_user_error(out, "--config.optim.bse_lr", 'Did you mean "base_lr"?')
  out = run_main(MAE, "--config.optm.base_lr=1", f"--workdir={tmp_path}")
  assert_user_error(out, "config has no field 'optm'", 'Did you mean "optim"?')
  out = run_main("--config=configs/mae_vit_b.py:runlocl", f"--workdir={tmp_path}")
  assert_user_error(out, "'runlocl'", 'Did you mean "runlocal"?')
  assert not os.listdir(tmp_path)


def test_missing_config_file_is_named(tmp_path):
  out = run_main("--config=configs/mae_vit_c.py", f"--workdir={tmp_path}")
  assert_user_error(out, "Config file configs/mae_vit_c.py does not exist",
                    'Did you mean "configs/mae_vit_b.py"?')


def test_missing_init_from_is_named(tmp_path):
  out = run_main("--config=configs/finetune_classify.py:runlocal",
                 f"--config.init_from={tmp_path}/no_such_run", f"--workdir={tmp_path}/cls")
  assert_user_error(out, f"{tmp_path}/no_such_run does not exist")
  assert not os.path.exists(tmp_path / "cls")


def test_a_checkpoints_backbone_is_adopted_and_an_empty_checkpoint_is_named(tmp_path):
  # A fine-tune takes init_from's backbone (a runlocal run fine-tuned without :runlocal
  # just works); a checkpoint with no saved state is one line naming it.
  pretrained = fake_checkpoint(tmp_path / "mae", "configs/mae_vit_b.py:runlocal")
  out = run_main("--config=configs/finetune_classify.py", f"--config.init_from={pretrained}",
                 f"--workdir={tmp_path}/cls")
  assert f"Adopted from {pretrained}: model=" in out.stdout, out.stdout[-2000:]
  assert_user_error(out, "holds no saved state")


def test_predict_inputs_that_match_nothing_are_named(tmp_path):
  out = run_main("--config=configs/predict.py", f"--config.init_from={tmp_path}",
                 f"--config.inputs={tmp_path}/lenses/*.fits", f"--workdir={tmp_path}/p")
  assert_user_error(out, f"{tmp_path}/lenses/*.fits", "matches no files")


def test_verbosity_shows_the_traceback_of_a_user_error(tmp_path):
  out = run_main(MAE, "--config.optim.bse_lr=1", f"--workdir={tmp_path}", "--verbosity=1")
  assert out.returncode != 0
  assert "Traceback" in out.stderr and "UserError" in out.stderr and "bse_lr" in out.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
  config = tmp_path / "broken.py"
  config.write_text("def get_config(arg=None):\n  return {}['model']\n")
  out = run_main(f"--config={config}", f"--workdir={tmp_path}")
  assert out.returncode != 0
  assert "Traceback" in out.stderr and "KeyError" in out.stderr


def test_help_lists_every_config_with_its_summary_and_every_task():
  out = run_main("--help")  # absl exits 1 after printing the help.
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  configs = config_args.config_files(os.path.join(ROOT, "configs"))
  assert len(configs) >= 10
  for path in configs:
    summary = lensfm_main._first_docstring_line(path)  # pylint: disable=protected-access
    assert summary, f"{path} has no docstring summary"
    assert f"{os.path.basename(path)}" in out.stdout and summary[:60] in out.stdout
  for task in tasks.names():
    assert f"  {task} " in out.stdout
  assert "--workdir" in out.stdout


def test_build_help_shows_its_whole_docstring(capsys):
  from lensfm.data import build  # pylint: disable=g-import-not-at-top  (TFDS)
  with pytest.raises(SystemExit):
    build._parse_args(["--help"])  # pylint: disable=protected-access
  shown = " ".join(capsys.readouterr().out.split())
  for paragraph in build.__doc__.split("\n\n"):
    assert " ".join(paragraph.split()) in shown
