"""Shipped checkpoints: 'lensfm:tiny' and 'lensfm:small' load by name, exports round-trip in small files
(also through the `export` task), and downstream configs adopt its backbone and input grid."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm import config_args
from lensfm.train import contract
from lensfm.train import loading
from lensfm.train import precision
from helpers_runs import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SHIPPED = ("tiny", "small")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_encoder_loads_by_name_and_fits_its_backbone(name):
  params, config = loading.load_encoder(f"lensfm:{name}")
  model = precision.get_model(config.model)
  size, channels = config.data.image_size, config.data.get("channels", 1)
  assert config.data.pixel_scale > 0
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                               jnp.zeros((1, size, size, channels))))["params"]
  assert jax.tree.map(lambda x: x.shape, params) == jax.tree.map(lambda x: x.shape, expected)
  out = model.apply({"params": params}, jnp.ones((2, size, size, channels)), train=False)
  assert np.isfinite(np.asarray(out["pooled"])).all()
  card = os.path.join(loading.WEIGHTS_DIR, name, "MODEL_CARD.md")
  assert os.path.exists(card)
  sizes = [os.path.getsize(os.path.join(d, f))
           for d, _, files in os.walk(os.path.join(loading.WEIGHTS_DIR, name)) for f in files]
  assert sum(sizes) < 25 * 2**20 and max(sizes) <= 16 * 2**20


def test_unknown_name_lists_the_shipped_ones():
  with pytest.raises(FileNotFoundError, match="lensfm:tiny"):
    loading.load_encoder("lensfm:no_such_model")


def test_export_round_trips_in_files_under_the_limit(tmp_path):
  out = tmp_path / "exported"
  os.makedirs(out)
  (out / "MODEL_CARD.md").write_text("kept")
  loading.export_encoder("lensfm:tiny", str(out), max_file_bytes=1 << 20)
  sizes = [os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(out) for f in files]
  assert max(sizes) <= 1 << 20
  assert (out / "MODEL_CARD.md").read_text() == "kept"
  want, _ = loading.load_encoder("lensfm:tiny")
  got, config = loading.load_encoder(str(out))
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert config.model.to_dict() == loading.load_config("lensfm:tiny").model.to_dict()


def test_export_task_writes_the_encoder_and_a_summary(tmp_path):
  out, workdir = tmp_path / "encoder", tmp_path / "run"
  proc = run_main("--config=configs/export.py", "--config.init_from=lensfm:tiny",
                  f"--config.out={out}", "--config.max_file_mib=1", f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["out"] == str(out) and summary["largest_mib"] <= 1 and not summary["name"]
  got, _ = loading.load_encoder(str(out))
  want, _ = loading.load_encoder("lensfm:tiny")
  jax.tree.map(np.testing.assert_array_equal, got, want)
  # Neither name nor out: one line naming both, before anything is read.
  proc = run_main("--config=configs/export.py", "--config.init_from=lensfm:tiny",
                  f"--workdir={workdir}")
  assert proc.returncode == 2 and "config.name" in proc.stderr and "config.out" in proc.stderr


def test_export_weights_older_spelling_still_works(tmp_path):
  out = tmp_path / "encoder"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "export_weights.py"),
                         "--workdir=lensfm:tiny", f"--out={out}"], cwd=str(tmp_path),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "older spelling" in proc.stdout
  got, _ = loading.load_encoder(str(out))
  want, _ = loading.load_encoder("lensfm:tiny")
  jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize("mode", ["finetune", "scratch", "linear", "resnet"])
def test_downstream_config_adopts_the_backbone_and_grid(mode):
  c = config_args.load(os.path.join(ROOT, f"configs/finetune_classify.py:runlocal,mode={mode}"))
  c.init_from = "lensfm:tiny"
  checkpoint = contract.resolve("lensfm:tiny")
  adopted = checkpoint.adopt(c)
  pre = checkpoint.config
  assert adopted.data.image_size == pre.data.image_size
  assert adopted.data.pixel_scale == pre.data.pixel_scale
  # The runlocal recipe (shrunk to 32 px) now renders the adopted 4.85" field at 0.101"/px.
  assert adopted.data.recipe_overrides.num_pix == pre.data.image_size
  if mode == "resnet":
    assert adopted.model.name == "resnet"
  else:
    for field in ("name", "width", "depth", "patch_size"):
      assert adopted.model[field] == pre.model[field]
  assert adopted.init_from == ("" if mode in ("scratch", "resnet") else "lensfm:tiny")
  checkpoint.check_fits(adopted)
