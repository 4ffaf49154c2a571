"""Every task reaches a model by one path: evaluate, predict, knn and LensBench make the
same batches from the same files (mapped onto the model's grid, normalised, padded)."""
import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lensfm import config_args
from lensfm.data import build
from lensfm.data import image_files
from lensfm.data import model_input
from lensfm.data import pipeline
from lensfm.tasks import bench
from lensfm.tasks import evaluate
from lensfm.tasks import knn
from lensfm.tasks import predict
from lensfm.train import sharding as sharding_lib

CLASSES = ("no_sub", "cdm", "axion")
BATCH = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC_SCALE = 0.101  # The released Model II files' pixels.


def write_files(root, per_class=3, seed=0):
  """DeepLense Model II files in the user-split layout (train/ and test/)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:64, :64] - 31.5
  for split in ("train", "test"):
    for label, name in enumerate(CLASSES):
      os.makedirs(os.path.join(root, split, name))
      for i in range(per_class):
        ring = np.exp(-(np.hypot(yy, xx) - 12 - 3 * rng.random()) ** 2 / 8)
        image = ring * (1 + label) + 0.05 * rng.standard_normal((64, 64))
        path = os.path.join(root, split, name, f"{name}_{i}.npy")
        if name == "axion":  # DeepLense's axion files: pickled [image, mass].
          np.save(path, np.array([image, 1e-23], dtype=object))
        else:
          np.save(path, image)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("one_path")
  write_files(str(root / "files"))
  data = ml_collections.ConfigDict(dict(
      source="tfds", name="deeplense/model_ii", manual_dir=str(root / "files"),
      data_dir=str(root / "tfds"), image_size=32, pixel_scale=0.16, channels=1,
      normalize="zscore", augment="rot90,flip", prefetch=1, num_workers=0,
      source_pixel_scale=0., labels_per_class=0, labels_seed=0, recipe=""))
  build.ensure_built(data.name, data.data_dir, data.manual_dir, progress=False)
  return data


def images_of(batches, count=None):
  """Real examples' images of a stream of batches, in order, as numpy."""
  out = []
  for i, batch in enumerate(batches):
    if count is not None and i == count:
      break
    mask = np.asarray(jax.device_get(batch["mask"]))
    out.append(np.asarray(jax.device_get(batch["image"]))[mask])
  return np.concatenate(out)


def test_evaluate_predict_knn_and_bench_make_identical_batches(files):
  sharding = sharding_lib.batch_sharding(sharding_lib.make_mesh((("data", -1), ("fsdp", 1))))
  grid, normalization = model_input.Grid.of(files), model_input.Normalization.of(files)

  evaluate_config = ml_collections.ConfigDict(dict(split="test", batch_size=BATCH, seed=0,
                                                   num_examples=0))
  source, count = evaluate.input_batches(evaluate_config, None, None, files, sharding)
  from_evaluate = images_of(source, count)
  source.close()

  knn_config = ml_collections.ConfigDict(dict(
      data=files.to_dict(), seed=0, knn=dict(num_train_examples=0, num_test_examples=0)))
  _, (source, count) = knn.bank_and_test_batches(knn_config, BATCH, sharding)
  from_knn = images_of(source, count)
  source.close()

  bench_config = ml_collections.ConfigDict(dict(data=files.to_dict(), batch_size=BATCH))
  source, count = bench.tfds_batches(bench_config, "test", sharding)
  from_bench_rows = images_of(source, count)
  source.close()

  # The same test files, read from disk in the dataset's record order.
  dataset_dir = pipeline.find_dataset_dir(files.name, files.data_dir)
  records = tfds.builder_from_directory(dataset_dir).as_data_source(split="test")
  paths = [os.path.join(files.manual_dir, np.asarray(r["filename"]).item().decode())
           for r in records]
  raw = np.stack([image_files.read_image(p, size=None, allow_pickle=True) for p in paths])
  from_predict = np.concatenate([
      images_of([predict.model_batch(raw[i:i + BATCH], SRC_SCALE, grid, normalization, BATCH,
                                     sharding)])
      for i in range(0, len(raw), BATCH)])
  from_bench_sets = images_of(bench.set_batches(
      {"image": raw, "label": np.zeros(len(raw), np.int32)}, SRC_SCALE, bench_config,
      sharding))

  assert from_evaluate.shape == (9, 32, 32, 1)
  for name, images in (("knn", from_knn), ("bench rows", from_bench_rows),
                       ("predict", from_predict), ("bench sets", from_bench_sets)):
    np.testing.assert_allclose(images, from_evaluate, atol=2e-5, err_msg=name)


def test_knn_task_runs_on_a_built_dataset_with_its_own_classes(files, tmp_path):
  """kNN from a random encoder on the files above: classes from the dataset, a summary."""
  config = config_args.load(os.path.join(ROOT, "configs", "finetune_classify.py:runlocal,mode=knn"))
  config.data.update({k: v for k, v in files.items() if k in config.data})
  config.update(batch_size=BATCH, mesh=(("data", -1), ("fsdp", 1)))
  config.knn.update(num_train_examples=0, num_test_examples=0)
  summary = knn.run(config, str(tmp_path / "knn"))
  assert summary["bank_size"] == 9 and summary["num_examples"] == 9
  assert {"auc_no_sub", "auc_cdm", "auc_axion"} <= set(summary)
