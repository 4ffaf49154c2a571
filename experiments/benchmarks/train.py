r"""Training throughput (images/s, steady state after compilation) and model FLOPs
utilisation of a config's train step, on whatever device this runs on.

  python -m experiments.benchmarks.train --config=configs/mae_vit_b.py --steps=50
  python -m experiments.benchmarks.train --config=configs/mae_vit_b.py:runlocal --steps=20

FLOPs per step are XLA's own count for the compiled step (forward, backward and
optimizer: what the hardware must execute, masking included). MFU = achieved FLOP/s
divided by the device's peak dense bf16 (or fp32 when the config computes in fp32)
FLOP/s from lensfm.train.cost.PEAK_TFLOPS; pass --peak_tflops for devices not listed.
Results are printed and written to experiments/results/train_<config>_<device>.{json,md}.
"""
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from experiments import results
from lensfm import data as data_lib
from lensfm.train import cost
from lensfm.train import trainer as trainer_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config to benchmark.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation).")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s per device, if not in the table.")
_FIXED_BATCH = flags.DEFINE_bool("fixed_batch", False,
                                 "Reuse one batch: times the step alone, without the input.")
_OUT = flags.DEFINE_string("out", None, "Result JSON path (default experiments/results/...).")


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
  flops = cost.step_flops(compiled)

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
  peak = _PEAK.value or cost.PEAK_TFLOPS.get((device.device_kind, dtype))
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
  # configs/mae_vit_b.py:variant=Ti/8 -> mae_vit_b_variant-Ti-8.
  path, _, arg = result["config"].partition(":")
  name = (os.path.basename(path).replace(".py", "") + (f"_{arg}" if arg else "")).replace(
      "=", "-").replace("/", "-").replace(",", "_")
  out = _OUT.value or results.stem(f"train_{name}") + ".json"
  lines = [f"Train step of `{result['config']}`, batch {config.batch_size}, "
           f"{config.data.image_size}x{config.data.image_size}, {config.data.source} input"
           f"{' (fixed batch)' if _FIXED_BATCH.value else ''}; {_STEPS.value} timed steps.", ""]
  lines += results.table(
      ["step ms", "images/s", "XLA TFLOP/step", "TFLOP/s per device", "MFU", "compile s"],
      [[result["step_ms"], result["images_per_sec"], round(flops / 1e12, 4),
        result["achieved_tflops_per_device"], result["mfu"], result["compile_s"]]])
  results.write(os.path.splitext(out)[0], result, lines)
  print(f"Wrote {out}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
