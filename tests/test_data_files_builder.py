"""lensfm.data.builders.files: your own folders and CSV catalogues as TFDS datasets."""
import csv
import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec as P

from lensfm import errors
from lensfm.data import build
from lensfm.data import make_input
from lensfm.data import pipeline


def write_fits(path, image, scale_arcsec=0.2, wcs=True, extra_bands=()):
  from astropy.io import fits
  header = fits.Header()
  if wcs:
    header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CUNIT1="deg", CUNIT2="deg",
                  CDELT1=-scale_arcsec / 3600, CDELT2=scale_arcsec / 3600,
                  CRPIX1=image.shape[1] / 2, CRPIX2=image.shape[0] / 2,
                  CRVAL1=150.0, CRVAL2=2.0)
  hdus = [fits.PrimaryHDU(image.astype(np.float32), header=header)]
  hdus += [fits.ImageHDU(b.astype(np.float32), header=header, name=f"B{k}")
           for k, b in enumerate(extra_bands)]
  fits.HDUList(hdus).writeto(path)


def lens_folder(root, per_class=5, size=16, scale=0.2, splits=False):
  rng = np.random.default_rng(0)
  for split in (("train", "val") if splits else (None,)):
    for label, name in enumerate(("lens", "nonlens")):
      folder = os.path.join(root, *(s for s in (split, name) if s))
      os.makedirs(folder)
      for i in range(per_class):
        write_fits(os.path.join(folder, f"{name}_{i}.fits"),
                   rng.random((size, size)) + 10 * label, scale)
  return root


def write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def records(path, split):
  source = tfds.builder_from_directory(path).as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def all_records(path):
  info = tfds.builder_from_directory(path).info
  return [r for s in info.splits for r in records(path, s)]


def metadata(path):
  return build.read_metadata(path)


def _build(name, data_dir, manual_dir, **kwargs):
  return build.ensure_built(name, str(data_dir), str(manual_dir), progress=False, **kwargs)


def test_fits_folder_with_wcs(tmp_path):
  root = lens_folder(str(tmp_path / "cutouts"), per_class=10)
  result = _build("files/lenses", tmp_path / "data", root)
  assert result.path.endswith(os.path.join("files", "lenses", "1.0.0"))
  assert sum(result.num_examples.values()) == 20
  assert result.num_examples == {"train": 16, "validation": 2, "test": 2}  # 80/10/10.
  meta = metadata(result.path)
  assert meta["class_names"] == ["lens", "nonlens"]
  assert meta["pixel_scale"] == pytest.approx(0.2)
  assert meta["bands"] == ["band_0"] and len(meta["pixel_stats"]["mean"]) == 1
  rows = all_records(result.path)
  assert rows[0]["image"].shape == (16, 16, 1)
  for r in rows:  # Labels follow the folders; the class is visible in the pixels.
    assert r["label"] == (r["image"].mean() > 5)
    assert r["filename"].decode().startswith(("lens/", "nonlens/"))
  labels = np.load(os.path.join(result.path, build.LABEL_INDEX_FILE.format(split="train")))
  assert sorted(labels.tolist()) == [0] * 8 + [1] * 8
  assert not _build("files/lenses", tmp_path / "data", root).built  # Reused.


def test_split_folders_and_png(tmp_path):
  root = tmp_path / "pics"
  from PIL import Image
  rng = np.random.default_rng(1)
  for split, n in (("train", 3), ("val", 1), ("test", 2)):
    for name in ("arc", "ring"):
      os.makedirs(root / split / name)
      for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
            root / split / name / f"{i}.png")
  result = _build("files/pics", tmp_path / "data", root)
  assert result.num_examples == {"train": 6, "validation": 2, "test": 4}
  meta = metadata(result.path)
  assert meta["bands"] == ["red", "green", "blue"] and meta["pixel_scale"] is None
  assert meta["layout"]["splits_from"] == "folders"
  image = records(result.path, "test")[0]["image"]
  assert image.shape == (12, 12, 3) and image.dtype == np.float32 and image.max() > 1


def test_train_and_test_folders_get_a_validation_split_from_train(tmp_path):
  root = tmp_path / "tt"
  rng = np.random.default_rng(3)
  for split, n in (("train", 10), ("test", 3)):
    for name in ("lens", "nonlens"):
      os.makedirs(root / split / name)
      for i in range(n):
        np.save(root / split / name / f"{i}.npy", rng.random((8, 8)).astype(np.float32))
  result = _build("files/tt", tmp_path / "data", root,
                  builder_args={"source_pixel_scale": 0.2})
  # 10% of each class's train folder (1 of 10) is carved out; test stays as given.
  assert result.num_examples == {"train": 18, "validation": 2, "test": 6}
  names = {r["filename"].decode() for r in records(result.path, "validation")}
  assert all(n.startswith("train/") for n in names)


def test_three_band_catalogue_with_targets_and_extras(tmp_path):
  root = tmp_path / "cat"
  os.makedirs(root / "img")
  rng = np.random.default_rng(2)
  rows = []
  for i in range(10):
    for band in "gri":
      np.save(root / "img" / f"{i}_{band}.npy", rng.random((8, 8)) + "gri".index(band))
    z = "" if i % 3 == 0 else f"{0.1 * i:.2f}"
    label = "" if i == 9 else ("lens" if i % 2 else "nonlens")
    rows.append([f"img/{i}_g.npy", f"img/{i}_r.npy", f"img/{i}_i.npy", label, z,
                 f"obj{i}", f"{150 + i}", "train" if i < 7 else "test"])
  catalogue = write_csv(root / "cat.csv", ["path_g", "path_r", "path_i", "label", "z",
                                           "id", "RA (deg)", "split"], rows)
  result = _build("files/cat", tmp_path / "data", catalogue, builder_args={"targets": "z"})
  meta = metadata(result.path)
  assert meta["bands"] == ["g", "r", "i"] and meta["targets"] == ["z"]
  assert meta["class_names"] == ["lens", "nonlens"]
  assert meta["extra_columns"] == {"id": "id", "RA__deg_": "RA (deg)"}
  assert result.num_examples == {"train": 7, "test": 3}
  by_id = {r["id"].decode(): r for r in all_records(result.path)}
  assert np.allclose(by_id["obj4"]["image"].mean(axis=(0, 1)), [0.5, 1.5, 2.5], atol=0.3)
  assert np.isnan(by_id["obj3"]["z"]) and by_id["obj4"]["z"] == pytest.approx(0.4)
  assert by_id["obj9"]["label"] == -1 and by_id["obj1"]["label"] == 0
  assert by_id["obj5"]["RA__deg_"] == b"155"
  # The same catalogue asked for with other arguments is not silently reused.
  with pytest.raises(ValueError, match="targets"):
    _build("files/cat", tmp_path / "data", catalogue, builder_args={"targets": []})


def test_hwc_npy_catalogue_int_labels_and_mixed_sizes(tmp_path, capsys):
  rng = np.random.default_rng(3)
  rows = []
  for i in range(6):
    size = 16 if i < 4 else 20  # Two sizes: stored at the most common, 16.
    np.save(tmp_path / f"{i}.npy", rng.random((size, size, 3)))
    rows.append([f"{i}.npy", str(i % 2)])
  catalogue = write_csv(tmp_path / "c.csv", ["path", "label"], rows)
  result = _build("files/mixed", tmp_path / "data", catalogue,
                  builder_args={"bands": "g,r,i", "test_fraction": 0,
                                "validation_fraction": 0})
  assert result.num_examples == {"train": 6}
  assert metadata(result.path)["class_names"] == ["0", "1"]
  assert all(r["image"].shape == (16, 16, 3) for r in records(result.path, "train"))
  assert "stored at 16x16 (the most common size)" in result.summary()


def test_make_input_end_to_end(tmp_path):
  root = lens_folder(str(tmp_path / "cutouts"), per_class=6, size=24, scale=0.2)
  config = ml_collections.ConfigDict(dict(
      source="tfds", name="files/e2e", data_dir=str(tmp_path / "data"), manual_dir=root,
      image_size=32, pixel_scale=0.101, channels=1, normalize="zscore", augment="",
      prefetch=1, num_workers=0, source_pixel_scale=0.0, labels_per_class=0))
  mesh = jax.make_mesh((len(jax.devices()),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  batches = make_input(config, global_batch_size=8, sharding=sharding, seed=0)
  batch = next(batches)
  assert batch["image"].shape == (8, 32, 32, 1)
  assert batch["label"].shape == (8,) and "filename" not in batch
  assert np.isfinite(np.asarray(batch["image"])).all()
  batches.close()
  evals = make_input(config, global_batch_size=8, sharding=sharding, seed=0, split="test",
                     single_pass=True)
  assert sum(int(np.asarray(b["mask"]).sum()) for b in evals) == 2
  # Another folder under the same name is refused, naming both; nothing is replaced.
  other = lens_folder(str(tmp_path / "other"), per_class=3)
  with pytest.raises(errors.UserError, match="was built from .*cutouts.*files/other"):
    build.ensure_built_from_config(ml_collections.ConfigDict(
        dict(name="files/e2e", data_dir=str(tmp_path / "data"), manual_dir=other)), False)
  assert len(all_records(pipeline.find_dataset_dir("files/e2e", str(tmp_path / "data")))) \
      == 12


# -- bad input: one line naming the file or the catalogue line ----------------------------


def _one_line(error):
  text = str(error.value)
  assert "\n" not in text
  return text


def _bad(tmp_path, manual_dir, match, **args):
  with pytest.raises(errors.UserError, match=match) as error:
    _build("files/bad", tmp_path / "data", manual_dir, builder_args=args)
  assert not os.path.exists(tmp_path / "data" / "files" / "bad")
  return _one_line(error)


def test_catalogue_path_missing(tmp_path):
  np.save(tmp_path / "a.npy", np.ones((8, 8)))
  catalogue = write_csv(tmp_path / "c.csv", ["path", "label"], [["a.npy", "x"],
                                                                ["nope.npy", "y"]])
  text = _bad(tmp_path, catalogue, "c.csv line 3")
  assert "nope.npy does not exist" in text and "skip_bad" in text


def test_label_missing_where_required(tmp_path):
  np.save(tmp_path / "a.npy", np.ones((8, 8)))
  catalogue = write_csv(tmp_path / "c.csv", ["path", "label"], [["a.npy", "x"],
                                                                ["a.npy", ""]])
  _bad(tmp_path, catalogue, "c.csv line 3: has no label", require_labels=True)
  _bad(tmp_path, catalogue, "no label column 'kind'", label="kind")


def test_bands_of_different_sizes(tmp_path):
  np.save(tmp_path / "g.npy", np.ones((8, 8)))
  np.save(tmp_path / "r.npy", np.ones((9, 9)))
  catalogue = write_csv(tmp_path / "c.csv", ["path_g", "path_r"], [["g.npy", "r.npy"]])
  _bad(tmp_path, catalogue, r"c.csv line 2 \(g.npy\): its bands have different sizes")


def test_fits_without_hdu_or_wcs(tmp_path):
  os.makedirs(tmp_path / "in")
  write_fits(str(tmp_path / "in" / "a.fits"), np.ones((8, 8)), wcs=False)
  text = _bad(tmp_path, tmp_path / "in", "a.fits: has no celestial WCS")
  assert "config.data.source_pixel_scale" in text
  _bad(tmp_path, tmp_path / "in", "a.fits: has no HDU 'SCI'", hdu="SCI",
       source_pixel_scale=0.1)
  result = _build("files/ok", tmp_path / "data", tmp_path / "in",
                  builder_args={"source_pixel_scale": 0.1, "validation_fraction": 0,
                                "test_fraction": 0})
  assert metadata(result.path)["pixel_scale"] == 0.1


def test_fits_one_band_per_extension(tmp_path):
  os.makedirs(tmp_path / "in")
  write_fits(str(tmp_path / "in" / "a.fits.gz"), np.zeros((8, 8)),
             extra_bands=[np.ones((8, 8)), 2 * np.ones((8, 8))])
  result = _build("files/mef", tmp_path / "data", tmp_path / "in",
                  builder_args={"hdu": "all", "bands": "u,g,r", "test_fraction": 0,
                                "validation_fraction": 0})
  image = records(result.path, "train")[0]["image"]
  assert image.shape == (8, 8, 3) and image[0, 0].tolist() == [0, 1, 2]
  assert metadata(result.path)["bands"] == ["u", "g", "r"]
  _bad(tmp_path, tmp_path / "in", r"a.fits.gz: has shape \(8, 8\).*hdu='all'", bands="u,g,r")


def test_nan_pixels_follow_skip_bad(tmp_path):
  folder = tmp_path / "imgs" / "lens"
  os.makedirs(folder)
  for i in range(4):
    np.save(folder / f"{i}.npy", np.ones((8, 8)))
  bad = np.ones((8, 8))
  bad[0, 0] = np.nan
  np.save(folder / "bad.npy", bad)
  _bad(tmp_path, tmp_path / "imgs", "bad.npy: 1 of 64 pixels are NaN")
  result = _build("files/skip", tmp_path / "data", tmp_path / "imgs", skip_bad=True,
                  builder_args={"validation_fraction": 0, "test_fraction": 0})
  assert result.num_examples == {"train": 4}
  assert result.report["skipped"] == {"non_finite": 1}


def test_wrong_band_count_and_bad_name(tmp_path):
  np.save(tmp_path / "a.npy", np.ones((8, 8, 3)))
  np.save(tmp_path / "b.npy", np.ones((8, 8)))
  catalogue = write_csv(tmp_path / "c.csv", ["path"], [["a.npy"], ["b.npy"]])
  _bad(tmp_path, catalogue, r"c.csv line 3 \(b.npy\): has shape \(8, 8\); expected",
       bands="g,r,i")
  with pytest.raises(errors.UserError, match="files/a b"):
    _build("files/a b", tmp_path / "data", catalogue)


# -- more layouts ---------------------------------------------------------------------------


def test_mixed_pixel_scales_keep_field_of_view(tmp_path):
  from astropy.io import fits
  root = tmp_path / "in" / "lens"
  os.makedirs(root)
  rng = np.random.default_rng(4)
  for i in range(3):
    write_fits(str(root / f"{i}.fits"), rng.random((16, 16)), 0.2)
  # The same 3.2" field at twice the resolution, tile-compressed (.fz).
  write_fits(str(tmp_path / "plain.fits"), np.ones((32, 32), np.int16), 0.1)
  with fits.open(tmp_path / "plain.fits") as hdus:
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(
        hdus[0].data.astype(np.int16), header=hdus[0].header)]).writeto(root / "fine.fits.fz")
  result = _build("files/mixed_scales", tmp_path / "data", tmp_path / "in",
                  builder_args={"validation_fraction": 0, "test_fraction": 0})
  assert metadata(result.path)["pixel_scale"] == pytest.approx(0.2)
  assert 'stored at 16x16 at 0.2"/px' in result.summary()
  fine = [r for r in records(result.path, "train") if r["filename"].endswith(b".fz")][0]
  assert fine["image"].shape == (16, 16, 1)
  # Fluxes per pixel: four fine pixels make one; the total flux is kept.
  assert fine["image"].sum() == pytest.approx(32 * 32, rel=1e-4)
  assert np.allclose(fine["image"], 4.0, atol=1e-3)


def test_unlabelled_jpeg_folder(tmp_path):
  from PIL import Image
  os.makedirs(tmp_path / "in")
  for i in range(3):
    Image.fromarray(np.full((10, 10), 40 * i, np.uint8)).save(tmp_path / "in" / f"{i}.jpg")
  result = _build("files/jpegs", tmp_path / "data", tmp_path / "in",
                  builder_args={"validation_fraction": 0, "test_fraction": 0})
  rows = records(result.path, "train")
  assert [r["label"] for r in rows] == [-1, -1, -1]
  assert rows[0]["image"].shape == (10, 10, 1)
  assert metadata(result.path)["class_names"] == []


def test_command_line_and_rebuild_when_a_catalogued_file_changes(tmp_path, capsys):
  np.save(tmp_path / "a.npy", np.ones((8, 8, 2)))
  np.save(tmp_path / "b.npy", np.zeros((8, 8, 2)))
  catalogue = write_csv(tmp_path / "c.csv", ["path", "kind"], [["a.npy", "x"],
                                                               ["b.npy", "y"]])
  argv = ["files/cli", f"--manual_dir={catalogue}", f"--data_dir={tmp_path / 'data'}",
          "--no_progress", '--builder_args={"label": "kind", "bands": "u,v", '
          '"validation_fraction": 0, "test_fraction": 0}']
  assert build.main(argv) == 0
  assert "Built files/cli: 2 train examples" in capsys.readouterr().out
  np.save(tmp_path / "b.npy", np.full((8, 8, 2), 2.0))
  os.utime(tmp_path / "b.npy", ns=(1, 1))
  assert build.main(argv) == 0
  assert "1 changed file(s) in manual_dir (b.npy)" in capsys.readouterr().out
  path = pipeline.find_dataset_dir("files/cli", str(tmp_path / "data"))
  assert sorted(float(r["image"].max()) for r in records(path, "train")) == [1.0, 2.0]
  assert metadata(path)["bands"] == ["u", "v"]


# -- a per-row pixel scale (catalogue column pixel_scale) --------------------------------


def test_npy_catalogue_pixel_scale_column(tmp_path):
  """.npy cutouts carry no WCS: a pixel_scale column gives each row's, and rows at another
  scale are mapped onto the stored grid keeping their field of view."""
  rows = []
  for i in range(3):
    np.save(tmp_path / f"{i}.npy", np.ones((16, 16)))
    rows.append([f"{i}.npy", "0.2", f"obj{i}"])
  np.save(tmp_path / "fine.npy", np.ones((32, 32)))  # The same 3.2" field at 0.1"/px.
  rows.append(["fine.npy", "0.1", "fine"])
  catalogue = write_csv(tmp_path / "c.csv", ["path", "pixel_scale", "id"], rows)
  result = _build("files/scaled", tmp_path / "data", catalogue,
                  builder_args={"validation_fraction": 0, "test_fraction": 0})
  meta = metadata(result.path)
  assert meta["pixel_scale"] == pytest.approx(0.2)
  assert meta["extra_columns"] == {"id": "id"}  # Used, not kept as a string feature.
  by_id = {r["id"].decode(): r for r in records(result.path, "train")}
  assert by_id["fine"]["image"].shape == (16, 16, 1)
  assert np.allclose(by_id["fine"]["image"], 4.0, atol=1e-3)  # Four fine pixels make one.
  # The cell wins over config.data.source_pixel_scale (which fills empty cells).
  rows[0][1] = ""
  catalogue = write_csv(tmp_path / "c2.csv", ["path", "pixel_scale", "id"], rows)
  result = _build("files/scaled2", tmp_path / "data", catalogue,
                  builder_args={"validation_fraction": 0, "test_fraction": 0,
                                "source_pixel_scale": 0.1})
  by_id = {r["id"].decode(): r for r in records(result.path, "train")}
  assert metadata(result.path)["pixel_scale"] == pytest.approx(0.2)
  assert by_id["obj0"]["image"][8, 8, 0] == pytest.approx(4.0, abs=1e-3)  # At 0.1"/px.
  assert np.allclose(by_id["obj1"]["image"], 1.0)  # Its cell: 0.2"/px, stored as it is.


def test_bad_pixel_scale_cell(tmp_path):
  np.save(tmp_path / "a.npy", np.ones((8, 8)))
  catalogue = write_csv(tmp_path / "c.csv", ["path", "pixel_scale"], [["a.npy", "0.1"],
                                                                      ["a.npy", "-1"]])
  text = _bad(tmp_path, catalogue, "c.csv line 3: pixel_scale is '-1'")
  assert "positive number (arcsec/pixel)" in text


def test_missing_scale_names_the_flag_and_the_column(tmp_path):
  os.makedirs(tmp_path / "in")
  write_fits(str(tmp_path / "in" / "a.fits"), np.ones((8, 8)), wcs=False)
  catalogue = write_csv(tmp_path / "in" / "c.csv", ["path"], [["a.fits"]])
  text = _bad(tmp_path, catalogue, "has no celestial WCS")
  assert "config.data.source_pixel_scale" in text and "pixel_scale column" in text
  # .npy rows without a scale build, and reading them asks for either.
  np.save(tmp_path / "in" / "b.npy", np.ones((8, 8)))
  catalogue = write_csv(tmp_path / "in" / "d.csv", ["path"], [["b.npy"]])
  result = _build("files/noscale", tmp_path / "data", catalogue,
                  builder_args={"validation_fraction": 0, "test_fraction": 0})
  info = tfds.builder_from_directory(result.path).info
  with pytest.raises(errors.UserError) as error:
    pipeline.dataset_pixel_scale(info, "files/noscale", ml_collections.ConfigDict())
  text = _one_line(error)
  assert "config.data.source_pixel_scale" in text and "pixel_scale column" in text
  # A row with a scale beside one without is named.
  catalogue = write_csv(tmp_path / "in" / "e.csv", ["path", "pixel_scale"],
                        [["b.npy", "0.1"], ["b.npy", ""]])
  text = _bad(tmp_path, catalogue, r"e.csv line 3 \(b.npy\): has no pixel scale")
  assert "pixel_scale column" in text
