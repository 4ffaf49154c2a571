r"""What the MAE train step costs as the work grows: FLOPs, peak memory and step time against
image size, ViT size and batch, and which accelerators each configuration fits.

  python experiments/bench_cost.py            # CPU: compile-only memory for all, times small ones
  python experiments/bench_cost.py --quick    # fewer, smaller points (a few minutes on 2 cores)

Three sweeps around a centre (ViT-B/8, 64x64, batch 256, the configs/mae_vit_b.py step with
its 512x8 decoder, bf16 compute, float32 parameters and AdamW state):
  * image size 32, 64, 150 (patch 8, 8, 10: 16, 64, 225 tokens);
  * ViT size Ti, S, B, L;
  * batch 16, 64, 256, 1024.
Each point is lowered and compiled for one device without running it; XLA's
`compiled.memory_analysis()` gives the peak (arguments + outputs + temporaries - donated
aliases) and `cost_analysis()` the FLOPs. Points under --time_gflop are also run and timed
on this machine. The peak is projected to 16/40/80/141 GB devices (20% headroom for the
runtime, and fragmentation); with `fsdp` the parameter and optimizer part divides by the
fsdp size, which the table also shows for 8 devices. The memory analysis is the CPU
compiler's buffer assignment; a GPU's differs in detail (fusion, layouts), so treat the
projection as an estimate within tens of percent. Writes experiments/results/cost_<platform>.json/.md.
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from configs import mae_vit_b  # pylint: disable=g-import-not-at-top
from lensfm import compilation_cache
from lensfm.models import vit
from lensfm.train import trainer as trainer_lib

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEVICES_GB = (16, 40, 80, 141)
HEADROOM = 0.8
PATCH_FOR_SIZE = {32: 8, 64: 8, 150: 10}


def config_for(size: str, image: int, batch: int, dtype: str):
  c = mae_vit_b.get_config(f"variant={size}/{PATCH_FOR_SIZE[image]}")
  c.model.dtype = dtype
  c.data.image_size = image
  c.batch_size = batch
  c.mesh = (("data", 1), ("fsdp", 1))
  c.total_steps = 1000
  c.progress_bar = False
  return c


def measure(size, image, batch, dtype, time_gflop, steps):
  config = config_for(size, image, batch, dtype)
  trainer = trainer_lib.Trainer(config, "/tmp/lensfm_bench_cost", devices=jax.devices()[:1])
  state = trainer.abstract_with_shardings()
  shape = (batch, image, image, 1)
  batch_spec = {"image": jax.ShapeDtypeStruct(shape, jnp.float32, sharding=trainer.data_sharding),
                "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=trainer.data_sharding)}
  step_fn = trainer.compile_step()
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch_spec).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  state_bytes = sum(math.prod(l.shape) * l.dtype.itemsize for l in jax.tree.leaves(state))
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
          - mem.alias_size_in_bytes)
  d = vit.parse_variant(f"{size}/{PATCH_FOR_SIZE[image]}")
  tokens = (image // d["patch_size"]) ** 2
  row = {"vit": size, "patch": d["patch_size"], "image": image, "tokens": tokens,
         "batch": batch, "dtype": dtype, "compile_s": round(compile_s, 1),
         "gflop_per_step": round(float(cost.get("flops", math.nan)) / 1e9, 2),
         "state_gb": round(state_bytes / 1e9, 3),
         "temp_gb": round(mem.temp_size_in_bytes / 1e9, 3),
         "peak_gb": round(peak / 1e9, 3)}
  row["gflop_per_image"] = round(row["gflop_per_step"] / batch, 3)
  # With fsdp over 8 devices the state divides by 8; activations (temp) split with the batch.
  row["peak_gb_fsdp8_per_device"] = round((state_bytes / 8 + (peak - state_bytes) / 8) / 1e9, 3)
  row["fits"] = {f"{gb}GB": peak / 1e9 <= HEADROOM * gb for gb in DEVICES_GB}
  if row["gflop_per_step"] <= time_gflop:
    params = trainer.init_state()
    rng = np.random.default_rng(0)
    real = {"image": jax.device_put(rng.standard_normal(shape).astype(np.float32), trainer.data_sharding),
            "label": jax.device_put(np.zeros(batch, np.int32), trainer.data_sharding)}
    params, m = compiled(params, real)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
      params, m = compiled(params, real)
    jax.block_until_ready(m)
    row["step_ms"] = round(1e3 * (time.perf_counter() - t0) / steps, 1)
    row["images_per_s"] = round(batch / (row["step_ms"] / 1e3), 1)
  print(json.dumps(row), flush=True)
  return row


def expected_growth(rows):
  """FLOPs per image against the prediction 'linear in tokens, plus attention in tokens^2'."""
  notes = []
  by = {(r["vit"], r["image"], r["batch"]): r for r in rows}
  images = sorted({r["image"] for r in rows if r["vit"] == "B"})
  base = [by.get(("B", i, 256)) or next((r for r in rows if r["vit"] == "B" and r["image"] == i), None)
          for i in images]
  base = [b for b in base if b]
  if len(base) >= 2:
    b0 = base[0]
    for b in base[1:]:
      notes.append(f"image {b0['image']}->{b['image']}: tokens x{b['tokens'] / b0['tokens']:.2f}, "
                   f"FLOPs/image x{b['gflop_per_image'] / b0['gflop_per_image']:.2f} "
                   f"(linear part alone x{b['tokens'] / b0['tokens']:.2f}; attention adds tokens^2)")
  bs = sorted((r for r in rows if r["vit"] == "B" and r["image"] == 64), key=lambda r: r["batch"])
  if len(bs) >= 2:
    notes.append("batch " + ", ".join(f"{r['batch']}: {r['gflop_per_image']} GFLOP/image, "
                                      f"{r['temp_gb']} GB temp" for r in bs)
                 + " (FLOPs per image constant, temporaries linear in batch)")
  return notes


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--quick", action="store_true", help="CPU-sized: fewer, smaller points.")
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--time_gflop", type=float, default=150., help="Time points up to this cost.")
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--resume", default=None,
                 help="JSON lines of points already measured (an interrupted run's printed "
                      "rows): kept, not measured again.")
  p.add_argument("--out", default=None)
  args = p.parse_args()
  compilation_cache.enable()
  centre = ("B", 64, 256)
  if args.quick:
    points = ([("Ti", i, 64) for i in (32, 64, 150)] + [(s, 64, 64) for s in ("S", "B", "L")]
              + [("Ti", 64, b) for b in (16, 256, 1024)])
  else:
    points = ([(centre[0], i, centre[2]) for i in (32, 64, 150)]
              + [(s, 64, centre[2]) for s in ("Ti", "S", "L")]
              + [(centre[0], 64, b) for b in (16, 64, 1024)])
  rows = []
  if args.resume:
    with open(args.resume) as f:
      rows = [json.loads(line) for line in f if line.startswith("{")]
  done = {(r["vit"], r["image"], r["batch"]) for r in rows}
  for s, i, b in points:
    if (s, i, b) not in done:
      rows.append(measure(s, i, b, args.dtype, args.time_gflop, args.steps))
    write(rows, points, args)  # After every point: an interrupted run keeps what it measured.


def write(rows, points, args):
  result = {"device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
            "jax_version": jax.__version__, "cpu_count": os.cpu_count(), "dtype": args.dtype,
            "decoder": "512 wide x 8 deep (configs/mae_vit_b.py)", "headroom": HEADROOM,
            "quick": args.quick, "rows": rows, "growth": expected_growth(rows),
            "points_planned": [list(p) for p in points],
            "points_missing": [list(p) for p in points
                               if p not in {(r["vit"], r["image"], r["batch"]) for r in rows}],
            "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
  out = args.out or os.path.join(RESULTS, f"cost_{result['platform']}.json")
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  head = "| ViT | image (tokens) | batch | GFLOP/image | state GB | peak GB | peak/device, fsdp=8 | " + \
         " | ".join(f"fits {g} GB" for g in DEVICES_GB) + " | step ms (this machine) |"
  lines = [f"MAE train step cost, {args.dtype} compute, {result['decoder']}; XLA memory analysis "
           f"on {result['device']} (JAX {jax.__version__}); 'fits' = peak <= {HEADROOM:.0%} of "
           f"the device.", "", head, "|" + "---|" * (8 + len(DEVICES_GB))]
  for r in rows:
    fits = " | ".join("yes" if r["fits"][f"{g}GB"] else "no" for g in DEVICES_GB)
    lines.append(f"| {r['vit']}/{r['patch']} | {r['image']} ({r['tokens']}) | {r['batch']} | "
                 f"{r['gflop_per_image']} | {r['state_gb']} | {r['peak_gb']} | "
                 f"{r['peak_gb_fsdp8_per_device']} | {fits} | {r.get('step_ms', '')} |")
  lines += [""] + [f"- {n}" for n in result["growth"]]
  with open(out.replace(".json", ".md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
