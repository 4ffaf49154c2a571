"""LensBench extra_datasets: DeepLense directories stay deeplense/NAME; any other folder
or catalogue is built as files/NAME and classified with its own classes (runlocal preset,
the extra rows only, the scratch baseline: no checkpoint to pretrain)."""
import csv
import json
import os

import numpy as np
import pytest

from lensfm import config_args
from lensfm import errors
from lensfm.data import examples
from lensfm.objectives import reports
from lensfm.tasks import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(spec):
  return config_args.load(os.path.join(ROOT, "configs", spec))


def deeplense_folder(root):
  for name in ("no_sub", "cdm", "axion"):
    os.makedirs(root / name)
  return str(root)


def test_extra_dataset_names(tmp_path):
  deeplense = deeplense_folder(tmp_path / "Model_II")
  lenses = tmp_path / "lenses"
  os.makedirs(lenses / "train" / "lens")
  catalogue = tmp_path / "cat.csv"
  catalogue.write_text("path,label\na.npy,lens\n")
  assert bench.extra_dataset_name("model_ii", deeplense) == "deeplense/model_ii"
  assert bench.extra_dataset_name("model_ii", str(lenses)) == "files/model_ii"
  assert bench.extra_dataset_name("model_ii", str(catalogue)) == "files/model_ii"
  assert bench.extra_dataset_name("my_lenses", deeplense) == "files/my_lenses"
  assert bench.extra_datasets(f"model_ii={deeplense}, mine={catalogue}") == [
      ("model_ii", deeplense), ("mine", str(catalogue))]
  with pytest.raises(errors.UserError, match="not a folder or a .csv catalogue"):
    bench.extra_datasets(f"mine={tmp_path / 'nope.csv'}")
  with pytest.raises(errors.UserError, match="expected NAME=PATH"):
    bench.extra_datasets(str(catalogue))
  with pytest.raises(errors.UserError, match="files/a b"):
    bench.extra_datasets(f"a b={catalogue}")


def test_two_class_macro_auc_is_the_binary_auc():
  rng = np.random.default_rng(0)
  p1 = rng.random(200)
  labels = (rng.random(200) < p1).astype(np.int64)
  result, _ = reports.classification(
      {"probs": np.stack([1 - p1, p1], axis=1), "label": labels}, ("a", "b"))
  assert result["auc_macro"] == pytest.approx(result["auc"], abs=1e-12)
  assert result["auc_a"] == pytest.approx(result["auc_b"], abs=1e-12)


def test_your_folder_as_bench_rows(tmp_path):
  folder = tmp_path / "lenses_fits"
  examples.write_fits_folder(str(folder), per_class=6)
  c = load("bench.py:preset=runlocal")
  c.update(extra_datasets=f"lenses={folder}", only="^extra/", modes=("scratch",),
           other_modes=("scratch",), tfds_dir=str(tmp_path / "tfds"),
           data_dir=str(tmp_path / "sets"), fail_fast=True)
  summary = bench.run(c, str(tmp_path / "bench"))
  [row] = summary["rows"]
  assert row["id"] == "extra/lenses/100/scratch/s0" and not summary["errors"]
  assert row["dataset"] == "files/lenses"
  assert row["classes"] == ["lens", "nonlens"]  # The folders', no class list passed.
  # The example folder has train/test: 10% of train (1 per class) is carved for validation.
  assert row["labels_used"] == {"lens": 5, "nonlens": 5}
  assert "fewer than 100 labels per class in the train split: lens 5, nonlens 5" in \
      row["notes"][0]
  assert not any("no validation split" in n for n in row["notes"])
  test = row["scores"]["test"]
  assert test["num_examples"] == 12 and set(test) >= {"auc_lens", "auc_nonlens", "auc"}
  assert test["auc_macro"] == pytest.approx(test["auc"], abs=1e-6)
  assert os.path.isdir(tmp_path / "tfds" / "files" / "lenses")
  table = (tmp_path / "bench" / "BENCH.md").read_text()
  assert "Your data: files/lenses, up to 100 labels/class (lens 5, nonlens 5)" in table
  saved = json.loads((tmp_path / "bench" / "bench.json").read_text())
  assert saved["rows"][0]["dataset"] == "files/lenses"


def test_your_catalogue_as_bench_rows(tmp_path):
  """A 3-band .npy catalogue with its own splits: the pixel_scale column gives the scale
  (there is no flag per extra dataset), validation is its own split."""
  root = tmp_path / "gri"
  examples.write_gri_catalogue(str(root), per_class=4)
  with open(root / "catalogue.csv", newline="") as f:
    rows = [dict(r, pixel_scale="0.101") for r in csv.DictReader(f)]
  with open(root / "scaled.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  c = load("bench.py:preset=runlocal")
  c.update(extra_datasets=f"gri={root / 'scaled.csv'}", only="^extra/", modes=("scratch",),
           other_modes=("scratch",), tfds_dir=str(tmp_path / "tfds"),
           data_dir=str(tmp_path / "sets"), fail_fast=True)
  [row] = bench.run(c, str(tmp_path / "bench"))["rows"]
  assert row["dataset"] == "files/gri" and row["classes"] == ["lens", "nonlens"]
  assert row["labels_used"] == {"lens": 4, "nonlens": 4} and len(row["notes"]) == 1
  assert row["scores"]["validation"]["num_examples"] == 4
  assert row["scores"]["test"]["num_examples"] == 4
