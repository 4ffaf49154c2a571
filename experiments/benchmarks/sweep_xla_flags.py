r"""lensfm's MAE step time under different XLA CPU flags, each in its own process, interleaved.

  python -m experiments.benchmarks.sweep_xla_flags --rounds=2

XLA reads its flags once per process, so each variant runs
`python -m experiments.benchmarks.vs_torch --lensfm_only` in a subprocess; rounds
alternate the variants (compiled steps come from the persistent compilation cache after
the first round). Ratios to the default flags are printed and written to
experiments/results/xla_flags_cpu.{json,md}.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

from experiments import results

VARIANTS = {
    "default": "",
    "no_xnnpack": "--xla_cpu_use_xnnpack=false",
    "onednn": "--xla_cpu_use_onednn=true",
    "ynn_dot_eltwise_reduce": "--xla_cpu_experimental_ynn_fusion_type="
                              "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
}


flags.DEFINE_string("variants", ",".join(VARIANTS), "Flag variants (names above).")
flags.DEFINE_string("models", "Ti/8", "ViT variants, comma-separated.")
flags.DEFINE_string("dtypes", "float32,bfloat16", "Compute dtypes, comma-separated.")
flags.DEFINE_integer("rounds", 2, "Rounds over the variants.")
flags.DEFINE_integer("steps", 3, "Timed steps per variant and round.")


def main(argv):
  del argv
  args = flags.FLAGS  # Read as args.NAME.
  times = {}
  for _ in range(args.rounds):
    for name in args.variants.split(","):
      with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + VARIANTS[name]).strip()}
        subprocess.run([sys.executable, "-m", "experiments.benchmarks.vs_torch", "--lensfm_only",
                        f"--variants={args.models}", f"--dtypes={args.dtypes}", "--rounds=1",
                        f"--steps={args.steps}", f"--out={out.name}"], cwd=results.ROOT,
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for row in json.load(open(out.name))["rows"]:
          times.setdefault((name, row["variant"], row["dtype"]), []).append(row["lensfm_step_ms"])
      print(name, {k[1:]: v for k, v in times.items() if k[0] == name}, flush=True)
  rows = []
  for (name, model, dtype), ms in times.items():
    base = statistics.median(times[("default", model, dtype)]) if ("default", model, dtype) in times else None
    med = statistics.median(ms)
    rows.append({"flags": VARIANTS[name], "name": name, "model": model, "dtype": dtype,
                 "step_ms": ms, "median_ms": med, "speedup_vs_default": base and round(base / med, 3)})
    print(f"{name:26s} {model:6s} {dtype:9s} {med:9.1f} ms  x{rows[-1]['speedup_vs_default']}")
  lines = ["lensfm's MAE step (`experiments.benchmarks.vs_torch --lensfm_only`) under XLA CPU "
           f"flags, medians of {args.rounds} interleaved rounds of {args.steps} steps.", ""]
  lines += results.table(["variant", "model", "dtype", "median ms", "vs default"],
                         [[r["name"], r["model"], r["dtype"], round(r["median_ms"], 1),
                           r["speedup_vs_default"]] for r in rows])
  results.write(results.stem("xla_flags", device="cpu"),
                {"rows": rows, "load_average": os.getloadavg()}, lines)


if __name__ == "__main__":
  app.run(main)
