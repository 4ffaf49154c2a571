r"""Stress test: the two-process x 4-device CPU job, many times in a row, also under load.

  python -m experiments.benchmarks.stress_multiprocess --runs=10 --load_runs=5 --load_procs=2

Runs `python -m lensfm.main --config=configs/mae_vit_b.py:runlocal` (its shipped
settings unless --total_steps etc. are given) as two processes with 4 fake CPU devices
each (JAX's multi-controller runtime over localhost, gloo collectives), `--runs` times
in a row; the last `--load_runs` of them with `--load_procs` busy-looping processes
beside them (a CPU load generator). Each run must exit 0 within --timeout seconds and
end with the same parameters as one process with 8 devices (run first): same global
batches, keys and mesh, so only the order of cross-process sums differs (rtol 1e-4,
atol 2e-5, as tests/test_multiprocess.py). The watchdog (config.watchdog_seconds) turns
a hang into exit code 124. Results: experiments/results/stress_multiprocess_cpu.{json,md}.
"""
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from experiments import results
from lensfm.train import loading

ROOT = results.ROOT
flags.DEFINE_integer("runs", 10, "Two-process runs in a row.")
flags.DEFINE_integer("load_runs", 5,
                     "How many of the last runs have the load generator beside them.")
flags.DEFINE_integer("load_procs", 2, "Busy-looping processes.")
flags.DEFINE_bool("alternate_load", False,
                  "Load generator beside every second run instead of the last ones.")
flags.DEFINE_integer("total_steps", None, "config.total_steps (default the config's).")
flags.DEFINE_float("timeout", 1800, "Seconds per run.")
flags.DEFINE_integer("watchdog_seconds", 300,
                     "config.watchdog_seconds of every run (a hang exits 124).")
flags.DEFINE_string("workdir", None, "Run directories (default: a temporary directory).")
flags.DEFINE_bool("reuse_reference", False,
                  "Reuse the reference run of an earlier call with this --workdir.")
flags.DEFINE_string("out", results.stem("stress_multiprocess", device="cpu"),
                    "Output path without extension (.json and .md are written).")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def environment(devices: int, cache_dir: str) -> dict:
  env = dict(os.environ)
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
             JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  return env


def command(workdir, overrides) -> list[str]:
  return [sys.executable, "-m", "lensfm.main", "--config=configs/mae_vit_b.py:runlocal",
          f"--workdir={workdir}", "--config.progress_bar=False"] + [
              f"--config.{k}={v}" for k, v in overrides.items()]


def flat_params(workdir) -> dict:
  state, _, step = loading.read_state(workdir)
  flat = {}

  def walk(prefix, node):
    if isinstance(node, dict):
      for k, v in node.items():
        walk(f"{prefix}/{k}", v)
    elif isinstance(node, (list, tuple)):
      for i, v in enumerate(node):
        walk(f"{prefix}/{i}", v)
    else:
      flat[prefix] = np.asarray(node)
  walk("", state["params"])
  return flat, step


def run_reference(workdir, overrides, cache_dir, timeout) -> float:
  start = time.time()
  with open(os.path.join(workdir, "log.txt"), "w") as log:
    code = subprocess.run(command(os.path.join(workdir, "w"), overrides),
                          env=environment(8, cache_dir), cwd=ROOT, stdout=log,
                          stderr=subprocess.STDOUT, timeout=timeout).returncode
  if code:
    raise SystemExit(f"The one-process reference run failed (exit {code}); see {workdir}.")
  return time.time() - start


def run_two(workdir, overrides, cache_dir, timeout) -> dict:
  port = free_port()
  procs, logs = [], []
  start = time.time()
  for i in range(2):
    logs.append(open(os.path.join(workdir, f"log{i}.txt"), "w"))
    cmd = command(os.path.join(workdir, "w"), overrides) + [
        f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"]
    procs.append(subprocess.Popen(cmd, env=environment(4, cache_dir), cwd=ROOT,
                                  stdout=logs[-1], stderr=subprocess.STDOUT))
  timed_out = False
  for proc in procs:
    try:
      proc.wait(timeout=max(1, timeout - (time.time() - start)))
    except subprocess.TimeoutExpired:
      timed_out = True
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  for log in logs:
    log.close()
  codes = [p.returncode for p in procs]
  watchdog_fired = []
  for i in range(2):
    with open(os.path.join(workdir, f"log{i}.txt")) as f:
      found = re.search(r"lensfm watchdog: .*", f.read())
    if found:
      watchdog_fired.append(found.group(0)[:300])
  return {"exit_codes": codes, "seconds": round(time.time() - start, 1),
          "timed_out": timed_out, "watchdog": watchdog_fired}


def start_load(n: int) -> list[subprocess.Popen]:
  return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_load(procs) -> None:
  for proc in procs:
    proc.kill()
    proc.wait()


def main(argv):
  del argv
  args = flags.FLAGS  # Read as args.NAME.
  logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint read at INFO.
  overrides = {"watchdog_seconds": args.watchdog_seconds}
  if args.total_steps:
    overrides["total_steps"] = args.total_steps
  base = args.workdir or tempfile.mkdtemp(prefix="lensfm_stress_")
  cache_dir = os.path.join(base, "xla_cache")
  os.makedirs(cache_dir, exist_ok=True)

  ref_dir = os.path.join(base, "reference")
  os.makedirs(ref_dir, exist_ok=True)
  seconds_file = os.path.join(ref_dir, "seconds")
  if args.reuse_reference and os.path.exists(seconds_file):  # Same --workdir, same flags.
    with open(seconds_file) as f:
      ref_seconds = float(f.read())
  else:
    ref_seconds = run_reference(ref_dir, overrides, cache_dir, args.timeout)
    with open(seconds_file, "w") as f:
      f.write(str(ref_seconds))
  expected, expected_step = flat_params(os.path.join(ref_dir, "w"))
  print(f"reference (1 process x 8 devices): step {expected_step}, {ref_seconds:.0f} s",
        flush=True)

  runs = []
  for k in range(args.runs):
    loaded = (k % 2 == 1) if args.alternate_load else k >= args.runs - args.load_runs
    load = start_load(args.load_procs) if loaded else []
    workdir = os.path.join(base, f"run{k}")
    os.makedirs(workdir, exist_ok=True)
    try:
      result = run_two(workdir, overrides, cache_dir, args.timeout)
    finally:
      stop_load(load)
    result.update(run=k, under_load=loaded)
    ok = result["exit_codes"] == [0, 0]
    if ok:
      got, step = flat_params(os.path.join(workdir, "w"))
      diffs = [float(np.max(np.abs(got[key] - expected[key]))) for key in expected]
      close = sorted(got) == sorted(expected) and all(
          np.allclose(got[key], expected[key], rtol=1e-4, atol=2e-5) for key in expected)
      result.update(final_step=step, max_abs_param_diff=max(diffs), params_match=close)
      ok = close and step == expected_step
    result["ok"] = ok
    runs.append(result)
    print(json.dumps(result), flush=True)
    summary = write_results(args, overrides, ref_seconds, expected_step, runs)
  return 0 if summary["all_ok"] else 1


def write_results(args, overrides, ref_seconds, expected_step, runs) -> dict:
  """JSON + markdown table, rewritten after every run (an interrupted stress run keeps
  what it measured)."""
  import jax  # pylint: disable=g-import-not-at-top
  summary = {
      "command": results.command(),
      "config": "configs/mae_vit_b.py:runlocal" + "".join(
          f" --config.{k}={v}" for k, v in overrides.items()),
      "device": f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} "
                f"cores), 2 processes x 4 fake devices vs 1 process x 8",
      "jax_version": jax.__version__, "reference_seconds": round(ref_seconds, 1),
      "final_step": expected_step, "load_procs": args.load_procs,
      "runs": runs, "all_ok": all(r["ok"] for r in runs),
      "passed": sum(r["ok"] for r in runs), "total": len(runs),
      "planned": args.runs,
  }
  lines = [f"# Two-process stress test ({summary['device']})", "",
           f"`{summary['command']}`; {summary['config']}; JAX {summary['jax_version']}; "
           f"reference (1 process x 8 devices) {summary['reference_seconds']} s to step "
           f"{expected_step}.", "",
           "| run | under load | exit codes | seconds | final step | max abs param diff | ok |",
           "|---|---|---|---|---|---|---|"]
  for r in runs:
    diff = r.get("max_abs_param_diff")
    lines.append(f"| {r['run']} | {'yes' if r['under_load'] else 'no'} | {r['exit_codes']} "
                 f"| {r['seconds']} | {r.get('final_step', '-')} | "
                 f"{'-' if diff is None else f'{diff:.2e}'} | {'yes' if r['ok'] else 'NO'} |")
  lines += ["", f"{summary['passed']} of {summary['total']} runs (of {args.runs} planned) "
            f"finished with the reference's parameters."]
  results.write(args.out, summary, lines)
  return summary


if __name__ == "__main__":
  app.run(main)
