"""Where and how every script in experiments/ writes its results: experiments/results/,
one JSON and one markdown table per run, each naming the device, the JAX version and the
command that made it.

  stem = results.stem("vs_torch")        # experiments/results/vs_torch_cpu
  results.write(stem, result, lines)      # vs_torch_cpu.json and vs_torch_cpu.md
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "experiments", "results")


def device_slug(device_kind: str | None = None) -> str:
  """A device kind as file names carry it: 'cpu', 'NVIDIA_H200' (default: this machine's
  first JAX device)."""
  if device_kind is None:
    import jax  # pylint: disable=g-import-not-at-top
    device_kind = jax.devices()[0].device_kind
  return re.sub(r"[^A-Za-z0-9]+", "_", device_kind).strip("_")


def stem(name: str, *tags: str, device: str | None = None, suffix: str = "") -> str:
  """RESULTS_DIR/<name>_<tags...>_<device slug><suffix>, without extension. A tag equal to
  the device slug is not repeated (the cpu preset on a CPU: downstream_cpu)."""
  slug = device_slug(device)
  parts = [name] + [str(t) for t in tags if t and str(t) != slug] + [slug]
  return os.path.join(RESULTS_DIR, "_".join(parts) + suffix)


def command() -> str:
  """The command that ran this script, as someone would type it again."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  head = f"python -m {spec.name}" if spec and spec.name else f"python {sys.argv[0]}"
  return " ".join([head] + sys.argv[1:])


def environment() -> dict:
  """Device, JAX version and command of this run (what every result names)."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {"device_kind": device.device_kind, "platform": device.platform,
          "num_devices": jax.device_count(), "jax_version": jax.__version__,
          "cpu_count": os.cpu_count(), "command": command()}


def table(header: list[str], rows: list[list]) -> list[str]:
  """A markdown table's lines."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def write_json(path: str, result: dict) -> str:
  """`result` with the environment's fields it lacks, as JSON at `path` (a temporary file
  renamed into place: a run killed while writing keeps the previous file)."""
  result = {**{k: v for k, v in environment().items() if k not in result}, **result}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=2, default=float)
  os.replace(tmp, path)
  return path


def write(stem_path: str, result: dict, lines: list[str]) -> str:
  """<stem>.json (see write_json) and <stem>.md: `lines`, then the device, JAX version and
  command (unless the lines name the command already). Returns the markdown."""
  write_json(stem_path + ".json", result)
  env = environment()
  text = "\n".join(lines)
  if env["command"] not in text:
    text += (f"\n\nDevice {env['device_kind']} ({env['num_devices']} device(s), "
             f"{env['cpu_count']} CPU cores), JAX {env['jax_version']}; `{env['command']}`.")
  with open(stem_path + ".md", "w") as f:
    f.write(text + "\n")
  return text
