"""The accelerator benchmark runs end to end on CPU at its tiny size, and lensfm-small fits
the size a released checkpoint may take."""
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np

from configs import lensfm_small
from lensfm.train import precision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_accelerator_tiny_writes_every_section(tmp_path):
  out = tmp_path / "accelerator.json"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "experiments.benchmarks.accelerator", "--tiny",
                         f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["tiny"] and result["num_devices"] == 2
  sections = result["sections"]
  assert set(sections) == {"mfu", "profile", "variants", "fsdp", "attention", "simulator",
                           "input"}
  for name, section in sections.items():
    assert "error" not in section, (name, section)
  # Matmul FLOPs are counted on the traced program, the same on every backend; XLA's own
  # count (CPU only) adds its elementwise work.
  mfu = sections["mfu"]
  assert 0.9 * mfu["tflop_per_step_xla"] < mfu["tflop_per_step_matmul"] <= mfu["tflop_per_step_xla"]
  assert mfu["step_ms"] > 0
  assert sections["profile"]["kernel_ms_per_step"] > 0 and sections["profile"]["top_kernels"]
  assert {v["batch"] for v in sections["variants"].values() if isinstance(v, dict)} == {16, 32}
  assert sections["variants"]["dot_output_float32"]["dot_output"] == "float32"
  assert [run["mesh"] for run in sections["fsdp"]["runs"]] == [[["data", 1], ["fsdp", 2]]]
  assert sections["attention"]["xla"]["step_ms"] > 0
  assert "unsupported" in sections["attention"]["cudnn"]  # No cuDNN on a CPU.
  for recipe in ("model_ii", "model_i"):
    assert sections["simulator"][recipe]["images_per_s"] > 0
  assert 0 <= sections["input"]["input_share"] <= 1


def test_lensfm_small_backbone_fits_a_released_checkpoint():
  c = lensfm_small.get_config()
  model = precision.get_model(c.model)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), np.zeros((1, c.data.image_size, c.data.image_size, 1), np.float32)))
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))
  assert 5e6 < n and 4 * n <= 25 * 2**20, n  # float32 weights, at most 25 MiB
