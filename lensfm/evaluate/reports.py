"""Task-independent evaluation: run a downstream objective over a dataset, then turn its
outputs into the task's metrics and figures.

Every downstream objective (classify, regress, superres) has `task` and
`eval_outputs(params, extra, batch) -> {name: [B, ...]}` (see their docstrings), so the
evaluation code below is written once:

  outputs, first = collect(eval_fn, params, extra, batches, num_batches)
  metrics, details = summarize(objective, outputs)      # scalars / arrays
  paths = write_plots(objective, outputs, details, pictures, directory)

Metric names (what summary.json holds):
  classification: accuracy, auc_macro, auc_<class> per class, and for two classes
    (lens finding) auc, tpr_at_fpr_0.01, tpr_at_fpr_0.001; num_examples.
    details: confusion_matrix, roc curves.
  regression: mae_<t>, rmse_<t>, r2_<t>, num_<t> (examples the target applies to).
  superres: psnr, ssim, psnr_bicubic, ssim_bicubic, psnr_gain_db, ssim_gain.
"""
import os
from typing import Any, Iterable, Optional

import jax
import numpy as np

from lensfm.evaluate import metrics as metrics_lib

FPR_POINTS = (1e-2, 1e-3)


def _to_host(tree):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    tree = multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, jax.device_get(tree))


def collect(eval_fn, params, extra, batches: Iterable[dict], num_batches: Optional[int] = None
            ) -> tuple[dict[str, np.ndarray], Optional[dict]]:
  """Concatenated per-example outputs of the real (mask True) examples, and the first batch.

  `num_batches`: stop after that many (needed for endless sources such as the
  simulator); None reads until the source ends (a TFDS split).
  """
  parts, first = [], None
  for i, batch in enumerate(batches):
    if num_batches is not None and i >= num_batches:
      break
    out = _to_host(eval_fn(params, extra, batch))
    mask = _to_host(batch["mask"]) if "mask" in batch else None
    if mask is not None:
      out = {k: v[mask] for k, v in out.items()}
    parts.append(out)
    if first is None:
      first = batch
  if not parts:
    raise ValueError("The evaluation data yielded no batches.")
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, first


# -- metrics per task ----------------------------------------------------------------


def classification(outputs, class_names) -> tuple[dict, dict]:
  probs, labels = outputs["probs"], outputs["label"].astype(np.int64)
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
  if k == 2 and np.isfinite(aucs[1]):
    # Binary tasks (lens finding): class 1 is the positive one.
    result.update(metrics_lib.summarize_binary(labels == 1, probs[:, 1], FPR_POINTS))
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
  return result, details


def superres(outputs) -> tuple[dict, dict]:
  result = {"num_examples": int(len(outputs["psnr"]))}
  for k in ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic"):
    result[k] = float(np.mean(outputs[k]))
  result["psnr_gain_db"] = result["psnr"] - result["psnr_bicubic"]
  result["ssim_gain"] = result["ssim"] - result["ssim_bicubic"]
  return result, {}


def summarize(objective, outputs) -> tuple[dict[str, float], dict[str, Any]]:
  """(scalar metrics, details such as the confusion matrix and ROC curves)."""
  if objective.task == "classification":
    return classification(outputs, objective.class_names)
  if objective.task == "regression":
    return regression(outputs, objective.targets)
  if objective.task == "superres":
    return superres(outputs)
  raise ValueError(f"Objective task {objective.task!r} has no evaluation report.")


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


def write_plots(objective, result, details, pictures, directory: str,
                prefix: str = "") -> list[str]:
  """PNG figures of the task into `directory`; returns their paths."""
  from lensfm.evaluate import plots  # pylint: disable=g-import-not-at-top  (matplotlib)
  os.makedirs(directory, exist_ok=True)
  path = lambda name: os.path.join(directory, f"{prefix}{name}.png")
  paths = []
  if objective.task == "classification":
    if details["roc"]:
      binary = len(objective.class_names) == 2
      curves = ({objective.class_names[1]: details["roc"][objective.class_names[1]]}
                if binary and objective.class_names[1] in details["roc"] else details["roc"])
      paths.append(plots.roc_curves(curves, path("roc"), title="ROC (one vs rest)"
                                    if not binary else "ROC"))
      if binary:
        paths.append(plots.roc_curves(curves, path("roc_log"), log_fpr=True,
                                      title="ROC, low false-positive rates"))
    paths.append(plots.confusion_matrix(details["confusion_matrix"], objective.class_names,
                                        path("confusion_matrix")))
  elif objective.task == "regression":
    from lensfm.objectives import regress  # pylint: disable=g-import-not-at-top
    for t, (pred, true) in details.items():
      scores = {k: result[f"{k}_{t}"] for k in ("mae", "rmse", "r2")}
      paths.append(plots.regression_scatter(pred, true, t, path(f"scatter_{t}"),
                                            unit=regress.target_spec(t).unit, scores=scores))
  elif objective.task == "superres" and pictures is not None:
    paths.append(plots.sr_triptych(pictures, path("sr_triptych")))
    paths.append(plots.sr_triptych(pictures, path("sr_vs_bicubic"), with_bicubic=True))
  return paths
