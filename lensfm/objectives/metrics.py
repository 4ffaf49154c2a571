"""Downstream metrics, written once and checked against scikit-learn and skimage.

Classification (numpy, on the host, over a whole evaluation set):
  roc_curve(y, score)             -> (fpr, tpr, thresholds), as sklearn.metrics.roc_curve
                                     with drop_intermediate=False (ties form one point).
  roc_auc(y, score)               area under that curve (trapezoids: ties count 1/2).
  one_vs_rest_auc(labels, probs)  per-class AUC of "class k vs the rest"; `macro_auc`
                                  is their unweighted mean (sklearn's multi_class='ovr',
                                  average='macro').
  tpr_at_fpr(y, score, fpr)       the best true-positive rate among thresholds whose
                                  false-positive rate is <= `fpr` (the usual lens-finding
                                  figure: "what fraction of lenses do we keep if we accept
                                  1% / 0.1% contamination").
  accuracy, confusion_matrix      rows = true class, columns = predicted class.
Regression: mae, rmse, r2 (sklearn's r2_score: 1 - SS_res / SS_tot).
Images (jax.numpy, so they run inside jit on device and on numpy inputs alike):
  psnr(pred, target, data_range)  10 log10(data_range^2 / MSE), per image.
  ssim(pred, target, data_range)  Wang et al. (2004): 11x11 Gaussian window, sigma 1.5,
                                  K1 = 0.01, K2 = 0.03, statistics over windows that lie
                                  inside the image, mean over the SSIM map and channels.
                                  Equal to skimage.metrics.structural_similarity with
                                  gaussian_weights=True, use_sample_covariance=False.
  bicubic_upsample(images, scale) the baseline every super-resolution number is reported
                                  next to (jax.image.resize, half-pixel centres, Keys
                                  a = -0.5), consistent with block-averaged downsampling.
Embeddings:
  embedding_std(features)         the collapse indicator: the standard deviation over the
                                  batch of the L2-normalised embeddings, averaged over
                                  dimensions; ~1/sqrt(D) for embeddings spread over the
                                  sphere, 0 for a collapsed encoder (Chen & He 2021).
  knn_predict(train_feats, train_labels, test_feats, k, temperature, num_classes)
                                  class probabilities [M, C]: cosine-similarity-weighted
                                  votes of the k nearest training embeddings, each weighted
                                  exp(sim / temperature) (Wu et al. 2018, as DINO evaluates).
"""
import jax
import jax.numpy as jnp
import numpy as np

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * 1.5 + 0.5): skimage's truncate=3.5, an 11x11 window.
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# -- classification ------------------------------------------------------------------


def _binary_inputs(y, score):
  y = np.asarray(y).reshape(-1)
  score = np.asarray(score, np.float64).reshape(-1)
  if y.shape != score.shape:
    raise ValueError(f"labels {y.shape} and scores {score.shape} differ in length.")
  if not np.all(np.isfinite(score)):
    raise ValueError("Scores contain NaN or infinite values.")
  return y.astype(bool), score


def roc_curve(y, score):
  """(fpr, tpr, thresholds) over every distinct score, highest first.

  The first point is (0, 0) at threshold +inf, as in scikit-learn. Raises a ValueError
  when only one class is present (the curve is undefined).
  """
  y, score = _binary_inputs(y, score)
  num_pos, num_neg = int(y.sum()), int((~y).sum())
  if num_pos == 0 or num_neg == 0:
    raise ValueError(f"ROC needs both classes; got {num_pos} positives and {num_neg} "
                     "negatives.")
  order = np.argsort(-score, kind="mergesort")
  score, y = score[order], y[order]
  # The last index of each run of equal scores: ties move the curve diagonally.
  last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
  tps = np.cumsum(y)[last]
  fps = (last + 1) - tps
  fpr = np.r_[0., fps / num_neg]
  tpr = np.r_[0., tps / num_pos]
  return fpr, tpr, np.r_[np.inf, score[last]]


def roc_auc(y, score) -> float:
  fpr, tpr, _ = roc_curve(y, score)
  return float(np.trapezoid(tpr, fpr))


def one_vs_rest_auc(labels, probs) -> list[float]:
  """AUC of each class k (score probs[:, k]) against all others; NaN if k is absent."""
  labels = np.asarray(labels).reshape(-1)
  probs = np.asarray(probs)
  out = []
  for k in range(probs.shape[1]):
    positive = labels == k
    out.append(roc_auc(positive, probs[:, k]) if 0 < positive.sum() < len(labels)
               else float("nan"))
  return out


def macro_auc(labels, probs) -> float:
  """Unweighted mean of the one-vs-rest AUCs of the classes present."""
  aucs = [a for a in one_vs_rest_auc(labels, probs) if np.isfinite(a)]
  return float(np.mean(aucs)) if aucs else float("nan")


def tpr_at_fpr(y, score, max_fpr: float) -> float:
  """Highest TPR at a threshold whose FPR is <= max_fpr (0 if none but the origin)."""
  fpr, tpr, _ = roc_curve(y, score)
  return float(tpr[fpr <= max_fpr].max())


def accuracy(labels, predictions) -> float:
  labels, predictions = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
  return float(np.mean(labels == predictions)) if len(labels) else float("nan")


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
  """[num_classes, num_classes] int64 counts; row = true class, column = predicted."""
  labels = np.asarray(labels, np.int64).reshape(-1)
  predictions = np.asarray(predictions, np.int64).reshape(-1)
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise ValueError(f"Labels {sorted(set(labels[bad].tolist()))[:5]} are outside "
                     f"[0, {num_classes}).")
  return np.bincount(labels * num_classes + predictions,
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)


# -- regression ----------------------------------------------------------------------


def _pair(pred, true):
  pred = np.asarray(pred, np.float64).reshape(-1)
  true = np.asarray(true, np.float64).reshape(-1)
  if pred.shape != true.shape:
    raise ValueError(f"predictions {pred.shape} and targets {true.shape} differ in length.")
  return pred, true


def mae(pred, true) -> float:
  pred, true = _pair(pred, true)
  return float(np.mean(np.abs(pred - true))) if len(true) else float("nan")


def rmse(pred, true) -> float:
  pred, true = _pair(pred, true)
  return float(np.sqrt(np.mean((pred - true)**2))) if len(true) else float("nan")


def r2(pred, true) -> float:
  """1 - SS_res / SS_tot; NaN for constant targets (undefined, as sklearn warns)."""
  pred, true = _pair(pred, true)
  total = np.sum((true - true.mean())**2) if len(true) else 0.
  if total == 0:
    return float("nan")
  return float(1. - np.sum((true - pred)**2) / total)


# -- images --------------------------------------------------------------------------


def mse_per_image(pred, target):
  """[B, H, W, C] -> [B]."""
  diff = jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32)
  return jnp.mean(jnp.square(diff), axis=(1, 2, 3))


def psnr(pred, target, data_range=1.):
  """Per-image PSNR in dB of [B, H, W, C] images; `data_range` scalar or [B]."""
  data_range = jnp.asarray(data_range, jnp.float32)
  mse = jnp.maximum(mse_per_image(pred, target), 1e-20)  # Identical images: finite, large.
  return 10. * jnp.log10(jnp.square(data_range) / mse)


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
  offsets = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (offsets / sigma)**2)
  return (taps / taps.sum()).astype(np.float32)


def _filter_valid(images, taps):
  """Separable 'valid' filtering of [B, H, W, C] along H and W."""
  n = len(taps)
  h, w = images.shape[1] - n + 1, images.shape[2] - n + 1
  rows = sum(taps[i] * images[:, i:i + h] for i in range(n))
  return sum(taps[i] * rows[:, :, i:i + w] for i in range(n))


def ssim(pred, target, data_range=1., *, sigma: float = SSIM_SIGMA,
         radius: int = SSIM_RADIUS, k1: float = SSIM_K1, k2: float = SSIM_K2):
  """Per-image mean SSIM of [B, H, W, C] images (see the module docstring)."""
  pred = jnp.asarray(pred, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  if pred.shape != target.shape or pred.ndim != 4:
    raise ValueError(f"ssim needs two [B, H, W, C] arrays of one shape; got {pred.shape} "
                     f"and {target.shape}.")
  if min(pred.shape[1:3]) < 2 * radius + 1:
    raise ValueError(f"ssim's {2 * radius + 1}x{2 * radius + 1} window does not fit images "
                     f"of {pred.shape[1]}x{pred.shape[2]} pixels.")
  taps = gaussian_window(sigma, radius)
  data_range = jnp.asarray(data_range, jnp.float32).reshape(-1, 1, 1, 1)
  c1, c2 = (k1 * data_range)**2, (k2 * data_range)**2
  mu_x, mu_y = _filter_valid(pred, taps), _filter_valid(target, taps)
  var_x = _filter_valid(pred * pred, taps) - mu_x**2
  var_y = _filter_valid(target * target, taps) - mu_y**2
  cov = _filter_valid(pred * target, taps) - mu_x * mu_y
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
              / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))
  return jnp.mean(ssim_map, axis=(1, 2, 3))


def bicubic_upsample(images, scale: int):
  """[B, h, w, C] -> [B, h*scale, w*scale, C] bicubic (float32)."""
  b, h, w, c = images.shape
  return jax.image.resize(jnp.asarray(images, jnp.float32), (b, h * scale, w * scale, c),
                          method="bicubic")


def block_average(images, factor: int):
  """[B, H, W, C] -> [B, H/f, W/f, C]: the mean over f x f pixel blocks, i.e. what a
  detector with f times larger pixels integrates (flux per pixel up to a constant)."""
  b, h, w, c = images.shape
  if h % factor or w % factor:
    raise ValueError(f"Image size {h}x{w} is not divisible by the downsampling factor "
                     f"{factor}.")
  return images.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def precision_recall_curve(y, score):
  """(precision, recall, thresholds) at every distinct score, highest first (purity and
  completeness, in a lens search's words)."""
  y, score = _binary_inputs(y, score)
  num_pos = int(y.sum())
  if num_pos == 0:
    raise ValueError("A precision-recall curve needs positives; got none.")
  order = np.argsort(-score, kind="mergesort")
  score, y = score[order], y[order]
  last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
  tps = np.cumsum(y)[last]
  return tps / (last + 1), tps / num_pos, score[last]


def average_precision(y, score) -> float:
  """The area under the precision-recall curve as a step sum, sum_n (R_n - R_{n-1}) P_n
  (scikit-learn's average_precision_score): the figure imbalanced searches report."""
  precision, recall, _ = precision_recall_curve(y, score)
  return float(np.sum(np.diff(np.r_[0., recall]) * precision))


def purity_at_completeness(y, score, completeness: float) -> float:
  """Highest precision (purity) at a threshold whose recall (completeness) is at least
  `completeness`."""
  precision, recall, _ = precision_recall_curve(y, score)
  return float(precision[recall >= completeness].max())


def summarize_binary(y, score, fprs=(1e-2, 1e-3), completenesses=(0.5, 0.9)
                     ) -> dict[str, float]:
  """Lens finding: ROC AUC and TPR at the given FPRs, beside precision-recall AUC and
  purity at the given completenesses (what imbalanced searches quote)."""
  out = {"auc": roc_auc(y, score), "pr_auc": average_precision(y, score)}
  for f in fprs:
    out[f"tpr_at_fpr_{f:g}"] = tpr_at_fpr(y, score, f)
  for c in completenesses:
    out[f"purity_at_completeness_{c:g}"] = purity_at_completeness(y, score, c)
  return out


# -- embeddings ----------------------------------------------------------------------


def embedding_std(features: jax.Array) -> jax.Array:
  """Std over the batch of L2-normalised embeddings, averaged over dimensions."""
  features = jnp.asarray(features, jnp.float32)
  unit = features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
  return jnp.mean(jnp.std(unit, axis=0))


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_feats, train_labels, test_feats, *, k: int = 20,
                temperature: float = 0.07, num_classes: int,
                chunk_size: int = 1024) -> np.ndarray:
  """Class probabilities [M, C] from the k most cosine-similar training embeddings."""
  train_labels = np.asarray(train_labels, np.int64)
  if len(train_labels) != len(train_feats):
    raise ValueError(f"knn_predict: {len(train_feats)} training features but "
                     f"{len(train_labels)} labels.")
  if k < 1 or temperature <= 0:
    raise ValueError(f"knn_predict: k={k} must be >= 1 and temperature={temperature} > 0.")
  if train_labels.size and (train_labels.min() < 0 or train_labels.max() >= num_classes):
    raise ValueError(f"knn_predict: labels span [{train_labels.min()}, {train_labels.max()}] "
                     f"but num_classes={num_classes}.")
  train, test = _unit(train_feats), _unit(test_feats)
  k = min(k, len(train))
  probs = np.zeros((len(test), num_classes), np.float64)
  for start in range(0, len(test), chunk_size):
    sims = test[start:start + chunk_size] @ train.T
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(sims, nearest, axis=1).astype(np.float64) / temperature)
    rows = np.repeat(np.arange(len(sims)), k)
    votes = np.zeros((len(sims), num_classes), np.float64)
    np.add.at(votes, (rows, train_labels[nearest].reshape(-1)), weights.reshape(-1))
    probs[start:start + len(sims)] = votes / votes.sum(axis=1, keepdims=True)
  return probs
