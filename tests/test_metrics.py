"""Metrics against independent computations (scikit-learn) and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    jaccard_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from imlscan.eval import metrics as M


def _cases(rng, n=6):
    """Random maps, some with many ties (rounded), some continuous float32."""
    for k in range(n):
        shape = (int(rng.integers(5, 40)), int(rng.integers(5, 40)))
        prob = rng.random(shape).astype(np.float32)
        if k % 2 == 0:
            prob = np.round(prob, 1).astype(np.float32)  # heavy ties, including exactly 0.5
        mask = rng.random(shape) < rng.uniform(0.1, 0.6)
        mask.flat[0], mask.flat[1] = True, False  # both classes present
        yield prob, mask


def test_threshold_metrics_match_sklearn(rng):
    for prob, mask in _cases(rng):
        y, pred = mask.ravel(), prob.ravel() > 0.5
        assert M.pixel_f1(prob, mask) == pytest.approx(f1_score(y, pred, zero_division=0))
        assert M.pixel_iou(prob, mask) == pytest.approx(jaccard_score(y, pred, zero_division=0))
        p, r = M.pixel_precision_recall(prob, mask)
        assert p == pytest.approx(precision_score(y, pred, zero_division=0))
        assert r == pytest.approx(recall_score(y, pred, zero_division=0))
        for t in (0.0, 0.3, 0.75):
            assert M.pixel_f1(prob, mask, t) == pytest.approx(f1_score(y, prob.ravel() > t, zero_division=0))


def test_auc_matches_sklearn_with_ties(rng):
    for prob, mask in _cases(rng):
        assert M.pixel_auc(prob, mask) == pytest.approx(roc_auc_score(mask.ravel(), prob.ravel()), abs=1e-12)


def test_auc_hand_made_tie_counts_half():
    # pos 0.4 ties neg 0.4 (half), beats 0.1; pos 0.8 beats both: (1 + 0.5 + 1 + 1) / 4
    assert M.pixel_auc(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0, 0, 1, 1], bool)) == 0.875
    assert M.pixel_auc(np.array([0.9, 0.1]), np.array([0, 1], bool)) == 0.0


def test_strict_threshold_at_exactly_half():
    prob = np.array([0.5, 0.5, np.nextafter(np.float32(0.5), np.float32(1)), 0.2], np.float32)
    mask = np.array([1, 1, 1, 0], bool)
    c = M.confusion(prob, mask, 0.5)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 0, 2, 1)
    assert M.pixel_f1(prob, mask) == pytest.approx(2 / (2 + 2))


def test_degenerate_masks_and_predictions():
    prob = np.array([[0.2, 0.7], [0.9, 0.1]], np.float32)
    zeros, ones = np.zeros((2, 2), bool), np.ones((2, 2), bool)
    assert math.isnan(M.pixel_auc(prob, zeros)) and math.isnan(M.pixel_auc(prob, ones))
    assert M.pixel_f1(prob, zeros) == 0.0 and M.pixel_iou(prob, zeros) == 0.0
    assert M.best_f1(prob, zeros)[0] == 0.0 and math.isnan(M.best_f1(prob, zeros)[1])
    assert M.pixel_f1(prob, ones) == pytest.approx(f1_score(ones.ravel(), prob.ravel() > 0.5))
    assert M.best_f1(prob, ones)[0] == 1.0  # a threshold below every score flags all pixels
    mask = np.array([[1, 0], [0, 0]], bool)
    none = np.zeros((2, 2), np.float32)
    assert M.pixel_f1(none, mask) == 0.0 and M.pixel_precision_recall(none, mask) == (0.0, 0.0)
    assert M.pixel_auc(none, mask) == 0.5  # every score tied
    assert M.pixel_f1(none, np.zeros((2, 2), bool)) == 0.0  # 0/0 -> 0, as scikit-learn


def test_best_f1_matches_precision_recall_curve_and_threshold_reproduces_it(rng):
    for prob, mask in _cases(rng):
        f1, t = M.best_f1(prob, mask)
        pr, rc, _ = precision_recall_curve(mask.ravel(), prob.ravel())
        ref = np.max(np.divide(2 * pr * rc, pr + rc, out=np.zeros_like(pr), where=(pr + rc) > 0))
        assert f1 == pytest.approx(ref, abs=1e-12)
        assert M.pixel_f1(prob, mask, t) == pytest.approx(f1, abs=1e-12)


def test_large_maps_use_16bit_quantization_close_to_exact(rng):
    prob = rng.random((60, 70)).astype(np.float32)
    mask = rng.random((60, 70)) < 0.3
    exact = M.score_curve(prob, mask)
    quant = M.score_curve(prob, mask, exact_max_pixels=100)
    assert M.curve_auc(quant) == pytest.approx(M.curve_auc(exact), abs=1e-4)
    assert M.curve_best_f1(quant)[0] == pytest.approx(M.curve_best_f1(exact)[0], abs=1e-3)
    on_grid = (np.round(prob * 65535) / 65535).astype(np.float64)  # already 16-bit: no loss at all
    assert M.curve_auc(M.score_curve(on_grid, mask, exact_max_pixels=100)) == pytest.approx(
        roc_auc_score(mask.ravel(), on_grid.ravel()), abs=1e-12
    )


def test_histogram_bins_keep_the_strict_rule(rng):
    half = np.float32(0.5)
    bins = M.hist_bins(np.array([0.0, 1e-9, half, np.nextafter(half, np.float32(1)), 1.0], np.float32))
    assert bins.tolist() == [0, 0, 4999, 5000, 9999]
    prob = rng.random((30, 30)).astype(np.float32)
    mask = rng.random((30, 30)) < 0.4
    grid_f1 = M.f1_on_grid(*M.histograms(prob, mask))
    thresholds = M.grid_thresholds()
    for k in (1, 2500, 4999, 7000, 9998):
        assert grid_f1[k - 1] == pytest.approx(M.pixel_f1(prob, mask, thresholds[k - 1]))


def test_per_image_vs_pooled_hand_made():
    # A: perfect (F1 1); B: 1 manipulated pixel of 8, everything flagged (F1 2/9).
    a_prob, a_mask = np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 1, 0, 0], bool)
    b_prob, b_mask = np.full(8, 0.9), np.zeros(8, bool)
    b_mask[0] = True
    acc = M.MetricAccumulator()
    acc.update(a_prob, a_mask)
    acc.update(b_prob, b_mask)
    out = acc.compute()
    assert out["pixel_f1"] == pytest.approx((1 + 2 / 9) / 2)  # per image, averaged
    assert out["pooled_pixel_f1"] == pytest.approx(6 / 13)  # tp 3, fp 7, fn 0 over all pixels
    assert out["pooled_pixel_f1"] == pytest.approx(
        f1_score(np.r_[a_mask, b_mask], np.r_[a_prob, b_prob] > 0.5), abs=1e-12
    )
    # An authentic image changes the pooled numbers only.
    acc.update(np.array([0.9, 0.1]), np.zeros(2, bool))
    out2 = acc.compute()
    assert out2["pixel_f1"] == out["pixel_f1"] and out2["pooled_pixel_f1"] == pytest.approx(6 / 14)
    assert acc.n_manipulated == 2 and len(acc.rows) == 3 and acc.rows[2]["pixel_fpr"] == 0.5


def test_accumulator_means_match_per_image_functions_and_keep_no_pixels(rng):
    acc = M.MetricAccumulator(threshold=0.4)
    cases = list(_cases(rng))
    for prob, mask in cases:
        row = acc.update(prob, mask, name="x")
        assert all(np.isscalar(v) or v is None for v in row.values())
    out = acc.compute()
    assert out["pixel_f1"] == pytest.approx(np.mean([M.pixel_f1(p, m, 0.4) for p, m in cases]))
    assert out["pixel_auc"] == pytest.approx(np.mean([M.pixel_auc(p, m) for p, m in cases]))
    assert out["pixel_f1_best"] == pytest.approx(np.mean([M.best_f1(p, m)[0] for p, m in cases]))
    # The per-dataset threshold is the grid threshold with the best mean F1, and never beats per-image best.
    f1d, td = acc.dataset_best_threshold()
    assert f1d == pytest.approx(np.mean([M.pixel_f1(p, m, td) for p, m in cases]))
    for t in (0.1, 0.25, 0.5, 0.65, 0.9):
        assert f1d >= np.mean([M.pixel_f1(p, m, t) for p, m in cases]) - 1e-12
    assert f1d <= out["pixel_f1_best"] + 1e-12


def test_pooled_auc_from_histograms_is_exact_for_scores_inside_bins(rng):
    k = rng.integers(0, M.HIST_BINS, (2, 50, 50))
    probs = (k + 0.5) / M.HIST_BINS  # one distinct score per bin: the histogram loses nothing
    masks = rng.random((2, 50, 50)) < 0.3
    acc = M.MetricAccumulator()
    for p, m in zip(probs, masks):
        acc.update(p, m)
    ref = roc_auc_score(masks.ravel(), probs.ravel())
    assert acc.compute()["pooled_pixel_auc"] == pytest.approx(ref, abs=1e-12)


def test_bootstrap_ci_contains_estimate_and_is_deterministic(rng):
    values = rng.random(40)
    lo, hi = M.mean_ci(values, seed=7)
    assert lo <= values.mean() <= hi and lo < hi
    assert M.mean_ci(values, seed=7) == (lo, hi)
    assert M.mean_ci(values, seed=8) != (lo, hi)
    assert all(math.isnan(x) for x in M.mean_ci([]))
    assert M.mean_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))


def test_image_level_metrics_match_sklearn(rng):
    scores = np.round(rng.random(30), 1)
    labels = rng.random(30) < 0.5
    labels[:2] = [True, False]
    m = M.image_level_metrics(scores, labels, 0.5)
    pred = scores > 0.5
    assert m["image_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["image_acc"] == pytest.approx(accuracy_score(labels, pred))
    assert m["image_balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert m["image_f1"] == pytest.approx(f1_score(labels, pred))
    assert m["image_fpr"] == pytest.approx((pred & ~labels).sum() / (~labels).sum())
    assert M.image_level_metrics(scores, np.ones(30, bool)) == {}


def test_flag_everything_baseline_matches_sklearn_and_is_reported():
    from sklearn.metrics import f1_score

    from imlscan.eval.metrics import MetricAccumulator, flag_all_f1

    rng = np.random.default_rng(3)
    masks = [rng.random((20, 30)) < a for a in (0.05, 0.5)]
    for m in masks:
        assert abs(flag_all_f1(m) - f1_score(m.ravel(), np.ones(m.size, bool))) < 1e-12
    acc = MetricAccumulator()
    for m in masks:
        acc.update(rng.random(m.shape), m)
    acc.update(rng.random((20, 30)), np.zeros((20, 30), bool))  # authentic: not averaged
    out = acc.compute()
    assert abs(out["pixel_f1_flag_all_baseline"] - np.mean([flag_all_f1(m) for m in masks])) < 1e-12
    pooled = np.concatenate([m.ravel() for m in masks] + [np.zeros(600, bool)])
    assert abs(out["pooled_pixel_f1_flag_all_baseline"] - f1_score(pooled, np.ones(pooled.size, bool))) < 1e-12
