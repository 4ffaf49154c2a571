"""LensBench's outputs: the aggregated table (mean ± std over seeds), bench.json, BENCH.md
and the plots (label efficiency with error bars, cross-instrument bars)."""
import os

import matplotlib

matplotlib.use("Agg")  # No display on clusters; must precede pyplot.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from lensfm import utils

MODE_NAMES = {"finetune": "checkpoint, fine-tuned", "linear": "checkpoint, linear probe",
              "scratch": "same backbone, scratch", "resnet": "ResNet-18, scratch"}
MODE_ORDER = ("finetune", "linear", "scratch", "resnet")


def _number(value):
  try:
    value = float(value)
  except (TypeError, ValueError):
    return None
  return value if np.isfinite(value) else None


def stats(values) -> dict:
  values = [v for v in (_number(x) for x in values) if v is not None]
  if not values:
    return {"mean": None, "std": None, "n": 0}
  return {"mean": float(np.mean(values)),
          "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
          "n": len(values)}


def metric(results, *, task, data, labels, mode, split, key) -> dict:
  """mean/std/n over seeds of scores[split][key] for the rows matching."""
  values = [r["scores"].get(split, {}).get(key) for r in results
            if "scores" in r and r["task"] == task and r["data"] == data
            and r["labels"] == labels and r["mode"] == mode]
  return stats(values)


def table_rows(results, labels_list) -> list[tuple[str, dict]]:
  """(row label, {mode: stats}) in the order of the issue's table."""
  modes = [m for m in MODE_ORDER if any(r["mode"] == m for r in results)]
  out = []

  def add(label, split="test", key="auc_macro", **where):
    out.append((label, {m: metric(results, mode=m, split=split, key=key, **where)
                        for m in modes}))

  for labels in labels_list:
    add(f"Model II classification, {labels or 'all'} labels/class (macro AUC)",
        task="classify", data="model_ii", labels=labels)
  for labels in labels_list:
    add(f"Model II classification, {labels or 'all'} labels/class (accuracy)",
        key="accuracy", task="classify", data="model_ii", labels=labels)
  others = sorted({(r["data"], r["labels"]) for r in results
                   if r["task"] == "classify" and r["data"] != "model_ii"})
  for data, labels in others:
    add(f"{data.replace('model_', 'Model ').replace('iii', 'III').replace('ii', 'II').replace(' i', ' I')}"
        f" classification, {labels} labels/class (macro AUC)", task="classify", data=data,
        labels=labels)
  transfer = [r for r in results if r.get("transfer")]
  if transfer:
    labels = transfer[0]["labels"]
    for name, label in (("model_i", "Model I"), ("model_iii", "Model III"),
                        ("model_ii_rotated", "Model II rotated (simulator)")):
      add(f"Transfer: Model II@{labels} fine-tune scored on {label} (macro AUC)",
          split=f"{name}/test", task="classify", data="model_ii", labels=labels)
  if any(r["task"] == "regress" for r in results):
    add("Axion mass regression, MAE (dex, lower is better)", key="mae_log10_axion_mass",
        task="regress", data="axion", labels=0)
  if any(r["task"] == "superres" for r in results):
    add("Super-resolution x2, PSNR gain over bicubic (dB)", key="psnr_gain_db",
        task="superres", data="superres", labels=0)
  if any(r["task"] == "lensfind" for r in results):
    add("Lens finding, AUC", key="auc", task="lensfind", data="lensfind", labels=0)
    add("Lens finding, TPR at 1% FPR", key="tpr_at_fpr_0.01", task="lensfind",
        data="lensfind", labels=0)
  for data in sorted({r["data"] for r in results if r["task"] == "extra"}):
    labels = next(r["labels"] for r in results if r["task"] == "extra" and r["data"] == data)
    add(f"Your data: deeplense/{data}, {labels} labels/class (macro AUC)", task="extra",
        data=data, labels=labels)
  return out


def fmt(s: dict) -> str:
  if s["mean"] is None:
    return "–"
  if s["n"] > 1:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"
  return f"{s['mean']:.3f}"


def markdown(info, rows) -> str:
  modes = list(rows[0][1]) if rows else []
  lines = ["# LensBench", "",
           f"Checkpoint: `{info['checkpoint'] or '(none: baselines only)'}` "
           f"(step {info['checkpoint_step']}, objective {info.get('checkpoint_objective')}); "
           f"grid {info['grid']['image_size']} px at {info['grid']['pixel_scale']}\"/px; "
           f"sets {info['version']}; preset `{info['preset']}`.",
           f"Device: {info['device_kind']} x{info['num_devices']}, JAX {info['jax_version']}; "
           f"budgets: {info['steps']} steps of batch {info['batch_size']} per run; seeds "
           f"{info['seeds']} (mean ± std over seeds where n > 1); test-set sizes "
           f"{info['set_sizes']}; bench wall time {info['row_seconds_total'] / 60:.1f} min "
           "(sum of rows).", "",
           "Test-split numbers; validation numbers are in bench.json (tune on those).", "",
           "| row | " + " | ".join(MODE_NAMES[m] for m in modes) + " |",
           "|---|" + "---|" * len(modes)]
  for label, by_mode in rows:
    lines.append(f"| {label} | " + " | ".join(fmt(by_mode[m]) for m in modes) + " |")
  return "\n".join(lines) + "\n"


def plot_label_efficiency(results, labels_list, path) -> str:
  numeric = [l for l in labels_list if l]
  all_x = (max(numeric) * 10) if numeric else 1
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for mode in MODE_ORDER:
    xs, ys, es = [], [], []
    for labels in labels_list:
      s = metric(results, task="classify", data="model_ii", labels=labels, mode=mode,
                 split="test", key="auc_macro")
      if s["mean"] is not None:
        xs.append(labels or all_x)
        ys.append(s["mean"])
        es.append(s["std"])
    if xs:
      ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=MODE_NAMES[mode])
  ax.set_xscale("log")
  ticks = numeric + [all_x]
  ax.set_xticks(ticks)
  ax.set_xticklabels([str(t) for t in numeric] + ["all"])
  ax.set_xlabel("labels per class")
  ax.set_ylabel("Model II macro AUC (test)")
  ax.set_title("LensBench label efficiency")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_cross_instrument(results, path) -> str:
  transfer = [r for r in results if r.get("transfer") and "scores" in r]
  fig, ax = plt.subplots(figsize=(6.5, 4))
  if transfer:
    labels = transfer[0]["labels"]
    targets = (("test", "Model II"), ("model_i/test", "-> Model I"),
               ("model_iii/test", "-> Model III"), ("model_ii_rotated/test", "rotated"))
    modes = [m for m in MODE_ORDER if any(r["mode"] == m for r in transfer)]
    width = 0.8 / max(len(modes), 1)
    for j, mode in enumerate(modes):
      s = [metric(results, task="classify", data="model_ii", labels=labels, mode=mode,
                  split=split, key="auc_macro") for split, _ in targets]
      ax.bar(np.arange(len(targets)) + j * width, [x["mean"] or 0 for x in s], width,
             yerr=[x["std"] or 0 for x in s], capsize=3, label=MODE_NAMES[mode])
    ax.set_xticks(np.arange(len(targets)) + width * (len(modes) - 1) / 2)
    ax.set_xticklabels([t for _, t in targets])
    ax.set_title(f"Fine-tuned on Model II ({labels} labels/class), scored unchanged")
  ax.axhline(0.5, color="gray", lw=0.8, ls="--")
  ax.set_ylabel("macro AUC (test)")
  ax.set_ylim(0.4, 1.0)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_all(workdir, info, results) -> dict:
  labels_list = sorted({r["labels"] for r in results
                        if r["task"] == "classify" and r["data"] == "model_ii"},
                       key=lambda l: (l == 0, l))
  rows = table_rows(results, labels_list)
  summary = {"meta": info, "table": [{"row": label, **by_mode} for label, by_mode in rows],
             "errors": {r["id"]: r["error"] for r in results if "error" in r},
             "rows": results}
  summary["plots"] = [
      plot_label_efficiency(results, labels_list, os.path.join(workdir, "label_efficiency.png")),
      plot_cross_instrument(results, os.path.join(workdir, "cross_instrument.png"))]
  utils.write_json_atomically(os.path.join(workdir, "bench.json"), summary)
  text = markdown(info, rows)
  if summary["errors"]:
    text += "\nFailed rows: " + "; ".join(f"{k}: {v}" for k, v in summary["errors"].items()) + "\n"
  tmp = os.path.join(workdir, "BENCH.md.tmp")
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, os.path.join(workdir, "BENCH.md"))
  return summary
