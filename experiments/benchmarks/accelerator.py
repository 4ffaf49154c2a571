r"""One accelerator benchmark, one command, one JSON (about 5 minutes on one H100/H200).

  python -m experiments.benchmarks.accelerator            # on the accelerator
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
    python -m experiments.benchmarks.accelerator --tiny   # CPU smoke test (tiny, 2 fake devices)

Sections, each timed after compilation (the persistent compilation cache is on), each
recorded even if another fails (its error is recorded instead):
  mfu:         MAE ViT-B/8, 64x64, bf16, batch 1024 (configs/mae_vit_b.py), fixed batch:
               step time, matmul FLOPs per step (counted on the traced program), MFU
               against the device's dense bf16 peak (target >= 40%).
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
  profile:     a jax.profiler trace of the mfu step, its device kernels summed by kind
               (matmul, fusion, reduction, copy...) and the top kernels with their HLO ops,
               and the device's busy share of the wall time.
  variants:    the mfu step with matmuls writing float32 (config.model.dot_output_dtype,
               the A/B of what a bf16 matmul writes) and at twice the batch.
Writes experiments/results/accelerator_<device>.json (or --out), after every section.
"""
import json
import math
import os
import time
import traceback
import types

from absl import app
from absl import flags
import jax

from configs import mae_vit_b
from experiments import results
from lensfm import compilation_cache
from lensfm import data as data_lib
from lensfm.sim import recipes
from lensfm.train import cost
from lensfm.train import trainer as trainer_lib

flags.DEFINE_bool("tiny", False, "CPU smoke test: tiny model and batches.")
flags.DEFINE_string("sections", "mfu,profile,variants,fsdp,attention,simulator,input",
                    "Sections to run, in order.")
flags.DEFINE_integer("batch", None, "Default 1024 (16 with --tiny).")
flags.DEFINE_integer("steps", None, "Timed steps (default 20; 3 tiny).")
flags.DEFINE_integer("sim_batch", None,
                     "Default 2048 (64 tiny): compile time grows with it on GPU.")
flags.DEFINE_integer("sim_iters", None, "Default 20 (3 tiny).")
flags.DEFINE_string("variants", "batch2x,dot_f32",
                    "variants section: batch2x (twice --batch), dot_f32 (matmuls write f32).")
flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s per device, if not in the table.")
flags.DEFINE_string("out", None,
                    "JSON path (default experiments/results/accelerator_<device>.json).")

TINY_MODEL = dict(variant=None, width=64, depth=2, mlp_dim=128, num_heads=2, patch_size=8)


def mae_config(args, variant="B/8", mesh=None, attention=None, source="sim"):
  c = mae_vit_b.get_config(f"variant={variant}")
  c.batch_size = args.batch
  c.total_steps = 10_000
  c.progress_bar = False
  c.mesh = mesh or (("data", -1), ("fsdp", 1))
  c.model.attention_impl = attention
  c.data.source = source
  c.model.dot_output_dtype = getattr(args, "dot_output", None)
  if args.tiny:
    c.model.update(TINY_MODEL)
    c.objective.update(decoder_width=64, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=128)
  return c


class Step:
  """A trainer's compiled step on a fixed (simulated) batch, or fed by its input."""

  def __init__(self, config):
    self.config = config
    marks = [time.perf_counter()]
    self.trainer = trainer_lib.Trainer(config, "/tmp/lensfm_bench_accelerator")
    marks.append(time.perf_counter())
    self.state = jax.block_until_ready(self.trainer.init_state())
    marks.append(time.perf_counter())
    self.input = data_lib.make_input(config.data, global_batch_size=config.batch_size,
                                     sharding=self.trainer.data_sharding, seed=0)
    self.batch = jax.block_until_ready(next(self.input))
    marks.append(time.perf_counter())
    # Where a fresh accelerator's time goes before the first compile.
    self.setup_s = {name: round(b - a, 1) for name, a, b in
                    zip(("trainer", "init_state", "first_batch"), marks, marks[1:])}
    t0 = time.perf_counter()
    traced = self.trainer.compile_step().trace(self.state, self.batch)
    self.matmul_flops = cost.jaxpr_matmul_flops(traced.jaxpr)
    self.lowered = traced.lower()
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
    """Model FLOPs per step: its matmuls and convolutions, counted on the traced program
    (the same on every backend; XLA's own count, where cheap, is ~2% more: elementwise)."""
    return self.matmul_flops

  def xla_flops(self):
    """XLA's count of the lowered program; on CPU only (on an H200 it came back NaN)."""
    return cost.step_flops(self.compiled, self.lowered) if jax.default_backend() == "cpu" else None

  def peak_bytes(self):
    return cost.peak_bytes(self.compiled)


_STEPS = {}


def cached_step(args, **kw) -> Step:
  """One compiled step per config: mfu, profile and input share the baseline's compile."""
  key = (args.batch, getattr(args, "dot_output", None), tuple(sorted(kw.items())))
  if key not in _STEPS:
    _STEPS[key] = Step(mae_config(args, **kw))
  return _STEPS[key]


def peak_tflops(args):
  device = jax.devices()[0]
  return args.peak_tflops or cost.PEAK_TFLOPS.get((device.device_kind, "bfloat16"))


def section_mfu(args):
  step = cached_step(args)
  seconds = step.time(args.steps)
  flops = step.flops()
  achieved = flops / seconds / 1e12 / jax.device_count()
  peak = peak_tflops(args)
  return {"model": "MAE ViT-B/8" if not args.tiny else "MAE tiny ViT", "batch": args.batch,
          "setup_s": step.setup_s, "compile_s": round(step.compile_s, 1), "step_ms": round(1e3 * seconds, 2),
          "images_per_s": round(args.batch / seconds, 1), "tflop_per_step_matmul": flops / 1e12,
          "tflop_per_step_xla": (step.xla_flops() or math.nan) / 1e12,
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
  step = cached_step(args)
  fixed = step.time(args.steps)
  fed = step.time(args.steps, from_input=True)
  fixed_again = step.time(args.steps)
  fixed = min(fixed, fixed_again)
  return {"fixed_batch_step_ms": round(1e3 * fixed, 2), "sim_input_step_ms": round(1e3 * fed, 2),
          "input_share": round(max(fed - fixed, 0.) / fed, 4), "target_input_share": 0.05,
          "recipe": step.config.data.recipe, "augment": step.config.data.augment}


def section_variants(args):
  out = {}
  base = args.batch
  runs = {"batch2x": (f"batch_{2 * base}", None, 2 * base),
          "dot_f32": ("dot_output_float32", "float32", base)}
  for name, dot_output, batch in (runs[v] for v in args.variants.split(",")):
    args.dot_output, args.batch = dot_output, batch
    try:
      out[name] = {"dot_output": dot_output or "compute", **section_mfu(args)}
    except Exception as e:  # pylint: disable=broad-except
      out[name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
    finally:
      args.dot_output, args.batch = None, base
      _STEPS.clear()
  return out


def kernel_kind(name: str) -> str:
  """Groups device kernels by what they do, from their names (cuBLAS/CUTLASS/Triton/XLA)."""
  n = name.lower()
  if any(k in n for k in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "wgmma", "sm90_", "matmul")):
    return "matmul"
  if "flash" in n or "fmha" in n or "cudnn" in n:
    return "fused attention"
  if "memcpy" in n or "memset" in n:
    return "copy/memset"
  if "reduce" in n or "reduction" in n:
    return "reduction"
  if "transpose" in n or "copy" in n:
    return "transpose/copy"
  if "triton" in n:
    return "triton fusion"
  if "fusion" in n or n.startswith(("loop_", "input_", "wrapped_")):
    return "elementwise fusion"
  return "other"


def section_profile(args):
  """Where the device's time goes in the mfu step, from a trace of `steps` steps."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  step = cached_step(args)
  step.time(2)
  trace_dir = "/tmp/lensfm_accel_trace"
  shutil.rmtree(trace_dir, ignore_errors=True)
  steps = max(2, min(args.steps, 5))
  with jax.profiler.trace(trace_dir):
    wall = step.time(steps)
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  data = jax.profiler.ProfileData.from_file(files[-1])
  per_kernel, per_kind, calls, lines = (collections.Counter(), collections.Counter(),
                                        collections.Counter(), {})
  op_of = {}
  on_device = any(plane.name.startswith("/device:") for plane in data.planes)
  for plane in data.planes:
    for line in plane.lines:
      # A GPU's kernels are on its stream lines; on CPU (the smoke test) XLA's ops run on
      # its own worker threads.
      if on_device:
        wanted = plane.name.startswith("/device:") and line.name.lower().startswith("stream")
      else:
        wanted = line.name.startswith(("tf_XLAEigen", "tf_XLAPjRtCpuClient"))
      events = [e for e in line.events if e.name and not e.name.startswith(
          ("$", "Thunk", "PjRt", "TfrtCpu", "ExecuteHelper", "SlinkyThreadPool"))]
      lines[f"{plane.name}|{line.name}"] = len(events)
      if not wanted:
        continue
      for e in events:
        per_kernel[e.name] += e.duration_ns
        calls[e.name] += 1
        per_kind[kernel_kind(e.name)] += e.duration_ns
        if e.name not in op_of:
          op_of[e.name] = next((str(v) for k, v in e.stats if k == "hlo_op"), "")
  # The trace covers the two warm-up steps of Step.time too.
  n = steps + 2
  busy = sum(per_kind.values()) / 1e6 / n
  return {"on_device": on_device, "steps_traced": n, "wall_ms_per_step": round(1e3 * wall, 2),
          "kernel_ms_per_step": round(busy, 2),
          "device_busy_share": round(busy / (1e3 * wall), 3) if wall else None,
          "by_kind_ms_per_step": {k: round(v / 1e6 / n, 2) for k, v in per_kind.most_common()},
          "top_kernels": [{"kernel": k[:120], "hlo_op": op_of.get(k, "")[:80],
                           "ms_per_step": round(v / 1e6 / n, 3), "calls_per_step": calls[k] // n}
                          for k, v in per_kernel.most_common(40)],
          "trace_lines": dict(list(lines.items())[:30])}


SECTIONS = {"mfu": section_mfu, "profile": section_profile, "variants": section_variants,
            "fsdp": section_fsdp, "attention": section_attention, "simulator": section_simulator,
            "input": section_input}


def main(argv):
  del argv
  # The sections read (and the variants section changes) args.NAME.
  args = types.SimpleNamespace(**flags.FLAGS.flag_values_dict())
  args.batch = args.batch or (16 if args.tiny else 1024)
  args.steps = args.steps or (3 if args.tiny else 20)
  args.sim_batch = args.sim_batch or (64 if args.tiny else 2048)
  args.sim_iters = args.sim_iters or (3 if args.tiny else 20)
  compilation_cache.enable()
  device = jax.devices()[0]
  out = args.out or results.stem("accelerator", suffix="_tiny" if args.tiny else "") + ".json"
  result = {"device_kind": device.device_kind, "platform": device.platform,
            "num_devices": jax.device_count(), "jax_version": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
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
    results.write_json(out, result)
    print(name, json.dumps(result["sections"][name], default=float)[:600], flush=True)
  print(f"Wrote {out} in {result['total_s']} s")


if __name__ == "__main__":
  app.run(main)
