"""Downstream results as every report shows them: the metrics of a task's evaluation
outputs, and its figures.

Each downstream objective (`base.DownstreamObjective`) reports through one of these:

  metrics, details = classification(outputs, class_names)   # or regression, superres
  paths = classification_plots(class_names, details, path)  # PNGs, `path(name)` each

Metric names (what summary.json holds):
  classification: accuracy, auc_macro, auc_<class> per class, and for two classes
    (lens finding) auc, tpr_at_fpr_0.01, tpr_at_fpr_0.001; num_examples.
    details: confusion_matrix, roc curves.
  regression: mae_<t>, rmse_<t>, r2_<t>, num_<t> (examples the target applies to).
  superres: psnr, ssim, psnr_bicubic, ssim_bicubic, psnr_gain_db, ssim_gain.
"""
import numpy as np

from lensfm.objectives import metrics as metrics_lib
from lensfm.objectives import plots

FPR_POINTS = (1e-2, 1e-3)


# -- metrics per task ----------------------------------------------------------------


def classification(outputs, class_names, positive: int = 1) -> tuple[dict, dict]:
  """Accuracy, per-class and macro ROC AUC; for two classes also the binary figures of
  class `positive` (what a lens search quotes). Unlabelled examples (-1) are left out."""
  probs, labels = outputs["probs"], outputs["label"].astype(np.int64)
  probs, labels = probs[labels >= 0], labels[labels >= 0]
  k = probs.shape[1]
  predictions = probs.argmax(axis=1)
  result = {"num_examples": int(len(labels)),
            "accuracy": metrics_lib.accuracy(labels, predictions)}
  aucs = metrics_lib.one_vs_rest_auc(labels, probs)
  result["auc_macro"] = (float(np.mean([a for a in aucs if np.isfinite(a)]))
                         if any(np.isfinite(aucs)) else float("nan"))
  curves = {}
  for c, name in enumerate(class_names):
    result[f"auc_{name}"] = aucs[c]
    if np.isfinite(aucs[c]):
      fpr, tpr, _ = metrics_lib.roc_curve(labels == c, probs[:, c])
      curves[name] = (fpr, tpr, aucs[c])
  if k == 2 and np.isfinite(aucs[positive]):
    result.update(metrics_lib.summarize_binary(labels == positive, probs[:, positive],
                                               FPR_POINTS))
  details = {"confusion_matrix": metrics_lib.confusion_matrix(labels, predictions, k),
             "roc": curves}
  return result, details


def regression(outputs, targets) -> tuple[dict, dict]:
  result, details = {}, {}
  for t in targets:
    valid = outputs[f"valid_{t}"].astype(bool)
    pred, true = outputs[f"pred_{t}"][valid], outputs[f"true_{t}"][valid]
    result.update({f"num_{t}": int(valid.sum()), f"mae_{t}": metrics_lib.mae(pred, true),
                   f"rmse_{t}": metrics_lib.rmse(pred, true), f"r2_{t}": metrics_lib.r2(pred, true)})
    details[t] = (pred, true)
  # One scale-free number over every target, what selection and early stopping compare.
  result["r2_mean"] = float(np.mean([result[f"r2_{t}"] for t in targets]))
  return result, details


def superres(outputs) -> tuple[dict, dict]:
  result = {"num_examples": int(len(outputs["psnr"]))}
  for k in ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic"):
    result[k] = float(np.mean(outputs[k]))
  result["psnr_gain_db"] = result["psnr"] - result["psnr_bicubic"]
  result["ssim_gain"] = result["ssim"] - result["ssim_bicubic"]
  return result, {}


def json_safe(result: dict) -> dict:
  """NaN / infinite metrics (e.g. the AUC of a class absent from the data) as strings,
  as the trainer's writer stores them, so summary.json stays strict JSON."""
  return {k: (str(v) if isinstance(v, float) and not np.isfinite(v) else v)
          for k, v in result.items()}


def json_details(details) -> dict:
  """The parts of `details` worth keeping in summary.json (no curves or raw arrays)."""
  out = {}
  if "confusion_matrix" in details:
    out["confusion_matrix"] = np.asarray(details["confusion_matrix"]).tolist()
  return out


# -- figures -------------------------------------------------------------------------


def classification_plots(class_names, details, path) -> list[str]:
  """ROC curves (and, for two classes, their low-FPR end) and the confusion matrix."""
  paths = []
  if details["roc"]:
    binary = len(class_names) == 2
    curves = ({class_names[1]: details["roc"][class_names[1]]}
              if binary and class_names[1] in details["roc"] else details["roc"])
    paths.append(plots.roc_curves(curves, path("roc"), title="ROC (one vs rest)"
                                  if not binary else "ROC"))
    if binary:
      paths.append(plots.roc_curves(curves, path("roc_log"), log_fpr=True,
                                    title="ROC, low false-positive rates"))
  paths.append(plots.confusion_matrix(details["confusion_matrix"], class_names,
                                      path("confusion_matrix")))
  return paths


def regression_plots(result, details, units, path) -> list[str]:
  """One prediction-vs-truth scatter per target; `units` = {target: unit}."""
  paths = []
  for t, (pred, true) in details.items():
    scores = {k: result[f"{k}_{t}"] for k in ("mae", "rmse", "r2")}
    paths.append(plots.regression_scatter(pred, true, t, path(f"scatter_{t}"),
                                          unit=units.get(t, ""), scores=scores))
  return paths


def superres_plots(pictures, path) -> list[str]:
  """LR / SR / HR triptychs, without and with bicubic."""
  if pictures is None:
    return []
  return [plots.sr_triptych(pictures, path("sr_triptych")),
          plots.sr_triptych(pictures, path("sr_vs_bicubic"), with_bicubic=True)]
