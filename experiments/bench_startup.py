r"""Start-up to the first train step, with an empty (cold) and a filled (warm) compilation cache.

  python experiments/bench_startup.py
  python experiments/bench_startup.py --config=configs/mae_vit_b.py:variant=Ti/8 --repeats=2

Runs `python -m lensfm.main --config=CONFIG --config.total_steps=1` in fresh processes
(a new workdir each time, so nothing resumes), alternating: a cold run with a fresh
LENSFM_COMPILATION_CACHE directory, then a warm run with the directory the cold run filled.
Reports the whole command's wall and CPU seconds (imports, initialisation, compilation of
the simulator and the step, one step, the final checkpoint) and the warm/cold ratio.
Writes experiments/results/startup_<platform>.json and .md.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lensfm import compilation_cache  # pylint: disable=g-import-not-at-top


def child_cpu():
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def run_once(config, cache_dir, work):
  workdir = tempfile.mkdtemp(dir=work)
  cmd = [sys.executable, "-m", "lensfm.main", f"--config={config}", f"--workdir={workdir}",
         "--config.total_steps=1", "--config.progress_bar=False", "--config.visualize_every=0",
         "--config.log_every=1"]
  env = {**os.environ, compilation_cache.ENV: cache_dir, "PYTHONPATH": ROOT}
  cpu0, t0 = child_cpu(), time.perf_counter()
  subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
  return time.perf_counter() - t0, child_cpu() - cpu0


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="configs/mae_vit_b.py:runlocal")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--out", default=None)
  args = p.parse_args()
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
  out = args.out or os.path.join(ROOT, "experiments", "results", f"startup_{result['platform']}.json")
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  lines = [f"Start-up to the first step, `python -m lensfm.main --config={args.config} "
           f"--config.total_steps=1`, {result['device']} ({os.cpu_count()} cores), JAX "
           f"{jax.__version__}; medians of {args.repeats} interleaved cold/warm pairs; load "
           f"average {load_start[0]:.1f} at start, {result['load_average_end'][0]:.1f} at end.", "",
           "| compilation cache | wall s | CPU s |", "|---|---|---|",
           f"| cold (empty) | {med(cold, 0):.1f} | {med(cold, 1):.1f} |",
           f"| warm | {med(warm, 0):.1f} | {med(warm, 1):.1f} |", "",
           f"warm/cold: {result['warm_over_cold_wall']} wall, {result['warm_over_cold_cpu']} CPU."]
  with open(out.replace(".json", ".md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
