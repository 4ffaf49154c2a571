"""End to end on CPU, the runlocal chain with no extra flags: pretrain (runlocal MAE,
64x64) -> fine-tune from its checkpoint (runlocal, 32x32 at 0.101"/px) -> evaluate
(simulated test split, and DeepLense-layout files of 64x64 and Model I's 150x150 built into
TFDS on first use and mapped onto the model grid) -> summary.json and figures ->
predictions on 64x64 and 150x150 .npy / FITS files, with bad files named."""
import csv
import hashlib
import json
import os

from astropy.io import fits
import numpy as np
import pytest

from lensfm import config_args
from lensfm.tasks import evaluate
from lensfm.tasks import finetune
from lensfm.tasks import predict
from lensfm.tasks import pretrain
from lensfm.train import trainer as trainer_lib
from helpers_runs import run_main
import test_writer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("no_sub", "cdm", "axion")
BATCH = 16


def load(spec):
  return config_args.load(os.path.join(ROOT, "configs", spec))


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("e2e")
  pre = load("mae_vit_b.py:runlocal")  # 64x64 simulated Model II lenses, tiny ViT.
  pre.update(batch_size=BATCH, total_steps=2, log_every=1, checkpoint_every=2,
             visualize_every=0, progress_bar=False)
  pretrain.run(pre, str(root / "pretrain"))

  ft = load("finetune_classify.py:runlocal")  # Its own grid: 32 px at 0.101"/px.
  ft.update(init_from=str(root / "pretrain"), batch_size=BATCH, total_steps=4, log_every=2,
            checkpoint_every=4, progress_bar=False)
  ft.evals.val.update(every=2, num_examples=32)
  summary = finetune.run(ft, str(root / "finetune"))
  return root, summary


def in_unit_interval(summary, keys):
  for k in keys:
    assert 0. <= summary[k] <= 1., (k, summary[k])


def test_finetune_logs_validation_metrics_and_figures(workdirs):
  root, summary = workdirs
  assert summary["final_step"] == 4
  in_unit_interval(summary, [f"val/{k}" for k in ("accuracy", "auc_macro", "auc_no_sub",
                                                  "auc_cdm", "auc_axion")])
  assert summary["val/num_examples"] == 32
  plots = root / "finetune" / "plots"
  report = json.loads((plots / "validation_report.json").read_text())
  assert np.asarray(report["confusion_matrix"]).sum() == 32 and report["step"] == 4
  for name in ("validation_roc.png", "validation_confusion_matrix.png"):
    assert (plots / name).stat().st_size > 1000, name
  images = test_writer.tensorboard_images(root / "finetune")
  assert images == {"validation_roc": [4], "validation_confusion_matrix": [4]}, images


def test_evaluate_writes_summary_with_every_metric(workdirs):
  root, _ = workdirs
  c = load("evaluate.py:runlocal")
  c.update(checkpoint=str(root / "finetune"), num_examples=48, batch_size=BATCH)
  evaluate.run(c, str(root / "eval"))
  summary = json.loads((root / "eval" / "summary.json").read_text())
  in_unit_interval(summary, ["accuracy", "auc_macro"] + [f"auc_{k}" for k in CLASSES])
  assert summary["num_examples"] == 48 and np.asarray(summary["confusion_matrix"]).sum() == 48
  assert summary["auc_macro"] == pytest.approx(np.mean([summary[f"auc_{k}"] for k in CLASSES]))
  assert summary["checkpoint_step"] == 4 and summary["split"] == "test"
  assert summary["data"].startswith("sim:model_ii") and summary["device_kind"]
  for name in ("roc.png", "confusion_matrix.png"):
    assert (root / "eval" / name).stat().st_size > 1000, name
  images = test_writer.tensorboard_images(root / "eval")
  assert images == {"roc": [4], "confusion_matrix": [4]}, images


def write_deeplense_files(directory, per_class=4, size=64):
  """DeepLense's layout with user splits: <split>/<class>/<class>_sim_<i>.npy, size^2;
  axion files are pickled [image, mass_eV] as in the released data."""
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for label, name in enumerate(CLASSES):
      os.makedirs(directory / split / name)
      for i in range(per_class):
        image = rng.random((size, size)).astype(np.float32) + label
        path = directory / split / name / f"{name}_sim_{i}.npy"
        if name == "axion":
          np.save(path, np.array([image, 10.**-22.5], dtype=object), allow_pickle=True)
        else:
          np.save(path, image)


@pytest.mark.parametrize("name, size", [("model_ii", 64), ("model_i", 150)])
def test_evaluate_on_deeplense_files_builds_the_dataset_first(workdirs, tmp_path, name, size,
                                                              capsys):
  """64x64 Model II files and 150x150 Model I counts, on a 32 px model: mapped, no flags.
  The checkpoint is named by the older spelling, init_from, which still works."""
  root, _ = workdirs
  write_deeplense_files(tmp_path / "deeplense", size=size)
  c = load("evaluate.py:runlocal")
  c.update(init_from=str(root / "finetune"), batch_size=BATCH)
  c.data.update(name=f"deeplense/{name}", manual_dir=str(tmp_path / "deeplense"),
                data_dir=str(tmp_path / "tfds"))
  evaluate.run(c, str(tmp_path / "eval"))
  assert "--config.init_from for evaluate is deprecated" in capsys.readouterr().out
  summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
  assert summary["data"] == f"deeplense/{name}" and summary["num_examples"] == 12
  in_unit_interval(summary, ["accuracy", "auc_macro"] + [f"auc_{k}" for k in CLASSES])
  assert (tmp_path / "tfds" / "deeplense" / name).is_dir()  # Built, for reuse.


def test_evaluate_explains_that_the_model_grid_is_fixed(workdirs):
  root, _ = workdirs
  c = load("evaluate.py:runlocal")
  c.update(checkpoint=str(root / "finetune"))
  c.data.image_size = 64
  with pytest.raises(ValueError, match="model grid .* images of any size"):
    evaluate.run(c, str(root / "unused"))


def test_evaluate_rejects_a_pretraining_checkpoint(workdirs):
  root, _ = workdirs
  c = load("evaluate.py")
  c.checkpoint = str(root / "pretrain")
  with pytest.raises(ValueError, match="objective 'mae', which has no downstream head"):
    evaluate.run(c, str(root / "unused"))


def test_predict_writes_csv_and_names_unreadable_files(workdirs, tmp_path):
  root, _ = workdirs
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(1)
  for i, size in enumerate((64, 150, 32)):
    np.save(images / f"lens{i}.npy", rng.random((size, size)).astype(np.float32))
  hdu = fits.PrimaryHDU(rng.random((150, 150)).astype(">f4"))
  hdu.header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CDELT1=-0.05 / 3600,
                    CDELT2=0.05 / 3600, CRPIX1=75.5, CRPIX2=75.5, CRVAL1=10., CRVAL2=20.)
  hdu.writeto(images / "lens3.fits")
  (images / "truncated.npy").write_bytes(open(images / "lens0.npy", "rb").read()[:200])
  np.save(images / "vector.npy", rng.random((32,)))
  # Suspicious inputs: flagged, with no confident class.
  np.save(images / "zeros.npy", np.zeros((64, 64), np.float32))
  np.save(images / "flat.npy", np.full((64, 64), 0.5, np.float32))
  with_nan = rng.random((64, 64)).astype(np.float32)
  with_nan[3, 4] = np.nan
  np.save(images / "with_nan.npy", with_nan)
  c = load("predict.py:runlocal")
  c.update(checkpoint=str(root / "finetune"), inputs=str(images), progress_bar=False,
           batch_size=4)
  summary = predict.run(c, str(tmp_path / "out"))
  assert summary["num_images"] == 7 and summary["num_skipped"] == 2
  assert summary["num_flagged"] == 3
  assert sorted(os.path.basename(p) for p in summary["skipped"]) == ["truncated.npy",
                                                                     "vector.npy"]
  with open(tmp_path / "out" / "predictions.csv") as f:
    rows = {os.path.basename(r["file"]): r for r in csv.DictReader(f)}
  assert sorted(rows) == sorted([f"lens{i}.{e}" for i, e in enumerate(["npy"] * 3 + ["fits"])]
                                + ["zeros.npy", "flat.npy", "with_nan.npy"])
  for name in ("lens0.npy", "lens1.npy", "lens2.npy", "lens3.fits"):
    r = rows[name]
    probs = [float(r[f"prob_{k}"]) for k in CLASSES]
    assert sum(probs) == pytest.approx(1., abs=1e-4) and r["predicted_class"] in CLASSES
    assert r["flag"] == ""
  for name, flag in (("zeros.npy", "all-zero image"), ("flat.npy", "constant image"),
                     ("with_nan.npy", "1 non-finite pixel")):
    assert rows[name]["flag"].startswith(flag), rows[name]
    assert rows[name]["predicted_class"] == "" and rows[name]["prob_axion"] == ""
  skipped = (tmp_path / "out" / "predictions_skipped.csv").read_text()
  assert "vector.npy: has shape (32,); expected (H, W)" in skipped
  assert "with_nan.npy" not in skipped
  assert "truncated.npy" in skipped


def test_command_line_rejects_a_mismatched_backbone(workdirs, tmp_path):
  root, _ = workdirs
  out = run_main("--config=configs/finetune_classify.py:runlocal",
                 f"--config.init_from={root / 'pretrain'}", "--config.model.patch_size=4",
                 f"--workdir={tmp_path / 'ft'}")
  assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert "model.patch_size: checkpoint 8 vs config 4" in out.stderr, out.stderr[-2000:]
  assert not (tmp_path / "ft" / "checkpoints").exists()


def test_superres_evaluation_on_paired_files(tmp_path):
  """An untrained SR model is exactly bicubic (zero-initialised residual), so on paired
  LR/HR files its PSNR and SSIM must equal bicubic's; that pins the pairing and units."""
  import jax  # pylint: disable=g-import-not-at-top
  from lensfm.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  c = load("superres.py:runlocal,mode=scratch")
  c.batch_size = BATCH
  trainer = trainer_lib.Trainer(c, str(tmp_path / "sr"), devices=jax.devices()[:1])
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "sr"))
  ckpt.save(1, trainer.init_state(), {"step": 1}, c.to_dict())
  ckpt.close()

  rng = np.random.default_rng(2)
  (tmp_path / "hr").mkdir()
  (tmp_path / "lr").mkdir()
  yy, xx = np.mgrid[:32, :32]
  for i in range(5):
    hr = 100. * np.exp(-((yy - rng.uniform(8, 24))**2 + (xx - 16)**2) / 30.) + rng.random((32, 32))
    np.save(tmp_path / "hr" / f"lens{i}.npy", hr.astype(np.float32))
    if i < 4:  # lens4 has no LR partner: skipped, said so.
      np.save(tmp_path / "lr" / f"lens{i}.npy", hr.reshape(16, 2, 16, 2).mean((1, 3)))
  e = load("evaluate.py:runlocal")
  e.update(checkpoint=str(tmp_path / "sr"), batch_size=BATCH)
  e.data.update(hr=str(tmp_path / "hr"), lr=str(tmp_path / "lr" / "*.npy"))
  evaluate.run(e, str(tmp_path / "eval"))
  summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
  assert summary["num_examples"] == 4 and summary["data"].startswith("pairs:")
  assert summary["psnr"] == pytest.approx(summary["psnr_bicubic"], abs=1e-3)
  assert summary["ssim"] == pytest.approx(summary["ssim_bicubic"], abs=1e-5)
  assert 0 < summary["ssim"] <= 1 and summary["psnr"] > 10
  assert (tmp_path / "eval" / "sr_triptych.png").stat().st_size > 1000

  # Predict mode on the LR files: one SR image per file, at the HR size.
  p = load("predict.py:runlocal")
  p.update(checkpoint=str(tmp_path / "sr"), inputs=str(tmp_path / "lr"), progress_bar=False)
  out = predict.run(p, str(tmp_path / "pred"))
  assert out["num_images"] == 4 and out["num_skipped"] == 0
  with open(tmp_path / "pred" / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  assert np.load(rows[0]["sr_file"]).shape == (32, 32, 1)
  # In the LR file's units (the normalisation undone): the untrained model's bicubic.
  from lensfm.objectives import metrics  # pylint: disable=g-import-not-at-top
  lr = np.load(tmp_path / "lr" / "lens0.npy").astype(np.float32)
  bicubic = np.asarray(metrics.bicubic_upsample(lr[None, ..., None], 2))[0]
  np.testing.assert_allclose(np.load(rows[0]["sr_file"]), bicubic, atol=1e-3 * np.ptp(lr))
  assert [r["flag"] for r in rows] == [""] * 4


def test_evaluate_on_the_train_split_counts_each_example_once(workdirs, tmp_path):
  root, _ = workdirs
  write_deeplense_files(tmp_path / "deeplense")  # 12 train and 12 test images.
  c = load("evaluate.py:runlocal")
  c.update(init_from=str(root / "finetune"), batch_size=BATCH, split="train")
  c.data.update(name="deeplense/model_ii", manual_dir=str(tmp_path / "deeplense"),
                data_dir=str(tmp_path / "tfds"))
  evaluate.run(c, str(tmp_path / "eval"))
  summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
  # One pass: not the shuffled, endless training stream (num_examples batches of it).
  assert summary["split"] == "train" and summary["num_examples"] == 12
  assert np.asarray(summary["confusion_matrix"]).sum() == 12


def test_predict_outputs_are_one_set_an_all_bad_rerun_keeps_them(workdirs, tmp_path):
  root, _ = workdirs
  rng = np.random.default_rng(2)
  good, bad, out = tmp_path / "good", tmp_path / "bad", tmp_path / "out"
  good.mkdir()
  bad.mkdir()
  np.save(good / "lens0.npy", rng.random((64, 64)).astype(np.float32))
  # Any image size maps onto the model's grid, so a "bad" input is an unreadable file.
  (good / "broken.npy").write_bytes(b"not a numpy file")
  (bad / "broken.npy").write_bytes(b"not a numpy file")
  c = load("predict.py:runlocal")
  c.update(init_from=str(root / "finetune"), inputs=str(good), progress_bar=False,
           batch_size=4)
  first = predict.run(c, str(out))
  assert first["num_images"] == 1 and first["num_skipped"] == 1
  names = ("predictions.csv", "predictions_skipped.csv", "predict_summary.json")
  before = {n: (out / n).read_bytes() for n in names}
  summary = json.loads(before["predict_summary.json"])
  assert summary["sha256"][str(out / "predictions.csv")] == hashlib.sha256(
      before["predictions.csv"]).hexdigest()

  # Every input bad: an error that says the earlier results stay, and they do.
  c.inputs = str(bad)
  with pytest.raises(ValueError, match="the previous results are kept"):
    predict.run(c, str(out))
  assert {n: (out / n).read_bytes() for n in names} == before
  assert sorted(os.listdir(out)) == sorted(names)  # No temporary files left.

  # A clean run: no stale list of skipped files beside num_skipped 0.
  os.remove(good / "broken.npy")
  c.inputs = str(good)
  clean = predict.run(c, str(out))
  assert clean["num_skipped"] == 0 and not (out / "predictions_skipped.csv").exists()
  assert json.loads((out / "predict_summary.json").read_text())["num_skipped"] == 0
