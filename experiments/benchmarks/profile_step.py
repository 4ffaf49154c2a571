r"""Where a train step's time goes: a jax.profiler trace of a few steps, summed per XLA op.

  python -m experiments.benchmarks.profile_step --variant=Ti/8 --dtype=float32 --steps=3
  XLA_FLAGS=--xla_cpu_use_onednn=true python -m experiments.benchmarks.profile_step ...  # a flag

Runs the MAE train step of vs_torch's config (experiments/benchmarks/fixed_step.py) on a
fixed batch, traces `--steps` steps, and prints the ops (XLA thunks / kernels) taking the
most time, grouped by kind (dot, fusion, sort, gather, ...), next to XLA's cost analysis of
the step. The trace is kept in --trace_dir for TensorBoard's profile plugin or Perfetto;
with --dump_hlo the optimised HLO is written beside it. Prints only (nothing goes to
experiments/results/).
"""
import collections
import glob
import os
import re
import time

from absl import app
from absl import flags
import jax
import numpy as np

from experiments.benchmarks import fixed_step

flags.DEFINE_string("variant", "Ti/8", "ViT variant.")
flags.DEFINE_string("dtype", "float32", "Compute dtype.")
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_integer("image_size", 64, "Image side, pixels.")
flags.DEFINE_integer("steps", 3, "Traced steps.")
flags.DEFINE_integer("top", 30, "Ops listed.")
flags.DEFINE_string("trace_dir", "/tmp/lensfm_profile", "Where the trace (and HLO) go.")
flags.DEFINE_bool("dump_hlo", False, "Also write the optimised HLO to --trace_dir.")


def op_kind(name: str) -> str:
  """Groups XLA CPU thunks: YNNPACK fusions are the dots; the rest by what they do."""
  base = re.sub(r"[._]\d+$", "", name.split(":")[0])
  if base.startswith("ynn_fusion") or base.startswith("xnn_fusion"):
    return "dot (YNNPACK fusion)"
  if "onednn" in base:
    return "dot (oneDNN)"
  for kind in ("convolution", "dot", "reduce-window", "transpose", "convert", "copy", "sort",
               "gather", "scatter", "reduce", "concatenate", "dynamic-update-slice",
               "broadcast", "custom-call", "while", "call"):
    if kind in base:
      return kind
  return "elementwise fusion" if "fusion" in base else base


# Only XLA's own worker threads run the step's ops; other lines are the host waiting.
_OP_THREADS = ("tf_XLAEigen", "tf_XLAPjRtCpuClient")
_NOT_OPS = ("$", "Thunk", "PjRt", "TfrtCpu", "ExecuteHelper", "SlinkyThreadPool")


def summarise(trace_dir: str, steps: int, top: int):
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  data = jax.profiler.ProfileData.from_file(files[-1])
  per_op = collections.Counter()
  counts = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith(_OP_THREADS):
        continue
      for event in line.events:
        name = event.name
        if not name or name.startswith(_NOT_OPS):
          continue
        per_op[name] += event.duration_ns
        counts[name] += 1
  per_kind = collections.Counter()
  for name, ns in per_op.items():
    per_kind[op_kind(name)] += ns
  return per_op, per_kind, counts


def main(argv):
  del argv
  args = flags.FLAGS  # Read as args.NAME.

  images = np.random.default_rng(0).standard_normal(
      (args.batch, args.image_size, args.image_size, 1)).astype(np.float32)
  config = fixed_step.mae_config(args.variant, args.dtype, args.batch, args.image_size, 128, 2)
  step = fixed_step.LensfmStep(config, images)
  cost = step.compiled.cost_analysis()
  print(f"compile {step.compile_s:.1f} s; XLA: {cost.get('flops', 0) / 1e9:.1f} GFLOP, "
        f"{cost.get('bytes accessed', 0) / 1e9:.2f} GB accessed per step")
  if args.dump_hlo:
    os.makedirs(args.trace_dir, exist_ok=True)
    with open(os.path.join(args.trace_dir, "step.hlo.txt"), "w") as f:
      f.write(step.compiled.as_text())
  step()
  step.sync()
  t0 = time.perf_counter()
  for _ in range(2):
    step()
  step.sync()
  print(f"untraced step {1e3 * (time.perf_counter() - t0) / 2:.1f} ms")
  with jax.profiler.trace(args.trace_dir):
    t0 = time.perf_counter()
    for _ in range(args.steps):
      step()
    step.sync()
    wall = (time.perf_counter() - t0) / args.steps
  per_op, per_kind, counts = summarise(args.trace_dir, args.steps, args.top)
  total = sum(per_kind.values())
  print(f"traced step {1e3 * wall:.1f} ms; op time per step {total / 1e6 / args.steps:.1f} ms "
        f"(summed over XLA's worker threads)")
  print("\nby kind (ms/step, share of op time):")
  for kind, ns in per_kind.most_common():
    print(f"  {kind:24s} {ns / 1e6 / args.steps:9.2f}  {100 * ns / total:5.1f}%")
  print(f"\ntop {args.top} ops (ms/step, calls/step):")
  for name, ns in per_op.most_common(args.top):
    print(f"  {name[:60]:60s} {ns / 1e6 / args.steps:9.2f} {counts[name] // args.steps:5d}")


if __name__ == "__main__":
  app.run(main)
