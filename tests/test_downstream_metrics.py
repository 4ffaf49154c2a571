"""Downstream metrics agree with scikit-learn / skimage and with cases worked by hand."""
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm
from skimage import metrics as skimage_metrics

from lensfm.objectives import metrics
from lensfm.objectives import reports


def test_auc_hand_computed_with_tie():
  # Pairs (positive, negative) ordered correctly: (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4);
  # wrong: (0.35 < 0.4). AUC = 3/4. With a tie between a positive and a negative it
  # counts one half.
  assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
  assert metrics.roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
  fpr, tpr, thr = metrics.roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
  np.testing.assert_allclose(fpr, [0, 0, .5, .5, 1])
  np.testing.assert_allclose(tpr, [0, .5, .5, 1, 1])
  assert thr[0] == np.inf
  # TPR at FPR <= 0: only the first positive (0.8) is above every negative.
  assert metrics.tpr_at_fpr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.0) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="both classes"):
    metrics.roc_auc([1, 1], [0.2, 0.3])


def test_roc_and_auc_match_sklearn_with_ties():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 500)
  score = np.round(rng.random(500) + 0.3 * y, 2)  # Rounded: many ties.
  fpr, tpr, thr = metrics.roc_curve(y, score)
  s_fpr, s_tpr, s_thr = skm.roc_curve(y, score, drop_intermediate=False)
  np.testing.assert_allclose(fpr, s_fpr)
  np.testing.assert_allclose(tpr, s_tpr)
  np.testing.assert_allclose(thr[1:], s_thr[1:])
  assert metrics.roc_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
  for f in (0.01, 0.1, 0.3):
    expected = s_tpr[s_fpr <= f].max()
    assert metrics.tpr_at_fpr(y, score, f) == pytest.approx(expected)


def test_one_vs_rest_macro_auc_confusion_and_accuracy_match_sklearn():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 300)
  logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[labels]
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  per_class = metrics.one_vs_rest_auc(labels, probs)
  np.testing.assert_allclose(per_class, skm.roc_auc_score(labels, probs, multi_class="ovr",
                                                          average=None))
  assert metrics.macro_auc(labels, probs) == pytest.approx(
      skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
  pred = probs.argmax(1)
  np.testing.assert_array_equal(metrics.confusion_matrix(labels, pred, 3),
                                skm.confusion_matrix(labels, pred, labels=[0, 1, 2]))
  assert metrics.accuracy(labels, pred) == pytest.approx(skm.accuracy_score(labels, pred))
  with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
    metrics.confusion_matrix([0, 3], [0, 0], 3)

  result, details = reports.classification({"probs": probs, "label": labels},
                                           ("no_sub", "cdm", "axion"))
  assert result["auc_cdm"] == pytest.approx(per_class[1])
  assert result["auc_macro"] == pytest.approx(np.mean(per_class))
  assert details["confusion_matrix"].sum() == 300 and "tpr_at_fpr_0.01" not in result


def test_binary_report_has_lens_finding_metrics():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, 2000)
  p1 = 1 / (1 + np.exp(-(rng.normal(size=2000) + 3 * labels)))
  result, _ = reports.classification({"probs": np.stack([1 - p1, p1], 1), "label": labels},
                                     ("non_lensed", "lensed"))
  assert result["auc"] == pytest.approx(skm.roc_auc_score(labels, p1))
  fpr, tpr, _ = skm.roc_curve(labels, p1)
  assert result["tpr_at_fpr_0.01"] == pytest.approx(tpr[fpr <= 0.01].max())
  assert 0 <= result["tpr_at_fpr_0.001"] <= result["tpr_at_fpr_0.01"] <= 1


def test_regression_metrics_match_sklearn():
  rng = np.random.default_rng(3)
  true = rng.normal(size=200)
  pred = true + 0.1 * rng.normal(size=200)
  assert metrics.mae(pred, true) == pytest.approx(skm.mean_absolute_error(true, pred))
  assert metrics.rmse(pred, true) == pytest.approx(np.sqrt(skm.mean_squared_error(true, pred)))
  assert metrics.r2(pred, true) == pytest.approx(skm.r2_score(true, pred))
  assert metrics.mae([1., 3.], [2., 2.]) == 1. and metrics.rmse([0., 4.], [0., 0.]) == pytest.approx(
      np.sqrt(8.))
  assert np.isnan(metrics.r2([1., 2.], [3., 3.]))  # Constant targets: undefined.


def test_psnr_and_ssim_hand_computed():
  target = jnp.zeros((1, 16, 16, 1))
  # MSE 0.01 at range 1 -> 20 dB; at range 2 -> 20 + 20 log10(2) dB.
  assert float(metrics.psnr(target + 0.1, target)[0]) == pytest.approx(20., rel=1e-5)
  assert float(metrics.psnr(target + 0.1, target, 2.)[0]) == pytest.approx(
      20. + 20 * np.log10(2.), rel=1e-5)
  # Constant images a and b: means a, b, no variance, so
  # SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * range)^2.
  a, b, c1 = 0.5, 0.25, 0.01**2
  ssim = float(metrics.ssim(jnp.full((1, 16, 16, 1), a), jnp.full((1, 16, 16, 1), b))[0])
  assert ssim == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
  x = jnp.asarray(np.random.default_rng(0).random((1, 16, 16, 1)), jnp.float32)
  assert float(metrics.ssim(x, x)[0]) == pytest.approx(1., abs=1e-6)
  with pytest.raises(ValueError, match="11x11 window does not fit"):
    metrics.ssim(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 8, 8, 1)))


def test_psnr_and_ssim_match_skimage():
  rng = np.random.default_rng(4)
  hr = rng.random((3, 32, 32, 2)).astype(np.float32)
  sr = np.clip(hr + 0.05 * rng.normal(size=hr.shape), 0, 1).astype(np.float32)
  ours_ssim = np.asarray(metrics.ssim(sr, hr, 1.))
  ours_psnr = np.asarray(metrics.psnr(sr, hr, 1.))
  for i in range(3):
    ref = skimage_metrics.structural_similarity(
        sr[i], hr[i], data_range=1., channel_axis=-1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False)
    assert ours_ssim[i] == pytest.approx(ref, abs=2e-5)
    assert ours_psnr[i] == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(hr[i], sr[i], data_range=1.), abs=1e-3)


def test_block_average_and_bicubic():
  x = jnp.arange(16.).reshape(1, 4, 4, 1)
  np.testing.assert_allclose(metrics.block_average(x, 2)[0, ..., 0],
                             [[2.5, 4.5], [10.5, 12.5]])
  with pytest.raises(ValueError, match="not divisible by the downsampling factor 3"):
    metrics.block_average(x, 3)
  const = jnp.full((2, 8, 8, 1), 0.3)
  np.testing.assert_allclose(metrics.bicubic_upsample(const, 4), 0.3, atol=1e-6)
  # Cubic convolution reproduces linear ramps away from the border, and block averages
  # of a ramp sit at the block centres: bicubic(block_average(ramp)) = ramp inside.
  ramp = jnp.tile(jnp.arange(32.)[None, :, None, None], (1, 1, 32, 1)) / 32
  up = metrics.bicubic_upsample(metrics.block_average(ramp, 2), 2)
  np.testing.assert_allclose(up[0, 4:-4, 4:-4], ramp[0, 4:-4, 4:-4], atol=1e-5)


def test_precision_recall_metrics_match_scikit_learn():
  rng = np.random.default_rng(3)
  y = rng.random(500) < 0.05  # A rare positive class, as in lens searches.
  score = np.round(rng.random(500) + 0.8 * y, 2)  # Ties included.
  assert metrics.average_precision(y, score) == pytest.approx(
      skm.average_precision_score(y, score), abs=1e-12)
  precision, recall, _ = skm.precision_recall_curve(y, score)
  for c in (0.5, 0.9):
    assert metrics.purity_at_completeness(y, score, c) == pytest.approx(
        precision[recall >= c].max())
  summary = metrics.summarize_binary(y, score)
  assert {"pr_auc", "purity_at_completeness_0.5", "purity_at_completeness_0.9"} <= set(summary)
