r"""One accelerator benchmark, one command, one JSON (about 5 minutes on one H100/H200).

  python experiments/bench_accelerator.py                 # on the accelerator
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
    python experiments/bench_accelerator.py --tiny        # CPU smoke test (tiny, 2 fake devices)

Sections, each timed after compilation (the persistent compilation cache is on), each
recorded even if another fails (its error is recorded instead):
  mfu:         MAE ViT-B/8, 64x64, bf16, batch 1024 (configs/mae_vit_b.py), fixed batch:
               step time, XLA's FLOPs per step, MFU against the device's dense bf16 peak
               (target >= 40%).
  fsdp:        MAE ViT-L/8 on a mesh with an `fsdp` axis over all devices (size 1 on one
               device: the sharded code path, without splitting) and, with several
               devices, also data x fsdp; step time and XLA's peak memory per device.
  attention:   the ViT-B/8 step with jax.nn.dot_product_attention implementation='cudnn'
               (fused flash attention) against 'xla'; 'cudnn' off a GPU is recorded as
               unsupported.
  simulator:   on-device simulation, images/s: Model II (64x64; target >= 100,000/s) and
               Model I (150x150, its exact Poisson noise).
  input:       the ViT-B/8 step fed by the on-device simulator (config.data.source='sim',
               model_ii, rot90+flip) against the same step on a fixed batch; the input's
               share of the step (target < 5%).
Writes experiments/results/accelerator_<device>.json (or --out), after every section.
"""
import argparse
import json
import math
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from configs import mae_vit_b  # pylint: disable=g-import-not-at-top
from experiments import bench_train
from lensfm import compilation_cache
from lensfm import data as data_lib
from lensfm.sim import recipes
from lensfm.train import trainer as trainer_lib

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TINY_MODEL = dict(variant=None, width=64, depth=2, mlp_dim=128, num_heads=2, patch_size=8)


def mae_config(args, variant="B/8", mesh=None, attention=None, source="sim"):
  c = mae_vit_b.get_config(f"variant={variant}")
  c.batch_size = args.batch
  c.total_steps = 10_000
  c.progress_bar = False
  c.mesh = mesh or (("data", -1), ("fsdp", 1))
  c.model.attention_impl = attention
  c.data.source = source
  if args.tiny:
    c.model.update(TINY_MODEL)
    c.objective.update(decoder_width=64, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=128)
  return c


class Step:
  """A trainer's compiled step on a fixed (simulated) batch, or fed by its input."""

  def __init__(self, config):
    self.config = config
    self.trainer = trainer_lib.Trainer(config, "/tmp/lensfm_bench_accelerator")
    self.state = self.trainer.init_state()
    self.input = data_lib.make_input(config.data, global_batch_size=config.batch_size,
                                     sharding=self.trainer.data_sharding, seed=0)
    self.batch = next(self.input)
    t0 = time.perf_counter()
    self.lowered = self.trainer.compile_step().lower(self.state, self.batch)
    self.compiled = self.lowered.compile()
    self.compile_s = time.perf_counter() - t0

  def time(self, steps, from_input=False):
    with jax.set_mesh(self.trainer.mesh):
      for _ in range(2):
        self.state, m = self.compiled(self.state, next(self.input) if from_input else self.batch)
      jax.block_until_ready(m)
      t0 = time.perf_counter()
      for _ in range(steps):
        self.state, m = self.compiled(self.state, next(self.input) if from_input else self.batch)
      jax.block_until_ready(m)
    return (time.perf_counter() - t0) / steps

  def flops(self):
    return bench_train.step_flops(self.compiled, self.lowered)

  def peak_bytes(self):
    mem = self.compiled.memory_analysis()
    if mem is None:
      return None
    return (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes)


def peak_tflops(args):
  device = jax.devices()[0]
  return args.peak_tflops or bench_train.PEAK_TFLOPS.get((device.device_kind, "bfloat16"))


def section_mfu(args):
  step = Step(mae_config(args))
  seconds = step.time(args.steps)
  flops = step.flops()
  achieved = flops / seconds / 1e12 / jax.device_count()
  peak = peak_tflops(args)
  return {"model": "MAE ViT-B/8" if not args.tiny else "MAE tiny ViT", "batch": args.batch,
          "compile_s": round(step.compile_s, 1), "step_ms": round(1e3 * seconds, 2),
          "images_per_s": round(args.batch / seconds, 1), "tflop_per_step_xla": flops / 1e12,
          "achieved_tflops_per_device": round(achieved, 2), "peak_tflops_per_device": peak,
          "mfu": round(achieved / peak, 4) if peak else None, "target_mfu": 0.40,
          "peak_memory_gb": (step.peak_bytes() or 0) / 1e9}


def section_fsdp(args):
  n = jax.device_count()
  meshes = [(("data", 1), ("fsdp", n))]
  if n >= 4 and n % 2 == 0:
    meshes.append((("data", n // 2), ("fsdp", 2)))
  out = []
  for mesh in meshes:
    step = Step(mae_config(args, variant="L/8", mesh=mesh))
    seconds = step.time(max(2, args.steps // 2))
    flops = step.flops()
    peak = peak_tflops(args)
    achieved = flops / seconds / 1e12 / n
    out.append({"mesh": [list(a) for a in mesh], "model": "MAE ViT-L/8" if not args.tiny else "tiny",
                "compile_s": round(step.compile_s, 1), "step_ms": round(1e3 * seconds, 2),
                "images_per_s": round(args.batch / seconds, 1),
                "mfu": round(achieved / peak, 4) if peak else None,
                "peak_memory_gb_per_device": (step.peak_bytes() or 0) / 1e9})
    del step
  return {"devices": n, "runs": out,
          "note": "fsdp=1 on one device: the fsdp-sharded program without any split"
                  if n == 1 else "parameters and AdamW state split over fsdp"}


def section_attention(args):
  out = {}
  for impl in ("xla", "cudnn"):
    try:
      step = Step(mae_config(args, attention=impl))
      seconds = step.time(args.steps)
      out[impl] = {"step_ms": round(1e3 * seconds, 2), "images_per_s": round(args.batch / seconds, 1),
                   "compile_s": round(step.compile_s, 1)}
      del step
    except Exception as e:  # pylint: disable=broad-except
      out[impl] = {"unsupported": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
  if "step_ms" in out.get("xla", {}) and "step_ms" in out.get("cudnn", {}):
    out["cudnn_speedup"] = round(out["xla"]["step_ms"] / out["cudnn"]["step_ms"], 3)
  return out


def section_simulator(args):
  out = {}
  for name, batch, target in (("model_ii", args.sim_batch, 100_000),
                              ("model_i", max(8, args.sim_batch // 8), None)):
    recipe = recipes.get(name)
    sample = jax.jit(recipe.sample, static_argnums=1)
    t0 = time.perf_counter()
    jax.block_until_ready(sample(jax.random.key(0), batch))
    compile_s = time.perf_counter() - t0
    keys = jax.random.split(jax.random.key(1), args.sim_iters)
    jax.block_until_ready(sample(keys[0], batch))
    t0 = time.perf_counter()
    for k in keys:
      images = sample(k, batch)
    jax.block_until_ready(images)
    rate = batch * args.sim_iters / (time.perf_counter() - t0)
    out[name] = {"image_shape": list(recipe.image_shape), "batch": batch, "noise": recipe.noise,
                 "compile_s": round(compile_s, 1), "images_per_s": round(rate, 1),
                 "target_images_per_s": target}
  return out


def section_input(args):
  step = Step(mae_config(args))
  fixed = step.time(args.steps)
  fed = step.time(args.steps, from_input=True)
  fixed_again = step.time(args.steps)
  fixed = min(fixed, fixed_again)
  return {"fixed_batch_step_ms": round(1e3 * fixed, 2), "sim_input_step_ms": round(1e3 * fed, 2),
          "input_share": round(max(fed - fixed, 0.) / fed, 4), "target_input_share": 0.05,
          "recipe": step.config.data.recipe, "augment": step.config.data.augment}


SECTIONS = {"mfu": section_mfu, "fsdp": section_fsdp, "attention": section_attention,
            "simulator": section_simulator, "input": section_input}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model and batches.")
  p.add_argument("--sections", default=",".join(SECTIONS))
  p.add_argument("--batch", type=int, default=None, help="Default 1024 (16 with --tiny).")
  p.add_argument("--steps", type=int, default=None, help="Timed steps (default 20; 3 tiny).")
  p.add_argument("--sim_batch", type=int, default=None,
                 help="Default 2048 (64 tiny): compile time grows with it on GPU.")
  p.add_argument("--sim_iters", type=int, default=None, help="Default 20 (3 tiny).")
  p.add_argument("--peak_tflops", type=float, default=None)
  p.add_argument("--out", default=None)
  args = p.parse_args()
  args.batch = args.batch or (16 if args.tiny else 1024)
  args.steps = args.steps or (3 if args.tiny else 20)
  args.sim_batch = args.sim_batch or (64 if args.tiny else 2048)
  args.sim_iters = args.sim_iters or (3 if args.tiny else 20)
  compilation_cache.enable()
  device = jax.devices()[0]
  kind = device.device_kind.replace(" ", "_").replace("/", "-")
  out = args.out or os.path.join(RESULTS, f"accelerator_{kind}{'_tiny' if args.tiny else ''}.json")
  result = {"device_kind": device.device_kind, "platform": device.platform,
            "num_devices": jax.device_count(), "jax_version": jax.__version__,
            "tiny": args.tiny, "label": ("CPU SMOKE TEST at tiny sizes: checks the command runs; "
                                         "its numbers say nothing about an accelerator")
            if args.tiny else "accelerator run", "settings": {
                k: getattr(args, k) for k in ("batch", "steps", "sim_batch", "sim_iters")},
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}}
  start = time.perf_counter()
  for name in args.sections.split(","):
    t0 = time.perf_counter()
    try:
      result["sections"][name] = SECTIONS[name](args)
    except Exception as e:  # pylint: disable=broad-except
      result["sections"][name] = {"error": f"{type(e).__name__}: {e}"[:2000],
                                  "traceback": traceback.format_exc()[-3000:]}
    result["sections"][name]["section_s"] = round(time.perf_counter() - t0, 1)
    result["total_s"] = round(time.perf_counter() - start, 1)
    with open(out, "w") as f:
      json.dump(result, f, indent=2, default=float)
    print(name, json.dumps(result["sections"][name], default=float)[:600], flush=True)
  print(f"Wrote {out} in {result['total_s']} s")


if __name__ == "__main__":
  main()
