"""LensBench's outputs: the aggregated tables (mean ± std over seeds), at convergence and at
the fixed budget, with the published numbers beside their rows; bench.json, BENCH.md and
the plots (label efficiency with error bars, cross-instrument bars)."""
import os

import matplotlib

matplotlib.use("Agg")  # No display on clusters; must precede pyplot.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from lensfm import utils

MODE_NAMES = {"finetune": "checkpoint, fine-tuned", "linear": "checkpoint, linear probe",
              "scratch": "same backbone, scratch", "resnet": "ResNet-18, scratch"}
MODE_ORDER = ("finetune", "linear", "scratch", "resnet")

# Published numbers beside their rows (shared/literature.md; most are GSoC READMEs of
# ML4SCI/DeepLense, not peer-reviewed). None is the same data size, grid or budget.
REFERENCES = {
    1: "ML4SCI/DeepLense, Transformers_Classification_DeepLense_Kartik_Sachdev/README.md "
       "(GSoC README; full training sets, ~30k images per class)",
    2: "arXiv 2512.06642 (MAE pretraining, 90% masking, ViT; vs the same ViT from scratch)",
    3: "ML4SCI/DeepLense, DeepLense_Physics_Informed_Neural_Network_..._Ashutosh_Ojha/"
       "readme.md (GSoC README; Model II, 3,000 per class)",
    4: "ML4SCI/DeepLense, DeepLense_Regression_Yurii_Halychanskyi/README.md (GSoC README; "
       "units as it gives them)",
    5: "the LensBench issue's figure for ResNet-18 with all Model II labels (~0.9999 AUC); "
       "not in shared/literature.md's table",
}
PUBLISHED = {
    "Model II classification, all labels/class (macro AUC)":
        "CvT 0.9992 [1]; ResNet-18 ~0.9999 [5]; MAE ViT 0.968 vs scratch 0.957 [2]",
    "Model II classification, all labels/class (accuracy)":
        "CvT 99.41% [1]; MAE ViT 88.65% vs scratch 82.46% [2]",
    "Model II classification, 1000 labels/class (accuracy)":
        "at 3,000/class: LensPINN 99.6%, ViT 86.3%, ResNet-18 81.8% [3]",
    "Model I classification, 100 labels/class (macro AUC)":
        "all labels: CvT 0.979, LeViT 91.64% accuracy [1]",
    "Model III classification, 100 labels/class (macro AUC)":
        "all labels: CCT 99.48% accuracy, 0.9999 macro AUC [1]",
    "Axion mass regression, MAE (dex, lower is better)":
        "Model II: XResNet18Hybrid 0.221 [4]",
}
SANITY_BAR = 0.995  # LensBench's sanity bar: below it the baselines are undertrained.
SANITY = "Model II classification, all labels/class (macro AUC)"


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


def regime(row) -> str:
  return row.get("regime", "budget")


def metric(results, *, task, data, labels, mode, split, key, regime_="budget") -> dict:
  """mean/std/n over seeds of scores[split][key] for the rows matching (of one regime),
  with the mean steps and seconds to the best validation score and whether a run
  reached its cap."""
  rows = [r for r in results
          if "scores" in r and r["task"] == task and r["data"] == data
          and r["labels"] == labels and r["mode"] == mode and regime(r) == regime_]
  out = stats([r["scores"].get(split, {}).get(key) for r in rows])
  if rows and all("steps_to_best" in r for r in rows):
    out["steps_to_best"] = stats([r["steps_to_best"] for r in rows])["mean"]
    out["seconds_to_best"] = stats([r["seconds_to_best"] for r in rows])["mean"]
    out["hit_cap"] = any(r.get("hit_cap") for r in rows)
  return out


def table_rows(results, labels_list, regime_="budget") -> list[tuple[str, dict]]:
  """(row label, {mode: stats}) of one regime, in the order of the issue's table."""
  results = [r for r in results if regime(r) == regime_]
  if not results:
    return []
  modes = [m for m in MODE_ORDER if any(r["mode"] == m for r in results)]
  out = []

  def add(label, split="test", key="auc_macro", **where):
    out.append((label, {m: metric(results, mode=m, split=split, key=key, regime_=regime_,
                                  **where) for m in modes}))

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
    first = next(r for r in results if r["task"] == "extra" and r["data"] == data)
    labels, used = first["labels"], first.get("labels_used") or {}
    per_class = f"{labels} labels/class"
    if min(used.values(), default=labels) < labels:  # The data had fewer: say how many.
      per_class = f"up to {per_class} ({', '.join(f'{k} {n}' for k, n in used.items())})"
    add(f"Your data: {first.get('dataset') or 'deeplense/' + data}, {per_class} (macro AUC)",
        task="extra", data=data, labels=labels)
  return out


def fmt(s: dict) -> str:
  if s["mean"] is None:
    return "–"
  if s["n"] > 1:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"
  return f"{s['mean']:.3f}"


def fmt_converged(s: dict) -> str:
  """'0.952 (1,150 steps, 6.3 min)'; † where a run reached its cap."""
  if s["mean"] is None or s.get("steps_to_best") is None:
    return fmt(s)
  return (f"{fmt(s)} ({s['steps_to_best']:,.0f} steps, {s['seconds_to_best'] / 60:.1f} min)"
          + (" †" if s.get("hit_cap") else ""))


def table(rows, cell, published: bool) -> list[str]:
  modes = list(rows[0][1]) if rows else []
  lines = ["| row | " + " | ".join(MODE_NAMES[m] for m in modes)
           + (" | published (not the same data or budget) |" if published else " |"),
           "|---|" + "---|" * (len(modes) + published)]
  for label, by_mode in rows:
    lines.append(f"| {label} | " + " | ".join(cell(by_mode[m]) for m in modes)
                 + (f" | {PUBLISHED.get(label, '')} |" if published else " |"))
  return lines


def converged_section(info, rows) -> list[str]:
  es = info.get("early_stopping") or {}
  lines = ["## At convergence (accuracy ceiling)", "",
           f"Every mode alike: one run per learning rate x{list(info.get('lr_grid', []))} of "
           f"its recipe's, each validated every {es.get('every')} steps on the validation "
           f"split and stopped after {es.get('patience')} validations without an improvement "
           f"of more than {es.get('min_delta')} (cap {info.get('cap_steps')} steps, also "
           "the cosine schedule's length); the run with the best validation score is "
           "chosen and its best-validation state scored on the test split. Cells: test "
           "value (steps and wall time to the best validation score, of the chosen run); "
           "† the cap was reached before patience ran out.", ""]
  lines += table(rows, fmt_converged, published=True)
  sanity = dict(rows).get(SANITY, {}).get("resnet")
  if sanity and sanity["mean"] is not None:
    verdict = "meets" if sanity["mean"] >= SANITY_BAR else "misses"
    lines += ["", f"Sanity row: ResNet-18 from scratch with all Model II labels reaches "
              f"{sanity['mean']:.4f} macro AUC here ({fmt_converged(sanity)}); it {verdict} "
              f"the bar of {SANITY_BAR} below which the baselines count as undertrained. The "
              "literature has ~0.9999 [5] (full-size sets, 64 px, full-width ResNet-18, many "
              "epochs)."]
  lines += ["", "Published numbers:"] + [f"[{k}] {v}" for k, v in REFERENCES.items()]
  return lines + [""]


def markdown(info, rows, converged_rows=None) -> str:
  modes = list(rows[0][1]) if rows else []
  lines = ["# LensBench", "",
           f"Checkpoint: `{info['checkpoint'] or '(none: baselines only)'}` "
           f"(step {info['checkpoint_step']}, objective {info.get('checkpoint_objective')}); "
           f"grid {info['grid']['image_size']} px at {info['grid']['pixel_scale']}\"/px; "
           f"sets {info['version']}; preset `{info['preset']}`.",
           f"Device: {info['device_kind']} x{info['num_devices']}, JAX {info['jax_version']}; "
           f"budgets: {info['steps']} steps of batch {info['batch_size']} per run; seeds "
           f"{info['seeds']} (mean ± std over seeds where n > 1); test-set sizes "
           f"{info['set_sizes']}; compute dtype {info.get('model_dtype')}; bench wall time "
           f"{info['row_seconds_total'] / 60:.1f} min (sum of rows).", "",
           "Test-split numbers; validation numbers are in bench.json (tune on those).", ""]
  if converged_rows:
    lines += converged_section(info, converged_rows)
  if rows:
    lines += ["## At a fixed budget (compute efficiency)", "",
              f"{info['steps']} steps of batch {info['batch_size']} per run, the recipe's "
              "learning rate, no selection.", ""]
    lines += table(rows, fmt, published=False)
  del modes
  return "\n".join(lines) + "\n"


def plot_label_efficiency(results, labels_list, path, regime_="budget") -> str:
  numeric = [l for l in labels_list if l]
  all_x = (max(numeric) * 10) if numeric else 1
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for mode in MODE_ORDER:
    xs, ys, es = [], [], []
    for labels in labels_list:
      s = metric(results, task="classify", data="model_ii", labels=labels, mode=mode,
                 split="test", key="auc_macro", regime_=regime_)
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
  ax.set_title(f"LensBench label efficiency ({regime_})")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_cross_instrument(results, path, regime_="budget") -> str:
  transfer = [r for r in results if r.get("transfer") and "scores" in r
              and regime(r) == regime_]
  fig, ax = plt.subplots(figsize=(6.5, 4))
  if transfer:
    labels = transfer[0]["labels"]
    targets = (("test", "Model II"), ("model_i/test", "-> Model I"),
               ("model_iii/test", "-> Model III"), ("model_ii_rotated/test", "rotated"))
    modes = [m for m in MODE_ORDER if any(r["mode"] == m for r in transfer)]
    width = 0.8 / max(len(modes), 1)
    for j, mode in enumerate(modes):
      s = [metric(results, task="classify", data="model_ii", labels=labels, mode=mode,
                  split=split, key="auc_macro", regime_=regime_) for split, _ in targets]
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
  """bench.json ('table': the fixed budget's, 'table_converged'), BENCH.md, the plots (of
  the converged rows where there are any)."""
  labels_list = sorted({r["labels"] for r in results
                        if r["task"] == "classify" and r["data"] == "model_ii"},
                       key=lambda l: (l == 0, l))
  rows = table_rows(results, labels_list, "budget")
  converged = table_rows(results, labels_list, "converged")
  as_json = lambda t: [{"row": label, **by_mode} for label, by_mode in t]
  summary = {"meta": info, "table": as_json(rows), "table_converged": as_json(converged),
             "errors": {r["id"]: r["error"] for r in results if "error" in r},
             "rows": results}
  shown = "converged" if converged else "budget"
  summary["plots"] = [
      plot_label_efficiency(results, labels_list, os.path.join(workdir, "label_efficiency.png"),
                            shown),
      plot_cross_instrument(results, os.path.join(workdir, "cross_instrument.png"), shown)]
  utils.write_json_atomically(os.path.join(workdir, "bench.json"), summary)
  text = markdown(info, rows, converged)
  if summary["errors"]:
    text += "\nFailed rows: " + "; ".join(f"{k}: {v}" for k, v in summary["errors"].items()) + "\n"
  tmp = os.path.join(workdir, "BENCH.md.tmp")
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, os.path.join(workdir, "BENCH.md"))
  return summary
