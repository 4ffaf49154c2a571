"""Figures of downstream results, as a paper would show them (PNG, matplotlib Agg).

  roc_curves           one curve per class (or the lensed class), AUC in the legend;
                       `log_fpr=True` stretches the low false-positive end that lens
                       searches care about, with the 1% and 0.1% lines marked.
  confusion_matrix     counts and row-normalised fractions (true class per row).
  regression_scatter   prediction vs truth with the identity line and MAE / RMSE / R^2.
  sr_triptych          LR (nearest-neighbour, at HR size), SR and HR, one column per image
                       (optionally bicubic too).
Every function writes through `pictures.save_figure` (atomic) and returns the path.
"""
import numpy as np

from lensfm.objectives import pictures as pictures_lib

plt = pictures_lib.plt


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str, *,
               log_fpr: bool = False, title: str = "ROC") -> str:
  """`curves` = {name: (fpr, tpr, auc)}."""
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  for name, (fpr, tpr, auc) in curves.items():
    if log_fpr:  # The origin cannot be shown on a log axis.
      keep = fpr > 0
      fpr, tpr = fpr[keep], tpr[keep]
    ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.4f})", lw=1.5)
  if log_fpr:
    ax.set_xscale("log")
    ax.set_xlim(left=1e-4)
    for f in (1e-2, 1e-3):
      ax.axvline(f, color="grey", ls=":", lw=1)
  else:
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_xlabel("false-positive rate")
  ax.set_ylabel("true-positive rate")
  ax.set_title(title)
  ax.legend(loc="lower right", fontsize=8)
  pictures_lib.save_figure(fig, path)
  return path


def confusion_matrix(matrix: np.ndarray, class_names, path: str) -> str:
  matrix = np.asarray(matrix)
  rows = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  fractions = matrix / rows
  k = len(class_names)
  fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.2 * k + 1.5))
  ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
  for i in range(k):
    for j in range(k):
      ax.text(j, i, f"{matrix[i, j]}\n{fractions[i, j]:.1%}", ha="center", va="center",
              color="white" if fractions[i, j] > 0.5 else "black", fontsize=8)
  ax.set_xticks(range(k), class_names, rotation=30)
  ax.set_yticks(range(k), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(f"confusion matrix (accuracy {np.trace(matrix) / max(matrix.sum(), 1):.3f})")
  pictures_lib.save_figure(fig, path)
  return path


def regression_scatter(pred, true, name: str, path: str, *, unit: str = "",
                       scores: dict[str, float] = None) -> str:
  pred, true = np.asarray(pred), np.asarray(true)
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.scatter(true, pred, s=4, alpha=0.5, lw=0)
  if len(true):
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="k", lw=1, ls="--")
  label = f"{name} [{unit}]" if unit else name
  ax.set_xlabel(f"true {label}")
  ax.set_ylabel(f"predicted {label}")
  if scores:
    ax.set_title(", ".join(f"{k} {v:.4g}" for k, v in scores.items()), fontsize=9)
  pictures_lib.save_figure(fig, path)
  return path


def sr_triptych(pictures: dict[str, np.ndarray], path: str, max_images: int = 6, *,
                with_bicubic: bool = False) -> str:
  """Rows LR, SR, HR (with_bicubic: a bicubic row between LR and SR), each lens on its
  HR image's colour scale in every row."""
  order = [k for k in ("LR", "bicubic", "SR", "HR")
           if k in pictures and (with_bicubic or k != "bicubic")]
  pictures_lib.save_image_rows({k: np.asarray(pictures[k])[:max_images] for k in order}, path,
                               scale_from="HR" if "HR" in pictures else None)
  return path
