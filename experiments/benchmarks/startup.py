r"""Start-up to the first train step, with an empty (cold) and a filled (warm) compilation cache.

  python -m experiments.benchmarks.startup
  python -m experiments.benchmarks.startup --config=configs/mae_vit_b.py:variant=Ti/8 --repeats=2

Runs `python -m lensfm.main --config=CONFIG --config.total_steps=1` in fresh processes
(a new workdir each time, so nothing resumes), alternating: a cold run with a fresh
LENSFM_COMPILATION_CACHE directory, then a warm run with the directory the cold run filled.
Reports the whole command's wall and CPU seconds (imports, initialisation, compilation of
the simulator and the step, one step, the final checkpoint) and the warm/cold ratio.
Writes experiments/results/startup_<device>.json and .md.
"""
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from experiments import results
from lensfm import compilation_cache

flags.DEFINE_string("config", "configs/mae_vit_b.py:runlocal", "Config of the timed command.")
flags.DEFINE_integer("repeats", 2, "Cold/warm pairs.")
flags.DEFINE_string("out", None, "JSON path (default experiments/results/startup_<device>.json).")


def child_cpu():
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def run_once(config, cache_dir, work):
  workdir = tempfile.mkdtemp(dir=work)
  cmd = [sys.executable, "-m", "lensfm.main", f"--config={config}", f"--workdir={workdir}",
         "--config.total_steps=1", "--config.progress_bar=False", "--config.visualize_every=0",
         "--config.log_every=1"]
  env = {**os.environ, compilation_cache.ENV: cache_dir, "PYTHONPATH": results.ROOT}
  cpu0, t0 = child_cpu(), time.perf_counter()
  subprocess.run(cmd, env=env, cwd=results.ROOT, check=True, capture_output=True)
  return time.perf_counter() - t0, child_cpu() - cpu0


def main(argv):
  del argv
  args = flags.FLAGS  # Read as args.NAME.
  import jax  # pylint: disable=g-import-not-at-top
  work = tempfile.mkdtemp(prefix="lensfm_bench_startup_")
  cold, warm, load_start = [], [], os.getloadavg()
  try:
    for i in range(args.repeats):
      cache = os.path.join(work, f"cache{i}")
      cold.append(run_once(args.config, cache, work))
      warm.append(run_once(args.config, cache, work))
      print(f"round {i}: cold {cold[-1][0]:.1f} s, warm {warm[-1][0]:.1f} s", flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  med = lambda xs, j: statistics.median(x[j] for x in xs)
  result = {"config": args.config, "platform": jax.devices()[0].platform,
            "device": jax.devices()[0].device_kind, "jax_version": jax.__version__,
            "cpu_count": os.cpu_count(), "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
            "cold_wall_s": [round(x[0], 2) for x in cold], "warm_wall_s": [round(x[0], 2) for x in warm],
            "cold_cpu_s": [round(x[1], 2) for x in cold], "warm_cpu_s": [round(x[1], 2) for x in warm],
            "warm_over_cold_wall": round(med(warm, 0) / med(cold, 0), 3),
            "warm_over_cold_cpu": round(med(warm, 1) / med(cold, 1), 3),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
  out = args.out or results.stem("startup") + ".json"
  lines = [f"Start-up to the first step, `python -m lensfm.main --config={args.config} "
           f"--config.total_steps=1`, {result['device']} ({os.cpu_count()} cores), JAX "
           f"{jax.__version__}; medians of {args.repeats} interleaved cold/warm pairs; load "
           f"average {load_start[0]:.1f} at start, {result['load_average_end'][0]:.1f} at end.", "",
           "| compilation cache | wall s | CPU s |", "|---|---|---|",
           f"| cold (empty) | {med(cold, 0):.1f} | {med(cold, 1):.1f} |",
           f"| warm | {med(warm, 0):.1f} | {med(warm, 1):.1f} |", "",
           f"warm/cold: {result['warm_over_cold_wall']} wall, {result['warm_over_cold_cpu']} CPU."]
  print(results.write(os.path.splitext(out)[0], result, lines))


if __name__ == "__main__":
  app.run(main)
