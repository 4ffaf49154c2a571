"""experiments/bench_cost.py's arithmetic: the batch line, what fits, the matmul count."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import bench_cost  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_the_line_through_two_compiles_gives_the_largest_batch():
  fixed, per_example = bench_cost.line_through([(16, 1.16e9), (64, 1.64e9)])
  assert fixed == pytest.approx(1.0e9) and per_example == pytest.approx(1.0e7)
  # 80% of 16 GB = 12.8e9: (12.8e9 - 1e9) / 1e7 = 1180 examples.
  assert bench_cost.largest_batch(fixed, per_example, 16) == 1180
  assert bench_cost.largest_batch(20e9, per_example, 16) == 0


def test_matmul_count_grows_linearly_plus_tokens_squared():
  objective = bench_cost.config_for("Ti", 64, 16, "bfloat16").objective
  small, large = (bench_cost.matmul_gflop_per_image("B", image, objective) for image in (32, 150))
  assert (small["tokens"], large["tokens"]) == (16, 225)
  # Attention grows faster than the linear layers, which grow with the tokens.
  assert large["attention"] / small["attention"] > large["linear"] / small["linear"] > 10
  # The decoder (512 wide, every token) is shared; a wider encoder (kept tokens) adds to it.
  ti = bench_cost.matmul_gflop_per_image("Ti", 64, objective)
  b = bench_cost.matmul_gflop_per_image("B", 64, objective)
  assert 1.5 < b["linear"] / ti["linear"] < 2.5
  # XLA counted 18.9 GFLOP per image for this step (experiments/results/notes.md).
  assert b["linear"] + b["attention"] == pytest.approx(18.9, rel=0.05)
