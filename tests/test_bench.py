"""LensBench end to end: the runlocal preset on a tiny pretraining checkpoint writes every
row, bench.json, BENCH.md and the plots, and a restarted bench resumes at the next row."""
import json
import os

import pytest

from lensfm import config_args
from lensfm.tasks import bench
from lensfm.tasks import bench_sets
from lensfm.tasks import pretrain

# One worker builds this module's fixtures (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("bench")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(spec):
  return config_args.load(os.path.join(ROOT, "configs", spec))


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
  root = tmp_path_factory.mktemp("bench")
  pre = load("mae_vit_b.py:runlocal")
  pre.data.image_size = 32
  pre.data.recipe_overrides = {"num_pix": 32}
  pre.update(batch_size=16, total_steps=2, log_every=1, checkpoint_every=2,
             visualize_every=0, progress_bar=False)
  pretrain.run(pre, str(root / "pretrain"))
  c = load("bench.py:preset=runlocal")
  c.update(init_from=str(root / "pretrain" / "checkpoints" / "2"),
           data_dir=str(root / "sets"), fail_fast=True)
  summary = bench.run(c, str(root / "bench"))
  return root, c, summary


def test_every_row_is_scored_and_reported(ran):
  root, c, summary = ran
  rows = bench.plan_rows(c, has_checkpoint=True)
  assert [r["id"] for r in summary["rows"]] == [r["id"] for r in rows]
  assert not summary["errors"]
  assert {r["mode"] for r in rows} == {"finetune", "scratch"}
  assert {r["mode"] for r in rows if r["data"] != "model_ii"} == {"finetune"}
  assert {r["task"] for r in rows} == {"classify", "regress", "superres", "lensfind"}
  for r in summary["rows"]:
    assert set(r["scores"]) >= {"validation", "test"}, r["id"]
    assert r["seconds"] > 0 and r["device_kind"] and r["jax_version"]
    head = r["scores"]["test"][bench.HEADLINE[r["task"]]]
    assert isinstance(head, float), (r["id"], head)
  transfer = [r for r in summary["rows"] if r.get("transfer")]
  assert transfer and all(set(r["scores"]) >= {"model_i/test", "model_iii/test",
                                               "model_ii_rotated/test"} for r in transfer)
  meta = summary["meta"]
  assert meta["grid"] == {"image_size": 32, "pixel_scale": 0.101}
  assert meta["checkpoint_step"] == 2 and meta["steps"]["classify"] == 10
  table = (root / "bench" / "BENCH.md").read_text()
  assert "Transfer: Model II@10 fine-tune scored on Model III" in table
  assert "Lens finding, TPR at 1% FPR" in table
  for name in ("label_efficiency.png", "cross_instrument.png"):
    assert (root / "bench" / name).stat().st_size > 1000
  on_disk = json.loads((root / "bench" / "bench.json").read_text())
  assert on_disk["table"] == json.loads(json.dumps(summary["table"]))


def test_sets_are_cached_and_fixed(ran):
  root, c, _ = ran
  path = bench_sets.set_path(str(root / "sets"), "model_iii", 64, "test")
  assert os.path.exists(path)
  again = bench_sets.simulate_set("model_iii", "test", 64)
  cached = bench_sets.load_set(str(root / "sets"), "model_iii", "test", 64)
  assert (again["image"] == cached["image"]).all()
  assert sorted(set(cached["label"].tolist())) == [0, 1, 2]
  other = bench_sets.load_set(str(root / "sets"), "model_iii", "validation", 32)
  assert not (other["image"][:8] == cached["image"][:8]).all()


def test_an_interrupted_bench_resumes_at_the_next_row(ran, capsys):
  root, c, summary = ran
  workdir = root / "bench"
  rows = summary["rows"]
  os.remove(bench.row_file(str(workdir), rows[-1]["id"]))
  # A row that failed before is run again, not kept.
  failed = bench.row_file(str(workdir), rows[-2]["id"])
  with open(failed, "w") as f:
    json.dump({**rows[-2], "error": "TypeError: before a fix"}, f)
  kept = json.loads(open(bench.row_file(str(workdir), rows[0]["id"])).read())
  again = bench.run(c, str(workdir))
  out = capsys.readouterr().out
  assert out.count("done before, kept") == len(rows) - 2
  assert f"{rows[-1]['id']} ..." in out and f"{rows[-2]['id']} ..." in out
  assert "error" not in json.loads(open(failed).read())
  assert again["rows"][0] == kept
  assert len(again["rows"]) == len(rows) and not again["errors"]


def test_converged_rows_report_best_step_time_search_and_both_tables(ran):
  root, _, summary = ran
  converged = [r for r in summary["rows"] if r["regime"] == "converged"]
  assert [r["id"] for r in converged] == ["converged/classify/model_ii/10/finetune/s0",
                                          "converged/classify/model_ii/10/scratch/s0"]
  for r in converged:
    search = r["lr_search"]
    assert [x["lr_factor"] for x in search] == [1.0, 3.0]
    chosen = search[bench.choose(search, lower_is_better=False)]
    assert r["lr_factor"] == chosen["lr_factor"]
    # The state scored is the chosen run's best-validation state.
    assert r["scores"]["validation"]["auc_macro"] == pytest.approx(chosen["validation"])
    assert r["steps_to_best"] == chosen["best_step"] and r["steps_to_best"] % 10 == 0
    assert 0 < r["steps_to_best"] <= r["steps"] <= 30
    assert 0 < r["seconds_to_best"] <= r["train_seconds"]
    assert r["early_stopping"]["stopped_early"] != r["hit_cap"]
    assert "test" not in json.dumps(search)  # The search never saw a test score.
  text = (root / "bench" / "BENCH.md").read_text()
  assert "## At convergence (accuracy ceiling)" in text
  assert "## At a fixed budget (compute efficiency)" in text
  assert " steps, " in text.split("## At a fixed budget")[0]
  assert "[1] ML4SCI/DeepLense" in text
  on_disk = json.loads((root / "bench" / "bench.json").read_text())
  assert on_disk["table_converged"] and on_disk["table"]


def test_the_learning_rate_is_chosen_on_validation_only():
  runs = [{"validation": 0.8, "test": 0.99}, {"validation": 0.9, "test": 0.5},
          {"validation": None}, {"validation": float("nan")}]
  assert bench.choose(runs, lower_is_better=False) == 1
  assert bench.choose([{"validation": 0.3}, {"validation": 0.2}, {"validation": None}],
                      lower_is_better=True) == 1
