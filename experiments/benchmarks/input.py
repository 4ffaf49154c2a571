r"""Input pipeline throughput (images/s) against what a train step consumes.

  python -m experiments.benchmarks.input                 # a few minutes on a CPU
  python -m experiments.benchmarks.input --batch_size=1024 --seconds=20   # accelerator

Measures, on whatever devices this runs on (one mesh axis over all of them):
  * tfds/grain: a deeplense/model_ii dataset (64x64) built from --num_files
    synthetic .npy files in the released layout (random pixels: only the bytes
    matter here), read by `lensfm.data.pipeline`:
      - host only: grain batches in numpy, no device;
      - the full Input (read, copy to devices, normalise, augment on device),
        with 0 and --workers grain worker processes, without and with every
        augmentation;
  * sim: `lensfm.data.sim_source` recipe model_ii (64x64), made on device,
    without and with every augmentation;
  * the train step of --train_config (default the MAE runlocal config, 64x64)
    on one fixed batch: the images/s the input must keep up with.
Every figure is steady state: after warm-up (compilation), each batch is
waited for (block_until_ready) as a train step would. Results are printed and
written to experiments/results/input_<device>.{json,md} with the device, JAX
version and settings.
"""
import json
import os
import platform
import shutil
import tempfile
import time
import traceback

from absl import app
from absl import flags
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from experiments import results
from lensfm import config_args
from lensfm import data as data_lib
from lensfm.data import build
from lensfm.data import pipeline
from lensfm.data import transforms
from lensfm.train import trainer as trainer_lib

ALL_AUGMENTATIONS = ",".join(transforms.AUGMENTATIONS)

flags.DEFINE_integer("batch_size", 256, "Global batch size.")
flags.DEFINE_integer("num_files", 3072, "Synthetic DeepLense files for the TFDS dataset.")
flags.DEFINE_float("seconds", 8.0, "Timed seconds per measurement.")
flags.DEFINE_integer("workers", 2, "Grain worker processes for the second tfds run.")
flags.DEFINE_string("train_config", "configs/mae_vit_b.py:runlocal",
                    "Config whose train step is timed ('' to skip).")
flags.DEFINE_string("work_dir", None, "Where to build the dataset (default: a temp dir).")
flags.DEFINE_string("out", None, "JSON path (default experiments/results/input_<device>.json).")


def data_sharding():
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  return NamedSharding(mesh, P("data"))


def timed(next_batch, batch_size: int, seconds: float, warmup: int = 2):
  """Steady-state images/s of next_batch() (each batch waited for)."""
  t0 = time.perf_counter()
  for _ in range(warmup):
    jax.block_until_ready(next_batch())
  warmup_s = time.perf_counter() - t0
  batches, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds or batches < 3:
    jax.block_until_ready(next_batch())
    batches += 1
  elapsed = time.perf_counter() - t0
  return {"images_per_s": round(batches * batch_size / elapsed, 1),
          "ms_per_batch": round(1000 * elapsed / batches, 2),
          "batches_timed": batches, "warmup_s": round(warmup_s, 2)}


def write_synthetic_deeplense(root: str, num_files: int) -> None:
  """Released Model II layout with random 64x64 float64 images."""
  rng = np.random.default_rng(0)
  classes = ("no_sub", "cdm", "axion")
  for name in classes:
    os.makedirs(os.path.join(root, name), exist_ok=True)
  for i in range(num_files):
    name = classes[i % 3]
    path = os.path.join(root, name, f"{name}_sim_{i}.npy")
    image = rng.random((64, 64))
    if name == "axion":
      np.save(path, np.array([image, 1e-23], dtype=object))
    else:
      np.save(path, image)


def bench_tfds(args, sharding, work_dir):
  raw, data_dir = os.path.join(work_dir, "raw"), os.path.join(work_dir, "data")
  t0 = time.perf_counter()
  write_synthetic_deeplense(raw, args.num_files)
  write_s = time.perf_counter() - t0
  result = build.ensure_built("deeplense/model_ii", data_dir, raw,
                              progress=False, overwrite=True)
  out = {"dataset": "deeplense/model_ii (synthetic pixels)",
         "num_examples": result.num_examples,
         "build": {"seconds": round(result.seconds, 2),
                   "files_per_s": round(args.num_files / result.seconds, 1),
                   "write_npy_seconds": round(write_s, 2)}}
  config = dict(source="tfds", name="deeplense/model_ii", data_dir=data_dir,
                image_size=64, channels=1, normalize="minmax", augment="",
                prefetch=2, num_workers=0)

  # Host only: grain's batches in numpy (read + decode + batch), no devices.
  host = pipeline.host_batches(ml_collections.ConfigDict(config),
                               global_batch_size=args.batch_size, seed=0)
  iterator = iter(host.to_iter_dataset(
      pipeline.grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)))
  out["host_only"] = timed(lambda: next(iterator), args.batch_size,
                           args.seconds)

  runs = [("workers0_no_augment", 0, ""),
          (f"workers{args.workers}_no_augment", args.workers, ""),
          ("workers0_all_augment", 0, ALL_AUGMENTATIONS)]
  for label, workers, augment in runs:
    cfg = ml_collections.ConfigDict(dict(config, num_workers=workers,
                                         augment=augment))
    data = data_lib.make_input(cfg, global_batch_size=args.batch_size,
                               sharding=sharding, seed=0)
    out[label] = timed(lambda: next(data), args.batch_size, args.seconds)
    data.close()
  return out


def bench_sim(args, sharding):
  out = {}
  for label, augment in (("no_augment", ""), ("all_augment",
                                              ALL_AUGMENTATIONS)):
    cfg = ml_collections.ConfigDict(dict(
        source="sim", recipe="model_ii", recipe_overrides={}, image_size=64,
        channels=1, normalize="minmax", augment=augment))
    data = data_lib.make_input(cfg, global_batch_size=args.batch_size,
                               sharding=sharding, seed=0)
    out[label] = timed(lambda: next(data), args.batch_size, args.seconds)
    out[label]["compilations"] = data.compilations()
  return out


def bench_train_step(args):
  """Images/s of the config's train step alone (one fixed batch)."""
  config = config_args.load(args.train_config)
  config.progress_bar = False
  workdir = tempfile.mkdtemp(prefix="bench_input_train_")
  trainer = trainer_lib.Trainer(config, workdir)
  state = trainer.init_state()
  step_fn = trainer.compile_step()
  batch = next(data_lib.make_input(config.data,
                                   global_batch_size=config.batch_size,
                                   sharding=trainer.data_sharding,
                                   seed=config.seed))
  holder = {"state": state}

  def step():
    holder["state"], metrics = step_fn(holder["state"], batch)
    return metrics

  with jax.set_mesh(trainer.mesh):
    out = timed(step, config.batch_size, args.seconds)
  shutil.rmtree(workdir, ignore_errors=True)
  out.update(config=args.train_config, batch_size=config.batch_size,
             image_size=config.data.image_size,
             model={k: v for k, v in config.model.items()})
  return out


def main(argv):
  del argv
  args = flags.FLAGS  # Read as args.NAME.
  sharding = data_sharding()
  device = jax.devices()[0]
  measured = {
      "device_kind": device.device_kind, "platform": device.platform,
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "jax_version": jax.__version__, "python": platform.python_version(),
      "host_cpus": os.cpu_count(), "machine": platform.machine(),
      # Other work on the host slows every figure; recorded to judge them.
      "load_average_1min_at_start": round(os.getloadavg()[0], 2),
      "settings": {"batch_size": args.batch_size,
                   "num_files": args.num_files, "seconds": args.seconds,
                   "workers": args.workers, "image": "64x64x1 float32",
                   "normalize": "minmax", "prefetch": 2,
                   "all_augment": ALL_AUGMENTATIONS},
  }
  work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_input_")
  own_work_dir = args.work_dir is None
  sections = [("tfds_grain", lambda: bench_tfds(args, sharding, work_dir)),
              ("sim", lambda: bench_sim(args, sharding))]
  if args.train_config:
    sections.append(("train_step", lambda: bench_train_step(args)))
  for name, run in sections:
    t0 = time.perf_counter()
    try:
      measured[name] = run()
    except Exception as e:  # pylint: disable=broad-except
      measured[name] = {"error": f"{type(e).__name__}: {e}"}
      traceback.print_exc()
    print(f"{name} ({time.perf_counter() - t0:.0f} s): "
          f"{json.dumps(measured[name], indent=1)}", flush=True)

  if own_work_dir:
    shutil.rmtree(work_dir, ignore_errors=True)
  measured["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)

  out = args.out or results.stem("input") + ".json"
  lines = [f"Input pipelines, batch {args.batch_size}, 64x64 (steady state, each batch "
           "waited for), against the train step they feed.", ""]
  rows = [[f"{section} {k}", v["images_per_s"], v["ms_per_batch"]]
          for section in ("tfds_grain", "sim", "train_step")
          for k, v in (measured.get(section, {}).items() if section != "train_step"
                       else [(args.train_config, measured.get(section, {}))])
          if isinstance(v, dict) and "images_per_s" in v]
  lines += results.table(["what", "images/s", "ms per batch"], rows)
  results.write(os.path.splitext(out)[0], measured, lines)
  print(f"Wrote {out}")


if __name__ == "__main__":
  app.run(main)
