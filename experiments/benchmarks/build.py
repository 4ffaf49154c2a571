r"""Dataset builds: `python -m lensfm.data.build lensfm_sim/model_ii` against lenstronomy
making and saving the same recipe, whole commands side by side, and reading the build back.

  python -m experiments.benchmarks.build                      # 30,000 train (+3,000 test)
  python -m experiments.benchmarks.build --num_examples=6000 --lenstronomy_examples=600

Measures, in one run:
  * lensfm, whole command in a fresh process (imports, compilation, simulation, writing,
    label index), with a cold compilation cache (an empty one) and a warm one (the same
    command again, --overwrite): wall seconds, CPU seconds, images/s;
  * lensfm writing throughput: the build's own images/s once everything is compiled
    (in-process, a second build), i.e. what the simulate-serialise-write loop sustains;
  * lenstronomy, whole command in a fresh process: the same scenes (parameters drawn
    beforehand by lensfm's sampler, loaded from a file) rendered one image at a time with
    its single-plane ImageModel (its fastest path to these images; the DeepLense scripts'
    multi-plane SimAPI is ~7x slower) and saved one .npy per image, as the released
    DeepLense sets are. It runs --lenstronomy_examples images and is extrapolated
    linearly (start-up + per-image rate) to the lensfm build's size when smaller;
  * reading the build back through lensfm's grain pipeline (decode, batch, copy to the
    device, normalise), images/s, against lensfm's MAE ViT-Ti/8 train step at the same
    batch on this machine (the fastest step it must keep up with).
Writes experiments/results/build_<platform>.json and .md.
"""
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from experiments import results
from experiments.benchmarks import fixed_step
from lensfm import compilation_cache
from lensfm import data as data_lib
from lensfm.data import build
from lensfm.sim import lenstronomy_reference as ref
from lensfm.sim import recipes

flags.DEFINE_integer("num_examples", 30_000, "Training images built (plus the test split).")
flags.DEFINE_integer("lenstronomy_examples", 1_000, "Images lenstronomy renders (extrapolated).")
flags.DEFINE_integer("read_batch", 64, "Batch of the read-back and the train step.")
flags.DEFINE_float("read_seconds", 10., "Seconds of reading back.")
flags.DEFINE_string("work_dir", None, "Where to build (default: a temporary directory).")
flags.DEFINE_string("out", None, "JSON path (default experiments/results/build_<device>.json).")

# Run in a fresh process from the repository root (cwd), as a whole command is.
LENSTRONOMY_SCRIPT = r"""
import time, os
t0 = time.perf_counter()
import numpy as np
from lensfm.sim import lenstronomy_reference as ref
from lensfm.sim import recipes
recipe = recipes.get("model_ii")
flat = dict(np.load({params!r}))
labels = flat.pop("__label__")
n = len(labels)
out = {out!r}
for c in recipe.class_names:
  os.makedirs(os.path.join(out, c), exist_ok=True)
t1 = None
for i in range(n):
  if i == {warmup}:  # lenstronomy's numba functions compile on first use: start-up.
    t1 = time.perf_counter()
  p = ref.unflatten_params({{k: v[i] for k, v in flat.items()}})
  image = ref.render(p, recipe.inst)[..., 0]
  image = image + image
  c = recipe.class_names[int(labels[i])]
  np.save(os.path.join(out, c, f"{{c}}_sim_{{i}}.npy"), image.astype(np.float32))
print(t1 - t0, time.perf_counter() - t1)
"""
LENSTRONOMY_WARMUP = 3


def child_cpu():
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def run_command(cmd, env=None):
  """(wall s, CPU s, stdout) of a command in a fresh process, in the repository root."""
  cpu0, t0 = child_cpu(), time.perf_counter()
  proc = subprocess.run(cmd, env=env, cwd=results.ROOT, check=True, capture_output=True,
                        text=True)
  return time.perf_counter() - t0, child_cpu() - cpu0, proc.stdout


def lensfm_build_command(args, data_dir, cache_dir, overwrite=False):
  cmd = [sys.executable, "-m", "lensfm.data.build", "lensfm_sim/model_ii",
         f"--num_examples={args.num_examples}", f"--data_dir={data_dir}", "--no_progress"]
  env = {**os.environ, compilation_cache.ENV: cache_dir, "PYTHONPATH": results.ROOT}
  return run_command(cmd + (["--overwrite"] if overwrite else []), env)


def lenstronomy_command(args, work):
  """Whole lenstronomy command on --lenstronomy_examples scenes: (wall, cpu, startup s, render s)."""
  recipe = recipes.get("model_ii")
  params, labels = jax.jit(recipe.sample_params, static_argnums=1)(
      jax.random.key(0), args.lenstronomy_examples)
  flat = {k: np.asarray(v) for k, v in ref.flatten_params(jax.tree.map(np.asarray, params)).items()}
  flat["__label__"] = np.asarray(labels["label"] if isinstance(labels, dict) else labels)
  path = os.path.join(work, "scenes.npz")
  np.savez(path, **flat)
  script = LENSTRONOMY_SCRIPT.format(params=path, out=os.path.join(work, "npy"),
                                     warmup=LENSTRONOMY_WARMUP)
  wall, cpu, out = run_command([sys.executable, "-c", script],
                               {**os.environ, "PYTHONPATH": results.ROOT})
  startup, render = (float(x) for x in out.split()[-2:])
  return wall, cpu, startup, render


def read_back(data_dir, batch, seconds):
  """images/s of lensfm's grain pipeline over the build (to device, normalised)."""
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:1])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  config = ml_collections.ConfigDict(dict(
      source="tfds", name="lensfm_sim/model_ii", data_dir=data_dir, image_size=64,
      channels=1, normalize="zscore", augment="rot90,flip", prefetch=2, num_workers=0))
  data = data_lib.make_input(config, global_batch_size=batch, sharding=sharding, seed=0)
  for _ in range(3):
    jax.block_until_ready(next(data))
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds or n < 5:
    jax.block_until_ready(next(data))
    n += 1
  rate = n * batch / (time.perf_counter() - t0)
  if hasattr(data, "close"):
    data.close()
  return rate


def train_step_rate(batch, steps=5):
  """images/s of lensfm's MAE ViT-Ti/8 step (fixed batch) on one device."""
  images = np.random.default_rng(0).standard_normal((batch, 64, 64, 1)).astype(np.float32)
  step = fixed_step.LensfmStep(
      fixed_step.mae_config("Ti/8", "float32", batch, 64, 128, 2), images)
  seconds, _ = fixed_step.time_steps(step, steps)
  return batch / seconds


def main(argv):
  del argv
  args = flags.FLAGS  # Read as args.NAME.
  compilation_cache.enable()
  work = args.work_dir or tempfile.mkdtemp(prefix="lensfm_bench_build_")
  total = args.num_examples + build.lensfm_sim.default_num_test(args.num_examples)
  result = {"device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
            "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "jax_version": jax.__version__, "load_average_start": os.getloadavg(),
            "command": results.command(),
            "num_examples": args.num_examples, "total_images": total}
  try:
    data_dir, cache = os.path.join(work, "data"), os.path.join(work, "jax_cache")
    wall, cpu, _ = lensfm_build_command(args, data_dir, cache)
    result["lensfm_cold_cache"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                   "images_per_s": round(total / wall, 1)}
    wall, cpu, _ = lensfm_build_command(args, data_dir, cache, overwrite=True)
    result["lensfm_warm_cache"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                   "images_per_s": round(total / wall, 1)}
    print(json.dumps(result), flush=True)

    # In-process: the second build runs with everything compiled and imported.
    build.ensure_built("lensfm_sim/model_ii", data_dir, num_examples=256, progress=False,
                       overwrite=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    built = build.ensure_built("lensfm_sim/model_ii", data_dir, num_examples=args.num_examples,
                               progress=False, overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    size = sum(os.path.getsize(os.path.join(built.path, f)) for f in os.listdir(built.path))
    result["lensfm_steady"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                               "images_per_s": round(total / wall, 1),
                               "bytes_per_image": round(size / total, 1)}
    print(json.dumps(result["lensfm_steady"]), flush=True)

    wall, cpu, startup, render = lenstronomy_command(args, work)
    per_image = render / (args.lenstronomy_examples - LENSTRONOMY_WARMUP)
    projected = startup + per_image * (total - LENSTRONOMY_WARMUP)
    result["lenstronomy"] = {
        "images_run": args.lenstronomy_examples, "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2), "startup_s": round(startup, 2),
        "images_per_s": round(1 / per_image, 1),
        "projected_wall_s_at_total": round(projected + (wall - startup - render), 2),
        "projected": args.lenstronomy_examples < total}
    result["whole_command_speedup_cold"] = round(
        result["lenstronomy"]["projected_wall_s_at_total"] / result["lensfm_cold_cache"]["wall_s"], 2)
    result["whole_command_speedup_warm"] = round(
        result["lenstronomy"]["projected_wall_s_at_total"] / result["lensfm_warm_cache"]["wall_s"], 2)

    result["read_back_images_per_s"] = round(read_back(data_dir, args.read_batch, args.read_seconds), 1)
    result["train_step_images_per_s"] = round(train_step_rate(args.read_batch), 1)
    result["read_over_train"] = round(result["read_back_images_per_s"]
                                      / result["train_step_images_per_s"], 2)
  finally:
    if not args.work_dir:
      shutil.rmtree(work, ignore_errors=True)
  result["load_average_end"] = os.getloadavg()
  result["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
  out = args.out or results.stem("build") + ".json"
  L, c, w, s = result["lenstronomy"], result["lensfm_cold_cache"], result["lensfm_warm_cache"], result["lensfm_steady"]
  lines = [f"lensfm_sim/model_ii, {total} images 64x64 (train {args.num_examples} + test); "
           f"{result['device']} ({os.cpu_count()} cores), JAX {jax.__version__}; load average "
           f"{result['load_average_start'][0]:.1f} at start.", "",
           "| what | wall s | CPU s | images/s |", "|---|---|---|---|",
           f"| lensfm build command, cold compilation cache | {c['wall_s']} | {c['cpu_s']} | {c['images_per_s']} |",
           f"| lensfm build command, warm compilation cache | {w['wall_s']} | {w['cpu_s']} | {w['images_per_s']} |",
           f"| lensfm build, steady state (in-process) | {s['wall_s']} | {s['cpu_s']} | {s['images_per_s']} |",
           f"| lenstronomy render + np.save, {L['images_run']} images (start-up {L['startup_s']} s) "
           f"| {L['wall_s']} | {L['cpu_s']} | {L['images_per_s']} |",
           f"| lenstronomy projected to {total} images | {L['projected_wall_s_at_total']} | | |", "",
           f"Whole command: lensfm {result['whole_command_speedup_cold']}x lenstronomy (cold cache), "
           f"{result['whole_command_speedup_warm']}x (warm). {s['bytes_per_image']} bytes/image on disk. "
           f"Reading back (grain, to device): {result['read_back_images_per_s']} images/s vs the "
           f"ViT-Ti/8 MAE step's {result['train_step_images_per_s']} images/s "
           f"({result['read_over_train']}x)."]
  print(results.write(os.path.splitext(out)[0], result, lines))


if __name__ == "__main__":
  app.run(main)
