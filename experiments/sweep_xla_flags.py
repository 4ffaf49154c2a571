r"""lensfm's MAE step time under different XLA CPU flags, each in its own process, interleaved.

  python experiments/sweep_xla_flags.py --rounds=2

XLA reads its flags once per process, so each variant runs bench_vs_torch.py
--lensfm_only in a subprocess; rounds alternate the variants (compiled steps come from
the persistent compilation cache after the first round). Ratios to the default flags
are printed and written to xla_flags_cpu.json in the results folder beside this script.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = {
    "default": "",
    "no_xnnpack": "--xla_cpu_use_xnnpack=false",
    "onednn": "--xla_cpu_use_onednn=true",
    "ynn_dot_eltwise_reduce": "--xla_cpu_experimental_ynn_fusion_type="
                              "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--models", default="Ti/8")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--steps", type=int, default=3)
  args = p.parse_args()
  times = {}
  for _ in range(args.rounds):
    for name in args.variants.split(","):
      with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + VARIANTS[name]).strip()}
        subprocess.run([sys.executable, os.path.join(HERE, "bench_vs_torch.py"), "--lensfm_only",
                        f"--variants={args.models}", f"--dtypes={args.dtypes}", "--rounds=1",
                        f"--steps={args.steps}", f"--out={out.name}"],
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
  with open(os.path.join(HERE, "results", "xla_flags_cpu.json"), "w") as f:
    json.dump({"rows": rows, "load_average": os.getloadavg()}, f, indent=2)


if __name__ == "__main__":
  main()
