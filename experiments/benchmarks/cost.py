r"""What the MAE train step costs as the work grows: FLOPs, peak memory and step time against
image size, ViT size and batch, and which accelerators each configuration fits.

  python -m experiments.benchmarks.cost                          # the whole table
  python -m experiments.benchmarks.cost --vits=Ti,S --images=32  # a part of it

The step is configs/mae_vit_b.py's (decoder 512 wide x 8 deep, mask ratio 0.75, bf16
compute, float32 parameters and AdamW state), for ViT Ti, S, B, L and images 32, 64, 150
(patch 8, 8, 10: 16, 64, 225 tokens). Each (ViT, image) cell is lowered and compiled for
one device at two batch sizes (--fit_batches) and never run for the table: XLA's
`memory_analysis()` gives the peak (arguments + outputs + temporaries - donated aliases)
and `cost_analysis()` the FLOPs. Memory is linear in the batch (state + batch x
activations per example), so the two compiles give the peak at any batch; one cell
(--check) is compiled at a third batch to show how well the line holds. From the line: the
peak at batch 16/64/256/1024 and the largest batch that fits 16/40/80/141 GB devices (20%
headroom for the runtime and fragmentation), also with fsdp=8 (state / 8, activations
with the batch). FLOPs are compared with a count of the matmuls (linear layers ~ tokens,
attention ~ tokens^2) to show where the cost grows as expected. Steps costing under
--time_gflop are also run and timed on this machine. The memory analysis is the CPU
compiler's buffer assignment; a GPU's differs in detail (fusion, layouts), so treat the
projection as an estimate within tens of percent. Writes
experiments/results/cost_<platform>.json and .md.
"""
import json
import math
import os
import time
import types

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import mae_vit_b
from experiments import results
from lensfm import compilation_cache
from lensfm.train import cost
from lensfm.train import trainer as trainer_lib

flags.DEFINE_string("vits", "Ti,S,B,L", "ViT sizes.")
flags.DEFINE_string("images", "32,64,150", "Image sides.")
flags.DEFINE_string("fit_batches", "16,64", "Two batches per cell, compiled.")
flags.DEFINE_string("check", "B,64,256",
                    "ViT,image,batch compiled a third time to test the line ('' to skip).")
flags.DEFINE_string("dtype", "bfloat16", "Compute dtype.")
flags.DEFINE_float("time_gflop", 400., "Run and time steps up to this many GFLOP.")
flags.DEFINE_integer("steps", 3, "Timed steps.")
flags.DEFINE_bool("no_timing", False,
                  "Only the compile-only analyses (a later --resume run times the steps).")
flags.DEFINE_string("out", None, "JSON path (default experiments/results/cost_<device>.json).")
flags.DEFINE_bool("resume", False,
                  "Keep the cells (and checks) already in --out's JSON; measure the rest.")

DEVICES_GB = (16, 40, 80, 141)
TABLE_BATCHES = (16, 64, 256, 1024)
HEADROOM = cost.HEADROOM
FSDP = 8
PATCH_FOR_IMAGE = {32: 8, 64: 8, 150: 10}


def config_for(size: str, image: int, batch: int, dtype: str):
  c = mae_vit_b.get_config(f"variant={size}/{PATCH_FOR_IMAGE[image]}")
  c.model.dtype = dtype
  c.data.image_size = image
  c.batch_size = batch
  c.mesh = (("data", 1), ("fsdp", 1))
  c.total_steps = 1000
  c.progress_bar = False
  return c


def compile_step(size, image, batch, dtype):
  """(compiled step, trainer, abstract state, compile seconds); nothing is run."""
  config = config_for(size, image, batch, dtype)
  trainer = trainer_lib.Trainer(config, "/tmp/lensfm_bench_cost", devices=jax.devices()[:1])
  state = trainer.abstract_with_shardings()
  batch_spec = {
      "image": jax.ShapeDtypeStruct((batch, image, image, 1), jnp.float32,
                                    sharding=trainer.data_sharding),
      "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=trainer.data_sharding)}
  t0 = time.perf_counter()
  compiled = trainer.compile_step().lower(state, batch_spec).compile()
  return compiled, trainer, state, time.perf_counter() - t0


def analysed(compiled, state) -> dict:
  """Bytes and FLOPs of a compiled step, from XLA's analyses."""
  return {"flops": cost.step_flops(compiled),
          "state_bytes": sum(math.prod(l.shape) * l.dtype.itemsize
                             for l in jax.tree.leaves(state)),
          "temp_bytes": compiled.memory_analysis().temp_size_in_bytes,
          "peak_bytes": cost.peak_bytes(compiled)}


def time_step(compiled, trainer, batch: int, image: int, steps: int) -> float:
  """Seconds per step of the compiled step on this machine (after one warm-up step)."""
  state = trainer.init_state()
  rng = np.random.default_rng(0)
  real = {"image": jax.device_put(rng.standard_normal((batch, image, image, 1)).astype(np.float32),
                                  trainer.data_sharding),
          "label": jax.device_put(np.zeros(batch, np.int32), trainer.data_sharding)}
  state, metrics = compiled(state, real)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, real)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - t0) / steps


def measure_cell(size, image, args, objective) -> dict:
  """One (ViT, image) row: two compiles, the line through them, the projection."""
  compiles = []
  for batch in args.fit_batches:
    compiled, _, state, seconds = compile_step(size, image, batch, args.dtype)
    compiles.append({"batch": batch, "compile_s": round(seconds, 1), **analysed(compiled, state)})
    del compiled
  first = compiles[0]
  state_bytes = first["state_bytes"]
  fixed, per_example = cost.line_through([(c["batch"], c["peak_bytes"]) for c in compiles])
  counted = cost.mae_matmul_gflop_per_image(f"{size}/{PATCH_FOR_IMAGE[image]}", image, objective)
  xla_gflop = first["flops"] / first["batch"] / 1e9
  row = {"vit": size, "patch": PATCH_FOR_IMAGE[image], "image": image,
         "tokens": counted["tokens"], "dtype": args.dtype,
         "gflop_per_image": round(xla_gflop, 3),
         "matmul_gflop_per_image": round(counted["linear"] + counted["attention"], 3),
         "attention_share_of_matmuls": round(
             counted["attention"] / (counted["linear"] + counted["attention"]), 4),
         "state_gb": round(state_bytes / 1e9, 4),
         "fixed_gb": round(fixed / 1e9, 4),
         "activation_mb_per_example": round(per_example / 1e6, 3),
         "peak_gb": {str(b): round((fixed + per_example * b) / 1e9, 3) for b in TABLE_BATCHES},
         "largest_batch": {f"{g}GB": cost.largest_batch(fixed, per_example, g)
                           for g in DEVICES_GB},
         "largest_batch_fsdp8": {
             f"{g}GB": FSDP * cost.largest_batch(fixed - state_bytes * (1 - 1 / FSDP),
                                                 per_example, g)
             for g in DEVICES_GB},
         "compiles": [{k: c[k] for k in ("batch", "compile_s", "flops", "temp_bytes", "peak_bytes")}
                      for c in compiles],
         "step_ms": {}, "images_per_s": {}}
  print(json.dumps(row), flush=True)
  return row


def time_cell(row, args) -> None:
  """Runs and times the row's steps that cost under --time_gflop (compiled again: a hit in
  the persistent compilation cache), with the machine's load average."""
  for c in row["compiles"]:
    batch = c["batch"]
    if c["flops"] / 1e9 > args.time_gflop or str(batch) in row["step_ms"]:
      continue
    compiled, trainer, _, _ = compile_step(row["vit"], row["image"], batch, args.dtype)
    seconds = time_step(compiled, trainer, batch, row["image"], args.steps)
    row["step_ms"][str(batch)] = round(1e3 * seconds, 1)
    row["images_per_s"][str(batch)] = round(batch / seconds, 1)
    row["timing_load_average"] = os.getloadavg()
    print(json.dumps({k: row[k] for k in ("vit", "image", "step_ms", "timing_load_average")}),
          flush=True)


def linearity_check(size, image, batch, rows, args) -> dict:
  """A third compile of one cell: its peak against the line's prediction."""
  row = next(r for r in rows if r["vit"] == size and r["image"] == image)
  compiled, _, state, seconds = compile_step(size, image, batch, args.dtype)
  a = analysed(compiled, state)
  predicted = row["fixed_gb"] * 1e9 + row["activation_mb_per_example"] * 1e6 * batch
  check = {"vit": size, "image": image, "batch": batch, "compile_s": round(seconds, 1),
           "compiled_peak_gb": round(a["peak_bytes"] / 1e9, 3),
           "line_peak_gb": round(predicted / 1e9, 3),
           "line_error": round(predicted / a["peak_bytes"] - 1, 4),
           "gflop_per_image": round(a["flops"] / batch / 1e9, 3)}
  print(json.dumps(check), flush=True)
  return check


def growth_notes(rows) -> list[str]:
  """How FLOPs and memory per image grow with tokens, against the matmul count."""
  notes = []
  for size in dict.fromkeys(r["vit"] for r in rows):
    cells = sorted((r for r in rows if r["vit"] == size), key=lambda r: r["tokens"])
    if len(cells) < 2:
      continue
    notes.append(f"ViT-{size}: " + "; ".join(
        f"{r['tokens']} tokens: {r['gflop_per_image']} GFLOP/image (XLA) vs "
        f"{r['matmul_gflop_per_image']} counted ({r['attention_share_of_matmuls']:.1%} "
        f"attention), {r['activation_mb_per_example']} MB/example" for r in cells))
    a, b = cells[0], cells[-1]
    notes.append(f"ViT-{size} {a['tokens']} -> {b['tokens']} tokens (x{b['tokens'] / a['tokens']:.1f}): "
                 f"FLOPs/image x{b['gflop_per_image'] / a['gflop_per_image']:.1f}, "
                 f"activations/example x{b['activation_mb_per_example'] / a['activation_mb_per_example']:.1f}")
  return notes


def main(argv):
  del argv
  args = types.SimpleNamespace(**flags.FLAGS.flag_values_dict())  # Also holds run state.
  args.fit_batches = [int(b) for b in args.fit_batches.split(",")]
  compilation_cache.enable()
  objective = config_for("Ti", 64, 16, args.dtype).objective
  start, load = time.perf_counter(), os.getloadavg()
  rows, checks, args.earlier_commands = previous(args) if args.resume else ([], [], [])
  for size in args.vits.split(","):
    for image in (int(i) for i in args.images.split(",")):
      if any(r["vit"] == size and r["image"] == image for r in rows):
        continue
      rows.append({**measure_cell(size, image, args, objective),
                   "load_average": os.getloadavg()})
      write(rows, checks, args, load, time.perf_counter() - start)  # Keeps what was measured.
  if args.check and not checks:
    size, image, batch = args.check.split(",")
    if any(r["vit"] == size and r["image"] == int(image) for r in rows):
      checks.append(linearity_check(size, int(image), int(batch), rows, args))
  write(rows, checks, args, load, time.perf_counter() - start)
  if not args.no_timing:
    for row in rows:
      time_cell(row, args)
      write(rows, checks, args, load, time.perf_counter() - start)


def output_path(args) -> str:
  return args.out or results.stem("cost") + ".json"


def previous(args) -> tuple[list, list, list]:
  """Rows, checks and commands of earlier (interrupted or partial) runs at --out."""
  path = output_path(args)
  if not os.path.isfile(path):
    return [], [], []
  with open(path) as f:
    old = json.load(f)
  return (old.get("rows", []), old.get("linearity_checks", []),
          old.get("earlier_commands", []) + [old.get("command", "")])


def write(rows, checks, args, load_start, seconds):
  result = {"device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
            "jax_version": jax.__version__, "cpu_count": os.cpu_count(), "dtype": args.dtype,
            "config": "configs/mae_vit_b.py (decoder 512 wide x 8 deep, mask 0.75, AdamW, "
                      "float32 parameters and optimizer state)",
            "command": results.command(),
            "earlier_commands": args.earlier_commands,
            "fit_batches": args.fit_batches,
            "headroom": HEADROOM, "fsdp": FSDP, "rows": rows, "linearity_checks": checks,
            "growth": growth_notes(rows), "load_average_start": load_start,
            "load_average_end": os.getloadavg(), "wall_s": round(seconds, 1),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
  out = output_path(args)
  batches = " | ".join(f"peak GB @{b}" for b in TABLE_BATCHES)
  fits = " | ".join(f"max batch {g} GB" for g in DEVICES_GB)
  lines = [f"MAE train step cost: {result['config']}, {args.dtype} compute. XLA memory and cost "
           f"analysis of the compiled step on {result['device']} ({os.cpu_count()} cores), "
           f"JAX {jax.__version__}; compiled at batch {args.fit_batches[0]} and "
           f"{args.fit_batches[1]}, peak linear in the batch between and beyond; 'max batch' = "
           f"peak <= {HEADROOM:.0%} of the device (fsdp={FSDP}: per device, state sharded). "
           f"`{result['command']}`: {seconds / 60:.1f} min, load average "
           f"{load_start[0]:.1f} at its start (each row's in the JSON)"
           + "".join(f"; rows before from `{c}`" for c in args.earlier_commands) + ".", "",
           f"| ViT | image (tokens) | GFLOP/image (XLA) | matmuls counted (attention) | "
           f"state GB | activations MB/example | {batches} | {fits} | max batch 80 GB, fsdp={FSDP} "
           f"| step ms @{args.fit_batches[0]} (this CPU) |",
           "|" + "---|" * (8 + len(TABLE_BATCHES) + len(DEVICES_GB))]
  for r in rows:
    lines.append(
        f"| {r['vit']}/{r['patch']} | {r['image']} ({r['tokens']}) | {r['gflop_per_image']} | "
        f"{r['matmul_gflop_per_image']} ({r['attention_share_of_matmuls']:.1%}) | "
        f"{r['state_gb']} | {r['activation_mb_per_example']} | "
        + " | ".join(str(r["peak_gb"][str(b)]) for b in TABLE_BATCHES) + " | "
        + " | ".join(str(r["largest_batch"][f"{g}GB"]) for g in DEVICES_GB)
        + f" | {r['largest_batch_fsdp8']['80GB']} | "
        f"{r['step_ms'].get(str(args.fit_batches[0]), '')} |")
  lines += [""] + [f"- {n}" for n in result["growth"]]
  for c in checks:
    lines.append(f"- Line check, ViT-{c['vit']} {c['image']}x{c['image']} batch {c['batch']}: "
                 f"compiled peak {c['compiled_peak_gb']} GB, line {c['line_peak_gb']} GB "
                 f"({c['line_error']:+.1%}).")
  print(results.write(os.path.splitext(out)[0], result, lines))


if __name__ == "__main__":
  app.run(main)
