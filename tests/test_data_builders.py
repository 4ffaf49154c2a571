"""lensfm.data builders: DeepLense layouts, lensfm_sim, bad input, safe builds."""
import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lensfm.data import build
from lensfm.data.builders.base import BadInputError

CLASSES = ("no_sub", "cdm", "axion")


def write_released(root, *, size=64, per_class=5, counts=False, seed=0):
  """The released Models I-III layout; returns {relative path: (image, mass)}."""
  rng = np.random.default_rng(seed)
  truth = {}
  for label, name in enumerate(CLASSES):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      image = (rng.poisson(50, (size, size)) if counts
               else rng.random((size, size)) + label)
      relative = os.path.join(name, f"{name}_sim_{rng.integers(2**62)}{i}.npy")
      mass = 0.0
      if name == "axion":
        mass = float(10 ** rng.uniform(-24, -22))
        np.save(os.path.join(root, relative),
                np.array([image, mass], dtype=object))
      else:
        np.save(os.path.join(root, relative), image)
      truth[relative] = (image, mass)
  return truth


def write_common(root, per_class=2):
  """The common test layout train|val/{no,sphere,vort}/*.npy, (1, 150, 150)."""
  rng = np.random.default_rng(1)
  for split in ("train", "val"):
    for name in ("no", "sphere", "vort"):
      os.makedirs(os.path.join(root, split, name))
      for i in range(per_class):
        np.save(os.path.join(root, split, name, f"{i}.npy"),
                rng.random((1, 150, 150)))


def records(path, split):
  source = tfds.builder_from_directory(path).as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def _build(name, data_dir, manual_dir=None, **kwargs):
  return build.ensure_built(name, str(data_dir), manual_dir and str(manual_dir),
                            progress=False, **kwargs)


def _no_leftovers(data_dir):
  if not os.path.exists(data_dir):   # refused before anything was written
    return True
  return not [d for d in os.listdir(data_dir)
              if d.startswith(build.INCOMPLETE_PREFIX)]


def test_model_ii_seeded_split_counts_labels_masses(tmp_path):
  truth = write_released(tmp_path / "raw")
  result = _build("deeplense/model_ii", tmp_path / "data", tmp_path / "raw",
                  test_fraction=0.2, seed=1)
  assert result.built and result.num_examples == {"train": 12, "test": 3}
  seen = set()
  for split in ("train", "test"):
    rows = records(result.path, split)
    assert sorted(int(r["label"]) for r in rows) == sorted(
        [0, 1, 2] * (4 if split == "train" else 1))
    for row in rows:
      relative = row["filename"].decode()
      image, mass = truth[relative]
      seen.add(relative)
      assert CLASSES[int(row["label"])] == relative.split(os.sep)[0]
      np.testing.assert_allclose(row["image"][..., 0], image, rtol=1e-6)
      assert row["image"].shape == (64, 64, 1)
      assert row["axion_mass"] == pytest.approx(mass, rel=1e-6)
  assert seen == set(truth)
  stats = build.read_metadata(result.path)["pixel_stats"]
  assert len(stats["mean"]) == 1 and stats["std"][0] > 0
  # Readable by tfds.data_source by name, with no TensorFlow anywhere.
  source = tfds.data_source("deeplense/model_ii", data_dir=str(tmp_path / "data"))
  assert len(source["train"]) == 12
  assert "tensorflow" not in sys.modules
  assert _no_leftovers(tmp_path / "data")


def test_seeded_split_depends_on_seed_only(tmp_path):
  write_released(tmp_path / "raw", per_class=6)
  names = []
  for seed, out in ((0, "a"), (0, "b"), (5, "c")):
    result = _build("deeplense/model_iii", tmp_path / out, tmp_path / "raw",
                    seed=seed, test_fraction=0.5)
    names.append(sorted(r["filename"] for r in records(result.path, "test")))
  assert names[0] == names[1] and names[0] != names[2]


def test_model_i_counts_and_user_splits(tmp_path):
  raw = tmp_path / "raw"
  train = write_released(raw / "train", size=150, per_class=2, counts=True)
  write_released(raw / "test", size=150, per_class=1, counts=True, seed=3)
  result = _build("deeplense/model_i", tmp_path / "data", raw)
  assert result.num_examples == {"train": 6, "test": 3}
  for row in records(result.path, "train"):
    image, _ = train[os.path.relpath(row["filename"].decode(), "train")]
    np.testing.assert_array_equal(row["image"][..., 0], image)  # Exact counts.
  assert build.read_metadata(result.path)["build_args"] == {
      "layout": "user_splits"}


def test_common_test_layout(tmp_path):
  write_common(tmp_path / "raw")
  result = _build("deeplense/common_test", tmp_path / "data", tmp_path / "raw")
  assert result.num_examples == {"train": 6, "validation": 6}
  rows = records(result.path, "validation")
  assert sorted(int(r["label"]) for r in rows) == [0, 0, 1, 1, 2, 2]
  for row in rows:
    assert row["image"].shape == (150, 150, 1) and row["axion_mass"] == 0.0
    assert ["no", "sphere", "vort"][int(row["label"])] in row["filename"].decode()


def _corrupt(path, how):
  if how == "truncated":
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:len(raw) // 2])
  elif how == "not_npy":
    open(path, "wb").write(b"not an array")
  elif how == "wrong_shape":
    np.save(path, np.zeros((32, 32)))
  elif how == "wrong_dtype":
    np.save(path, np.full((64, 64), "x"))
  elif how == "nan":
    image = np.zeros((64, 64))
    image[3, 4] = np.nan
    np.save(path, image)
  elif how == "inf":
    np.save(path, np.full((64, 64), np.inf))
  elif how == "bad_mass":
    np.save(path, np.array([np.zeros((64, 64)), -1.0], dtype=object))


EXPECTED_PROBLEM = {"truncated": "truncated", "not_npy": "not a .npy",
                    "wrong_shape": r"shape \(32, 32\)", "wrong_dtype": "dtype",
                    "nan": "NaN", "inf": "infinite", "bad_mass": "axion mass"}


@pytest.mark.parametrize("how", sorted(EXPECTED_PROBLEM))
def test_bad_file_names_file_and_leaves_no_dataset(tmp_path, how):
  truth = write_released(tmp_path / "raw", per_class=2)
  bad = sorted(p for p in truth if p.startswith("axion"))[0]
  _corrupt(str(tmp_path / "raw" / bad), how)
  with pytest.raises(BadInputError, match=EXPECTED_PROBLEM[how]) as error:
    _build("deeplense/model_ii", tmp_path / "data", tmp_path / "raw")
  assert bad in str(error.value) and "expected" in str(error.value)
  assert "skip_bad" in str(error.value)
  assert not build.is_built(build.dataset_path(str(tmp_path / "data"),
                                               "deeplense/model_ii"))
  assert _no_leftovers(tmp_path / "data")


def test_skip_bad_counts_and_reports(tmp_path):
  truth = write_released(tmp_path / "raw", per_class=3)
  bad = sorted(truth)[:2]  # An axion and a cdm file.
  _corrupt(str(tmp_path / "raw" / bad[0]), "truncated")
  _corrupt(str(tmp_path / "raw" / bad[1]), "nan")
  result = _build("deeplense/model_ii", tmp_path / "data", tmp_path / "raw",
                  skip_bad=True, test_fraction=0.0)
  assert result.num_examples == {"train": 7}
  assert result.report["skipped"] == {"unreadable": 1, "non_finite": 1}
  assert all(any(b in line for line in result.report["skipped_files"])
             for b in bad)
  assert "Skipped 2 bad files" in result.summary()


@pytest.mark.parametrize("problem", ["no_manual_dir", "missing_class",
                                     "empty_class"])
def test_bad_directories_are_clear_errors(tmp_path, problem):
  raw = tmp_path / "raw"
  write_released(raw, per_class=1)
  if problem == "no_manual_dir":
    raw, match = tmp_path / "nowhere", "manual_dir does not exist"
  elif problem == "missing_class":
    for f in os.listdir(raw / "cdm"):
      os.remove(raw / "cdm" / f)
    os.rmdir(raw / "cdm")
    match = "cdm: class directory is missing"
  else:
    for f in os.listdir(raw / "cdm"):
      os.remove(raw / "cdm" / f)
    match = "cdm: class directory has no .npy files"
  with pytest.raises(BadInputError, match=match):
    _build("deeplense/model_ii", tmp_path / "data", raw, skip_bad=True)
  assert _no_leftovers(tmp_path / "data")


def test_reuse_mismatch_and_failed_overwrite_keeps_good_build(tmp_path):
  truth = write_released(tmp_path / "raw", per_class=2)
  first = _build("deeplense/model_ii", tmp_path / "data", tmp_path / "raw")
  again = _build("deeplense/model_ii", tmp_path / "data", tmp_path / "raw")
  assert first.built and not again.built
  assert again.num_examples == first.num_examples
  with pytest.raises(ValueError, match="seed=0 .asked 7."):
    _build("deeplense/model_ii", tmp_path / "data", tmp_path / "raw", seed=7)
  _corrupt(str(tmp_path / "raw" / sorted(truth)[0]), "truncated")
  with pytest.raises(BadInputError):
    _build("deeplense/model_ii", tmp_path / "data", tmp_path / "raw",
           overwrite=True)
  kept = records(first.path, "train")  # The good build is untouched.
  assert len(kept) == first.num_examples["train"]
  assert _no_leftovers(tmp_path / "data")


def test_command_line(tmp_path, capsys):
  write_released(tmp_path / "raw", per_class=1)
  argv = ["deeplense/model_ii", f"--manual_dir={tmp_path / 'raw'}",
          f"--data_dir={tmp_path / 'data'}", "--no_progress",
          "--test_fraction=0"]
  assert build.main(argv) == 0
  assert "Built deeplense/model_ii: 3 train examples" in capsys.readouterr().out
  assert build.main(["deeplense/model_ii", "--manual_dir=/no/such/dir",
                     f"--data_dir={tmp_path / 'other'}", "--no_progress"]) == 1
  assert "/no/such/dir: manual_dir does not exist" in capsys.readouterr().err
  assert build.main(["deeplense/model_v", "--no_progress"]) == 1


def test_lensfm_sim_is_deterministic_for_a_seed(tmp_path):
  kwargs = dict(num_examples=5, num_test_examples=2,
                recipe_overrides={"num_pix": 16})
  a = _build("lensfm_sim/model_ii", tmp_path / "a", seed=0, **kwargs)
  b = _build("lensfm_sim/model_ii", tmp_path / "b", seed=0, **kwargs)
  c = _build("lensfm_sim/model_ii", tmp_path / "c", seed=1, **kwargs)
  assert a.num_examples == {"train": 5, "test": 2}
  rows_a, rows_b, rows_c = (records(r.path, "train") for r in (a, b, c))
  assert rows_a[0].keys() >= {"image", "label", "axion_mass", "n_subhalos",
                              "sub_mass_fraction", "theta_e"}
  assert rows_a[0]["image"].shape == (16, 16, 1)
  for x, y in zip(rows_a, rows_b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert not np.array_equal(rows_a[0]["image"], rows_c[0]["image"])
  # Readable by name while the builder class is registered (its features
  # follow the stored overrides, not the recipe's default size).
  source = tfds.data_source("lensfm_sim/model_ii", data_dir=str(tmp_path / "a"))
  assert source["train"][0]["image"].shape == (16, 16, 1)
  assert build.read_metadata(a.path)["build_args"]["recipe_overrides"] == {
      "num_pix": 16}
  with pytest.raises(ValueError, match="num_examples=5 .asked 6."):
    _build("lensfm_sim/model_ii", tmp_path / "a", num_examples=6,
           recipe_overrides={"num_pix": 16})


def test_lensfm_sim_fast_writer_matches_tfds_and_simulator(tmp_path):
  """The chunked writer stores exactly the simulated examples, in key order, as records
  TFDS's own serializer would write, with the label index and pixel stats that the
  per-example path gives."""
  from tensorflow_datasets.core import example_serializer  # pylint: disable=g-import-not-at-top
  from lensfm.data.builders import lensfm_sim  # pylint: disable=g-import-not-at-top
  kwargs = dict(num_examples=7, num_test_examples=3, recipe_overrides={"num_pix": 16})
  result = _build("lensfm_sim/model_ii", tmp_path / "a", seed=3, **kwargs)
  builder = lensfm_sim.LensfmSim(config="model_ii", data_dir=str(tmp_path / "ref"), seed=3,
                                 **kwargs)
  builder._split_sizes()  # pylint: disable=protected-access
  features = builder.info.features
  reference = example_serializer.ExampleSerializer(features.get_serialized_info())
  for split, num in (("train", 7), ("test", 3)):
    expected = list(builder._generate_examples(split, num))  # pylint: disable=protected-access
    rows = records(result.path, split)
    assert [k for k, _ in expected] == list(range(num))
    for (_, want), got in zip(expected, rows):
      assert got.keys() == want.keys()
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    labels = np.load(os.path.join(result.path, f"lensfm_labels-{split}.npy"))
    np.testing.assert_array_equal(labels, [int(e["label"]) for _, e in expected])
    # Record for record, the bytes decode as TFDS's own serialisation does.
    chunk = {k: np.stack([e[k] for _, e in expected]) for k in expected[0][1]}
    fast = lensfm_sim.ChunkSerializer(features)(chunk)
    for record, (_, example) in zip(fast, expected):
      slow = reference.serialize_example(features.encode_example(example))
      a, b = features.deserialize_example_np(record), features.deserialize_example_np(slow)
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  stored = build.read_metadata(result.path)["pixel_stats"]
  want = builder._stats.result()  # pylint: disable=protected-access
  # The fast path sums each image on device in float32: equal to float32 rounding.
  for key in ("mean", "std"):
    np.testing.assert_allclose(stored[key], want[key], rtol=1e-5)


def test_build_from_another_changed_or_missing_manual_dir_is_not_reused(tmp_path, capsys):
  first_files = write_released(tmp_path / "raw", per_class=2, seed=0)
  other_files = write_released(tmp_path / "other", per_class=3, seed=1)
  first = _build("deeplense/model_ii", tmp_path / "data", tmp_path / "raw")
  # The same files again: reused.
  assert not _build("deeplense/model_ii", tmp_path / "data", tmp_path / "raw").built
  # Another directory: rebuilt from it (never the old records under the new name).
  other = _build("deeplense/model_ii", tmp_path / "data", tmp_path / "other")
  assert other.built and "new file(s) in manual_dir" in other.rebuilt_because
  names = {r["filename"].decode() for s in other.num_examples for r in records(other.path, s)}
  assert names == set(other_files) and not names & set(first_files)
  # One file rewritten in place (other size): rebuilt.
  changed = sorted(other_files)[0]
  np.save(os.path.join(tmp_path / "other", changed), np.zeros((64, 64)) + 0.5)
  os.utime(os.path.join(tmp_path / "other", changed), ns=(1, 1))
  again = _build("deeplense/model_ii", tmp_path / "data", tmp_path / "other")
  assert again.built and f"1 changed file(s) in manual_dir ({changed})" in again.rebuilt_because
  # A source that no longer exists is an error, from Python and from the command line,
  # and the existing build is left as it was.
  with pytest.raises(BadInputError, match="manual_dir does not exist"):
    _build("deeplense/model_ii", tmp_path / "data", tmp_path / "gone")
  assert build.main(["deeplense/model_ii", f"--manual_dir={tmp_path / 'gone'}",
                     f"--data_dir={tmp_path / 'data'}", "--no_progress"]) == 1
  err = capsys.readouterr().err
  assert "manual_dir does not exist" in err and "Reused" not in err
  assert len(records(again.path, "train")) == again.num_examples["train"]
  # Without a manual_dir there is nothing to compare: the build is used as it is.
  assert not _build("deeplense/model_ii", tmp_path / "data").built
  assert _no_leftovers(tmp_path / "data")
  del first


def test_lensfm_sim_grouped_render_matches_the_simulator():
  """On CPU builds render groups of examples without the substructure none of them has:
  every example (all classes mixed, any order) equals `recipe.sample`'s to float32
  rounding."""
  import jax  # pylint: disable=g-import-not-at-top
  from lensfm.data import sim_source  # pylint: disable=g-import-not-at-top
  from lensfm.sim import recipes  # pylint: disable=g-import-not-at-top
  recipe = recipes.get("model_ii", num_pix=16)
  keys = jax.random.split(jax.random.PRNGKey(0), 64)
  want = jax.jit(lambda k: sim_source.simulate(recipe, k))(keys)
  got = jax.jit(lambda k: sim_source.simulate(recipe, k, skip_absent=True))(keys)
  assert len(set(np.asarray(want["label"]).tolist())) == 3
  for key in want:
    np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]),
                               rtol=2e-5, atol=1e-6 * float(np.abs(want["image"]).max()))


def test_chunk_serializer_round_trips_through_tfds():
  """Hand-encoded records decode with TFDS's parser: multi-byte and negative varints,
  floats, and bytes-encoded tensors of any length."""
  from lensfm.data.builders import lensfm_sim  # pylint: disable=g-import-not-at-top
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(50, 3), dtype=np.float32,
                                    encoding=tfds.features.Encoding.BYTES),
      "count": tfds.features.Scalar(dtype=np.int64),
      "flag": tfds.features.Scalar(dtype=np.int32),
      "value": tfds.features.Scalar(dtype=np.float32)})
  rng = np.random.default_rng(0)
  chunk = {"image": rng.standard_normal((5, 50, 3)).astype(np.float32),
           "count": np.array([0, 127, 128, -1, 2**40], np.int64),
           "flag": np.array([1, -2**31, 2**31 - 1, 3, 0], np.int32),
           "value": np.array([0.5, -1e30, np.pi, 0.0, -0.0], np.float32)}
  records = lensfm_sim.ChunkSerializer(features)(chunk)
  for i, record in enumerate(records):
    row = features.deserialize_example_np(record)
    for key, values in chunk.items():
      np.testing.assert_array_equal(row[key], values[i])


def test_lensfm_sim_non_finite_image_is_named_or_skipped(tmp_path, monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from lensfm.data.builders import lensfm_sim  # pylint: disable=g-import-not-at-top
  simulate = lensfm_sim.chunk_simulator

  def with_nan(recipe, size):
    def run(base_key, start):
      out = dict(simulate(recipe, size)(base_key, start))
      out["image"] = out["image"].at[1, 0, 0, 0].set(np.nan)  # Example start + 1.
      return out
    return jax.jit(run)

  lensfm_sim.checked_chunk_simulator.cache_clear()
  monkeypatch.setattr(lensfm_sim, "chunk_simulator", with_nan)
  kwargs = dict(num_examples=4, num_test_examples=4, recipe_overrides={"num_pix": 16})
  try:
    with pytest.raises(BadInputError, match="train example 1: 1 of 256 pixels"):
      _build("lensfm_sim/model_ii", tmp_path / "a", **kwargs)
    result = _build("lensfm_sim/model_ii", tmp_path / "b", skip_bad=True, **kwargs)
  finally:
    lensfm_sim.checked_chunk_simulator.cache_clear()
  assert result.num_examples == {"train": 3, "test": 3}
  assert result.report["skipped"] == {"non_finite": 2}
  assert all(np.isfinite(r["image"]).all() for r in records(result.path, "train"))
  assert _no_leftovers(tmp_path / "a")


def test_lensfm_sim_model_i_counts_stored_as_exact_uint16(tmp_path):
  """Model I's Poisson counts are written as uint16 (half the bytes) and read back equal
  to the simulator's float32 counts, bit for bit; other recipes stay float32."""
  import jax  # pylint: disable=g-import-not-at-top
  from lensfm.data import sim_source  # pylint: disable=g-import-not-at-top
  from lensfm.data.builders import lensfm_sim  # pylint: disable=g-import-not-at-top
  result = _build("lensfm_sim/model_i", tmp_path / "a", seed=2, num_examples=5,
                  num_test_examples=1, recipe_overrides={"num_pix": 24})
  builder = tfds.builder_from_directory(result.path)
  assert builder.info.features["image"].np_dtype == np.uint16
  rows = records(result.path, "train")
  recipe = lensfm_sim.get_recipe("model_i", {"num_pix": 24})
  base_key = jax.random.fold_in(jax.random.PRNGKey(2), sim_source.split_id("train"))
  want = lensfm_sim.chunk_simulator(recipe, 8)(base_key, np.uint32(0))["image"]
  assert np.asarray(want).max() > 1  # Real counts, not an all-zero image.
  for i, row in enumerate(rows):
    assert row["image"].dtype == np.uint16
    np.testing.assert_array_equal(row["image"].astype(np.float32), np.asarray(want[i]))
  assert lensfm_sim.stored_image_dtype(lensfm_sim.get_recipe("model_ii")) == np.float32


def test_lensfm_sim_counts_uint16_cannot_hold_are_an_error(tmp_path, monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from lensfm.data.builders import lensfm_sim  # pylint: disable=g-import-not-at-top
  simulate = lensfm_sim.chunk_simulator

  def with_big_count(recipe, size):
    def run(base_key, start):
      out = dict(simulate(recipe, size)(base_key, start))
      out["image"] = out["image"].at[2, 0, 0, 0].set(70000.0)
      return out
    return jax.jit(run)

  lensfm_sim.checked_chunk_simulator.cache_clear()
  monkeypatch.setattr(lensfm_sim, "chunk_simulator", with_big_count)
  try:
    with pytest.raises(ValueError, match="example 2 has values that are not integers"):
      _build("lensfm_sim/model_i", tmp_path / "a", num_examples=4,
             recipe_overrides={"num_pix": 16})
  finally:
    lensfm_sim.checked_chunk_simulator.cache_clear()
  assert _no_leftovers(tmp_path / "a")
