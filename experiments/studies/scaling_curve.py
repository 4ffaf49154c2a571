r"""Does more pretraining help? LensBench's Model II@100 rows (fine-tuned and linear probe)
for every checkpoint a pretraining run kept, against its step (step 0: the same backbone
from scratch).

  python -m experiments.studies.scaling_curve --pretrain=/work/runs/lensfm_tiny_v1 --name=tiny

Each checkpoint is scored by `configs/bench.py:preset=PRESET` restricted to
`--rows` (a thin caller of LensBench: the same fixed sets and budgets as its table).
Writes experiments/results/scaling_<name>_<device>.{json,md,png}; --card_plot also
copies the plot there (e.g. lensfm/weights/tiny/scaling.png).
"""
import os
import shutil

from absl import app
from absl import flags

from experiments import results
from experiments.studies import common
from lensfm.tasks import bench_report

_PRETRAIN = flags.DEFINE_string("pretrain", None, "A pretraining workdir (its checkpoints/).")
_NAME = flags.DEFINE_string("name", None, "Names the outputs: scaling_<name>_<device>.")
_PRESET = flags.DEFINE_enum("preset", "cpu", ["runlocal", "cpu", "accelerator"], "Budgets.")
_ROWS = flags.DEFINE_string("rows", "^classify/model_ii/100/(finetune|linear)/s0$",
                            "LensBench rows scored at each checkpoint.")
_STEPS = flags.DEFINE_list("steps", [], "Only these checkpoint steps (default: all).")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lensfm_scaling", "Bench directories.")
_CARD_PLOT = flags.DEFINE_string("card_plot", "", "Also copy the plot here.")
_BASELINE = flags.DEFINE_string("baseline_rows", "^classify/model_ii/100/scratch/s0$",
                                "Rows of the step-0 point (no checkpoint).")


def checkpoint_steps(workdir: str) -> list[int]:
  root = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(root) if d.isdigit())
  if _STEPS.value:
    steps = [s for s in steps if str(s) in _STEPS.value]
  if not steps:
    raise app.UsageError(f"No checkpoints under {root} (steps {_STEPS.value or 'any'}).")
  return steps


def headline(summary, mode) -> float | None:
  rows = [r for r in summary["rows"] if r.get("mode") == mode and "scores" in r]
  values = [r["scores"]["test"]["auc_macro"] for r in rows]
  return bench_report.stats(values)["mean"]


def plot(points, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for mode, label in (("finetune", "fine-tuned"), ("linear", "linear probe")):
    xs = [p["step"] for p in points if p.get(mode) is not None]
    ax.plot(xs, [p[mode] for p in points if p.get(mode) is not None], marker="o", label=label)
  scratch = points[0].get("scratch")
  if scratch is not None:
    ax.axhline(scratch, color="gray", ls="--", lw=1, label="same backbone, scratch")
  ax.set_xlabel("pretraining steps")
  ax.set_ylabel("Model II@100 macro AUC (test)")
  ax.set_title("Does more pretraining help?")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  if not _PRETRAIN.value or not _NAME.value:
    raise app.UsageError("Give --pretrain=WORKDIR and --name=NAME.")
  steps = checkpoint_steps(_PRETRAIN.value)
  first = os.path.join(_PRETRAIN.value, "checkpoints", str(steps[0]))
  base = common.lensbench(first, os.path.join(_WORKDIR.value, "step0"), preset=_PRESET.value,
                          only=_BASELINE.value)
  points = [{"step": 0, "scratch": headline(base, "scratch")}]
  for step in steps:
    ckpt = os.path.join(_PRETRAIN.value, "checkpoints", str(step))
    summary = common.lensbench(ckpt, os.path.join(_WORKDIR.value, f"step{step}"),
                               preset=_PRESET.value, only=_ROWS.value)
    points.append({"step": step, "finetune": headline(summary, "finetune"),
                   "linear": headline(summary, "linear")})
    print(points[-1], flush=True)
  stem = results.stem("scaling", _NAME.value)
  meta = {k: base["meta"][k] for k in ("device_kind", "jax_version", "steps", "batch_size",
                                       "set_sizes", "version", "preset")}
  fmt = lambda v: "–" if v is None else f"{v:.3f}"
  lines = [f"# Pretraining scaling: {_NAME.value}", "",
           f"`{results.command()}`; LensBench `{_PRESET.value}` rows `{_ROWS.value}` (one "
           f"seed, test split, {meta['set_sizes']['test']} lenses); device "
           f"{meta['device_kind']}, JAX {meta['jax_version']}.", "",
           "| pretraining steps | fine-tuned | linear probe | scratch |", "|---|---|---|---|"]
  for p in points:
    lines.append(f"| {p['step']} | {fmt(p.get('finetune'))} | {fmt(p.get('linear'))} | "
                 f"{fmt(p.get('scratch'))} |")
  text = results.write(stem, {"pretrain": _PRETRAIN.value, "rows": _ROWS.value, "meta": meta,
                              "points": points}, lines)
  plot(points, stem + ".png")
  if _CARD_PLOT.value:
    shutil.copyfile(stem + ".png", _CARD_PLOT.value)
  print(text)


if __name__ == "__main__":
  app.run(main)
