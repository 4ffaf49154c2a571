r"""Where a train step's time goes: a jax.profiler trace of a few steps, summed per XLA op.

  python experiments/profile_step.py --variant=Ti/8 --dtype=float32 --steps=3
  XLA_FLAGS=--xla_cpu_use_onednn=true python experiments/profile_step.py ...  # try a flag

Runs the MAE train step of bench_vs_torch's config on a fixed batch, traces `--steps`
steps, and prints the ops (XLA thunks / kernels) taking the most time, grouped by kind
(dot, fusion, sort, gather, ...), next to XLA's cost analysis of the step. The trace is
kept in --trace_dir for TensorBoard's profile plugin or Perfetto; with --dump_hlo the
optimised HLO is written beside it.
"""
import argparse
import collections
import glob
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from experiments import bench_vs_torch  # pylint: disable=g-import-not-at-top


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


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--variant", default="Ti/8")
  p.add_argument("--dtype", default="float32")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--image_size", type=int, default=64)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--top", type=int, default=30)
  p.add_argument("--trace_dir", default="/tmp/lensfm_profile")
  p.add_argument("--dump_hlo", action="store_true")
  args = p.parse_args()

  images = np.random.default_rng(0).standard_normal(
      (args.batch, args.image_size, args.image_size, 1)).astype(np.float32)
  config = bench_vs_torch.lensfm_config(args.variant, args.dtype, args.batch, args.image_size, 128, 2)
  step = bench_vs_torch.LensfmStep(config, images)
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
  main()
