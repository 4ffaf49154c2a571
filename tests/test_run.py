"""End to end: a runlocal pretraining run checkpoints, resumes, finishes, and its encoder
loads in a fresh process; the entry point rejects bad configs by name."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lensfm import config_args
from lensfm import main as lensfm_main
from lensfm.tasks import pretrain
from lensfm.train import loading
from helpers_runs import run_main
import test_writer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
       "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}


def small_runlocal(total_steps):
  c = config_args.load(os.path.join(ROOT, "configs", "mae_vit_b.py:runlocal"))
  c.data.image_size = 32
  c.data.recipe_overrides = {"num_pix": 32}
  c.total_steps = total_steps
  c.log_every = 2
  c.checkpoint_every = 3
  c.visualize_every = 3
  c.progress_bar = False
  c.mesh = (("data", 4), ("fsdp", 2))
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_runlocal_checkpoints_resumes_and_loads(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  summary = pretrain.run(small_runlocal(6), workdir)
  assert summary["final_step"] == 6 and summary["train_step_compilations"] == 1
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  for name in ("config.json", "summary.json", "visualize_0000003.png", "visualize_0000006.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  assert test_writer.tensorboard_images(workdir) == {"visualize": [3, 6]}
  steps = [m["step"] for m in read_metrics(workdir)]
  assert steps == [2, 4, 6]
  assert all(np.isfinite(m["loss"]) for m in read_metrics(workdir))

  # Longer run in the same workdir: resumes from step 6, not from scratch.
  summary = pretrain.run(small_runlocal(9), workdir)
  assert "Resuming from checkpoint step 6" in capsys.readouterr().out
  assert [m["step"] for m in read_metrics(workdir)][3:] == [8, 9]
  assert summary["final_step"] == 9
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6", "9"]

  # Started again when finished: exits at once, saying so.
  again = pretrain.run(small_runlocal(9), workdir)
  assert "Run already finished" in capsys.readouterr().out
  assert again["final_step"] == 9
  report = lensfm_main.outputs_report(workdir)
  for shown in (os.path.join(workdir, "checkpoints", "9"), os.path.join(workdir, "summary.json"),
                "visualize_0000009.png", f"tensorboard --logdir {workdir}"):
    assert shown in report, report

  # A fresh process loads the encoder (and the config) from the workdir.
  code = ("import numpy as np, jax; from lensfm.train.loading import load_encoder;"
          f"p, c = load_encoder({workdir!r});"
          "print(c.model.width, sum(float(np.abs(x).sum()) for x in jax.tree.leaves(p)))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                       cwd=ROOT, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  width, total = out.stdout.split()
  params, config, step = loading.load_params(workdir)
  assert step == 9 and int(width) == config.model.width == 64
  assert "decoder" not in params and "patch_embed" in params
  assert float(total) == pytest.approx(sum(float(np.abs(x).sum()) for x in
                                           __import__("jax").tree.leaves(params)), rel=1e-6)
  # A step directory works as well as the workdir.
  p3, _, s3 = loading.load_params(os.path.join(workdir, "checkpoints", "3"))
  assert s3 == 3
  with pytest.raises(KeyError, match="no params/classifier"):
    loading.load_params(workdir, "classifier")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    loading.load_encoder(str(tmp_path / "nowhere"))


def test_a_bad_config_value_fails_by_name_before_any_checkpoint(tmp_path):
  # Misspelt fields and config args: tests/test_cli.py.
  out = run_main("--config=configs/mae_vit_b.py:runlocal", "--config.data.source=disk",
                 f"--workdir={tmp_path}")
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert "config.data.source='disk'" in out.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
