r"""Training throughput (images/s, steady state after compilation) and model FLOPs
utilisation of a config's train step, on whatever device this runs on.

  python experiments/bench_train.py --config=configs/mae_vit_b.py --steps=50
  python experiments/bench_train.py --config=configs/mae_vit_b.py:runlocal --steps=20

FLOPs per step are XLA's own count for the compiled step (forward, backward and
optimizer: what the hardware must execute, masking included). MFU = achieved FLOP/s
divided by the device's peak dense bf16 (or fp32 when the config computes in fp32)
FLOP/s from the table below; pass --peak_tflops for devices not listed. Results are
printed and written to experiments/results/train_<config>_<device>.json.
"""
import json
import math
import os
import platform
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from lensfm import data as data_lib  # pylint: disable=g-import-not-at-top
from lensfm.train import trainer as trainer_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config to benchmark.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation).")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s per device, if not in the table.")
_FIXED_BATCH = flags.DEFINE_bool("fixed_batch", False,
                                 "Reuse one batch: times the step alone, without the input.")
_OUT = flags.DEFINE_string("out", None, "Result JSON path (default experiments/results/...).")

# Dense peak TFLOP/s per device (vendor spec sheets, no sparsity).
PEAK_TFLOPS = {
    ("NVIDIA H100 80GB HBM3", "bfloat16"): 989.,
    ("NVIDIA H100", "bfloat16"): 989.,
    ("NVIDIA H200", "bfloat16"): 989.,
    ("NVIDIA A100-SXM4-80GB", "bfloat16"): 312.,
    ("NVIDIA A100-SXM4-40GB", "bfloat16"): 312.,
    ("TPU v4", "bfloat16"): 275.,
    ("TPU v5 lite", "bfloat16"): 197.,
    ("TPU v5p", "bfloat16"): 459.,
}


def step_flops(compiled, lowered=None) -> float:
  """XLA's FLOPs per step: from the lowered program when given, since on GPU the compiled
  one hands its dots to cuBLAS/cuDNN calls that its cost analysis does not count."""
  analysis = (lowered or compiled).cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan"))) if analysis else float("nan")


def _dot_flops(eqn) -> float:
  lhs = eqn.invars[0].aval
  (lc, _), _ = eqn.params["dimension_numbers"]
  return 2. * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.shape[d] for d in lc)


def _conv_flops(eqn) -> float:
  rhs = eqn.invars[1].aval  # Kernel: out-features times (in / groups) times window.
  spec = eqn.params["dimension_numbers"].rhs_spec
  out_features = rhs.shape[spec[0]]
  return 2. * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs.shape) / out_features


def _sub_jaxprs(eqn):
  for v in eqn.params.values():
    for j in (v if isinstance(v, (list, tuple)) else [v]):
      if hasattr(j, "eqns"):
        yield j
      elif hasattr(j, "jaxpr") and hasattr(j.jaxpr, "eqns"):
        yield j.jaxpr


def jaxpr_matmul_flops(jaxpr) -> float:
  """Matmul and convolution FLOPs of a (closed) jaxpr: the model FLOPs MFU counts, from the
  program JAX traced, on any backend (a cond counts its costliest branch, a scan its
  length times its body)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "cond":
      total += max(jaxpr_matmul_flops(b) for b in eqn.params["branches"])
    else:
      inner = sum(jaxpr_matmul_flops(j) for j in _sub_jaxprs(eqn))
      total += inner * (eqn.params.get("length", 1) if name == "scan" else 1)
  return total


def main(argv):
  del argv
  config = _CONFIG.value
  config.unlock()
  config.progress_bar = False
  trainer = trainer_lib.Trainer(config, "/tmp/lensfm_bench")
  state = trainer.init_state()
  step_fn = trainer.compile_step()
  train_input = data_lib.make_input(config.data, global_batch_size=config.batch_size,
                                    sharding=trainer.data_sharding, seed=config.seed)
  batch = next(train_input)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  flops = step_flops(compiled)

  with jax.set_mesh(trainer.mesh):
    for _ in range(_WARMUP.value):
      state, metrics = step_fn(state, batch if _FIXED_BATCH.value else next(train_input))
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
      state, metrics = step_fn(state, batch if _FIXED_BATCH.value else next(train_input))
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - t0

  device = jax.devices()[0]
  n_dev = jax.device_count()
  dtype = str(config.model.get("dtype", "float32"))
  peak = _PEAK.value or PEAK_TFLOPS.get((device.device_kind, dtype))
  steps_per_s = _STEPS.value / elapsed
  achieved_tflops = flops * steps_per_s / 1e12 / n_dev
  result = {
      "config": sys.argv[[a.startswith("--config=") for a in sys.argv].index(True)].split("=", 1)[1],
      "device_kind": device.device_kind, "platform": device.platform, "num_devices": n_dev,
      "jax_version": jax.__version__, "host": platform.node(), "cpu_count": os.cpu_count(),
      "batch_size": config.batch_size, "image_size": config.data.image_size,
      "model": config.model.to_dict(), "objective": config.objective.to_dict(),
      "data_source": config.data.source, "fixed_batch": _FIXED_BATCH.value,
      "compile_s": round(compile_s, 2), "timed_steps": _STEPS.value,
      "step_ms": round(1e3 / steps_per_s, 3),
      "images_per_sec": round(config.batch_size * steps_per_s, 2),
      "flops_per_step_xla": flops,
      "achieved_tflops_per_device": round(achieved_tflops, 4),
      "peak_tflops_per_device": peak,
      "mfu": round(achieved_tflops / peak, 4) if peak else None,
      "final_loss": float(np.asarray(metrics["loss"])),
      "train_step_compilations": step_fn._cache_size(),  # pylint: disable=protected-access
      "date": time.strftime("%Y-%m-%d %H:%M:%S"),
  }
  print(json.dumps(result, indent=2))
  out = _OUT.value or os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results",
      "train_{}_{}.json".format(os.path.basename(result["config"]).replace(".py", "").replace(":", "_")
                                .replace("=", "-").replace("/", "-").replace(",", "_"),
                                device.device_kind.replace(" ", "_").replace("/", "-")))
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print(f"Wrote {out}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
