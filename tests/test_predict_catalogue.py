"""predict on a CSV catalogue: its rows in order, its other columns kept, a row's missing
file skipped and named, a row's pixel_scale cell honoured; a 3-band model fine-tuned for
two steps on lensfm.data.examples' g, r, i catalogue."""
import csv
import os

import numpy as np
import pytest

from lensfm import config_args
from lensfm import errors
from lensfm.data import examples
from lensfm.tasks import finetune
from lensfm.tasks import predict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(spec):
  return config_args.load(os.path.join(ROOT, "configs", spec))


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def write_csv(path, rows):
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("predict_catalogue")
  examples.write_gri_catalogue(str(root / "gri"), per_class=4)
  c = load("finetune_classify.py:runlocal,mode=scratch")
  c.data.update(source="tfds", name="files/gri", manual_dir=str(root / "gri" / "catalogue.csv"),
                data_dir=str(root / "tfds"), bands="g,r,i", source_pixel_scale=0.101)
  c.update(batch_size=8, total_steps=2, log_every=1, checkpoint_every=2, progress_bar=False)
  c.evals.val.update(every=2, num_examples=8)
  finetune.run(c, str(root / "finetune"))
  return root


def predict_on(root, catalogue, out, **more):
  c = load("predict.py:runlocal")
  c.update(checkpoint=str(root / "finetune"), inputs=str(catalogue), progress_bar=False,
           **more)
  return predict.run(c, str(out))


def test_predict_keeps_the_catalogue_columns_in_order(trained, tmp_path):
  root = trained
  catalogue = read_csv(root / "gri" / "catalogue.csv")
  rows = [dict(r) for r in catalogue]
  rows.insert(3, {**rows[0], "path": "missing.npy", "id": "gone"})  # Its file is missing.
  listed = write_csv(root / "gri" / "with_missing.csv", rows)
  summary = predict_on(root, listed, tmp_path / "out")
  out = read_csv(tmp_path / "out" / "predictions.csv")
  columns = list(out[0])
  assert columns[:7] == ["file", "label", "split", "id", "ra", "dec", "pixel_scale"]
  assert columns[7:] == ["prob_lens", "prob_nonlens", "predicted_class", "flag"]
  assert len(out) == len(catalogue) == summary["num_images"]
  for got, want in zip(out, catalogue):  # Catalogue order, cells as written.
    assert (got["file"], got["id"], got["ra"], got["dec"], got["label"], got["split"]) == \
        (want["path"], want["id"], want["ra"], want["dec"], want["label"], want["split"])
    assert float(got["prob_lens"]) + float(got["prob_nonlens"]) == pytest.approx(1, abs=1e-4)
  skipped = read_csv(tmp_path / "out" / "predictions_skipped.csv")
  assert [s["file"] for s in skipped] == ["missing.npy"]
  assert "with_missing.csv line 5 (missing.npy)" in skipped[0]["reason"]
  assert summary["num_skipped"] == 1 and summary["skipped"] == ["missing.npy"]


def test_a_row_pixel_scale_is_honoured(trained, tmp_path):
  root = trained
  first = read_csv(root / "gri" / "catalogue.csv")[0]
  rows = [{**first, "id": "a", "pixel_scale": ""}, {**first, "id": "b", "pixel_scale": ""},
          {**first, "id": "wide", "pixel_scale": "0.4"}]
  summary = predict_on(root, write_csv(root / "gri" / "scales.csv", rows), tmp_path / "out")
  out = {r["id"]: r for r in read_csv(tmp_path / "out" / "predictions.csv")}
  assert summary["num_images"] == 3 and out["wide"]["pixel_scale"] == "0.4"
  assert out["a"]["prob_lens"] == out["b"]["prob_lens"]
  # Four times the field of view on the model's grid: another image, another answer.
  assert out["wide"]["prob_lens"] != out["a"]["prob_lens"]


def test_band_columns_are_stacked_in_the_bands_order(trained, tmp_path):
  """One file per band, columns in another order: the checkpoint's g, r, i order is kept
  (config.data.bands the same), and the result equals the (H, W, 3) file's."""
  root = trained
  first = read_csv(root / "gri" / "catalogue.csv")[0]
  image = np.load(root / "gri" / first["path"])
  for k, band in enumerate("gri"):
    np.save(root / "gri" / f"band_{band}.npy", image[..., k])
  rows = [{"path_i": "band_i.npy", "path_g": "band_g.npy", "path_r": "band_r.npy",
           "id": "split_bands"}]
  banded = write_csv(root / "gri" / "bands.csv", rows)
  predict_on(root, banded, tmp_path / "bands")
  predict_on(root, write_csv(root / "gri" / "one.csv", [{"path": first["path"]}]),
             tmp_path / "one")
  got = read_csv(tmp_path / "bands" / "predictions.csv")[0]
  want = read_csv(tmp_path / "one" / "predictions.csv")[0]
  assert got["file"] == "band_g.npy;band_r.npy;band_i.npy" and got["id"] == "split_bands"
  assert float(got["prob_lens"]) == pytest.approx(float(want["prob_lens"]), abs=1e-5)
  c = load("predict.py:runlocal")
  c.data.bands = "i,r,g"
  c.update(checkpoint=str(root / "finetune"), inputs=banded, progress_bar=False)
  predict.run(c, str(tmp_path / "reversed"))
  reversed_ = read_csv(tmp_path / "reversed" / "predictions.csv")[0]
  assert reversed_["file"] == "band_i.npy;band_r.npy;band_g.npy"


def test_a_catalogue_is_read_alone(trained, tmp_path):
  root = trained
  with pytest.raises(errors.UserError, match="is read alone"):
    predict_on(root, f"{root / 'gri' / 'catalogue.csv'},{root / 'gri'}", tmp_path / "out")
  assert not (tmp_path / "out").exists()  # Refused before anything is read or written.
