"""lensfm.train.cost's arithmetic, which experiments/benchmarks/cost.py tabulates: the batch
line, what fits, the matmul count."""
import pytest

from configs import mae_vit_b
from lensfm.train import cost


def test_the_line_through_two_compiles_gives_the_largest_batch():
  fixed, per_example = cost.line_through([(16, 1.16e9), (64, 1.64e9)])
  assert fixed == pytest.approx(1.0e9) and per_example == pytest.approx(1.0e7)
  # 80% of 16 GB = 12.8e9: (12.8e9 - 1e9) / 1e7 = 1180 examples.
  assert cost.largest_batch(fixed, per_example, 16) == 1180
  assert cost.largest_batch(20e9, per_example, 16) == 0


def test_matmul_count_grows_linearly_plus_tokens_squared():
  objective = mae_vit_b.get_config("variant=Ti/8").objective
  small, large = (cost.mae_matmul_gflop_per_image(variant, image, objective)
                  for variant, image in (("B/8", 32), ("B/10", 150)))
  assert (small["tokens"], large["tokens"]) == (16, 225)
  # Attention grows faster than the linear layers, which grow with the tokens.
  assert large["attention"] / small["attention"] > large["linear"] / small["linear"] > 10
  # The decoder (512 wide, every token) is shared; a wider encoder (kept tokens) adds to it.
  ti = cost.mae_matmul_gflop_per_image("Ti/8", 64, objective)
  b = cost.mae_matmul_gflop_per_image("B/8", 64, objective)
  assert 1.5 < b["linear"] / ti["linear"] < 2.5
  # XLA counted 18.9 GFLOP per image for this step (experiments/results/notes.md).
  assert b["linear"] + b["attention"] == pytest.approx(18.9, rel=0.05)
