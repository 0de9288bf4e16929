"""Pixel- and image-level metrics of manipulation localization, in plain numpy.

The field's numbers are easy to get subtly wrong, so every convention lives here, once:

- a pixel is predicted manipulated when ``prob > threshold`` (STRICT; 0.5 by default);
- F1, IoU, precision and recall use the zero-division value 0.0 (as scikit-learn does);
- AUC is the exact ROC AUC with tied scores counted as half (scikit-learn's ``roc_auc_score``);
  it is ``nan`` when the mask is all 0 or all 1 (the ROC curve is undefined there);
- dataset numbers average per-image values over the manipulated images (the field's
  convention); "pooled" numbers count all pixels of the dataset together and are labelled so;
- pooled AUC and the one-best-threshold-per-dataset search use fixed-bin histograms
  (``HIST_BINS`` bins), so a dataset of any size needs bounded memory.

Per-image AUC and best F1 are exact (one sort) up to ``EXACT_MAX_PIXELS`` pixels; larger maps
are first quantized to 16 bits (65,536 levels, the same as saved prediction PNGs), which makes
the computation O(pixels) and differs from the exact value only between levels closer than
1/65535.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from imlscan.defaults import DEFAULT_THRESHOLD

HIST_BINS = 10_000
EXACT_MAX_PIXELS = 1 << 20
QUANT_LEVELS = 65_536


def _as_arrays(prob: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prob = np.asarray(prob)
    mask = np.asarray(mask)
    if prob.shape != mask.shape:
        raise ValueError(f"prediction shape {prob.shape} != mask shape {mask.shape}")
    return prob.ravel(), mask.ravel().astype(bool, copy=False)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Confusion counts at a fixed threshold


@dataclass
class Counts:
    """Pixel confusion counts at one threshold; they add up across images (pooled metrics)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def fpr(self) -> float:
        return _ratio(self.fp, self.fp + self.tn)


def confusion(prob: np.ndarray, mask: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Counts:
    """Confusion counts with the strict rule ``prob > threshold``."""
    p, m = _as_arrays(prob, mask)
    pred = p > threshold
    tp = int(np.count_nonzero(pred & m))
    fp = int(np.count_nonzero(pred)) - tp
    pos = int(np.count_nonzero(m))
    fn = pos - tp
    return Counts(tp, fp, fn, p.size - tp - fp - fn)


def pixel_f1(prob: np.ndarray, mask: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> float:
    """F1 of the pixels ``prob > threshold`` against the mask (0.0 when both are empty)."""
    return confusion(prob, mask, threshold).f1


def pixel_iou(prob: np.ndarray, mask: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Intersection over union (Jaccard) of ``prob > threshold`` and the mask (0.0 when both are empty)."""
    return confusion(prob, mask, threshold).iou


def pixel_precision_recall(
    prob: np.ndarray, mask: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> tuple[float, float]:
    """(precision, recall) of ``prob > threshold``; each is 0.0 where its denominator is 0."""
    c = confusion(prob, mask, threshold)
    return c.precision, c.recall


# ---------------------------------------------------------------------------------------------
# Threshold-free metrics: one sorted curve serves AUC and best F1


@dataclass
class Curve:
    """Cumulative counts when the threshold sweeps down through the distinct scores.

    ``scores[i]`` is the i-th largest distinct score; ``tp[i]``/``fp[i]`` count the pixels with a
    score >= ``scores[i]``; ``pos``/``neg`` are the totals.
    """

    scores: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    pos: int
    neg: int


def _curve_from_level_counts(levels: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> Curve:
    """Curve from per-level counts sorted by ascending level (empty levels allowed)."""
    keep = (pos + neg) > 0
    levels, pos, neg = levels[keep][::-1], pos[keep][::-1], neg[keep][::-1]
    tp = np.cumsum(pos, dtype=np.int64)
    fp = np.cumsum(neg, dtype=np.int64)
    return Curve(levels, tp, fp, int(tp[-1]) if tp.size else 0, int(fp[-1]) if fp.size else 0)


def score_curve(prob: np.ndarray, mask: np.ndarray, *, exact_max_pixels: int = EXACT_MAX_PIXELS) -> Curve:
    """The descending-threshold curve of one map: exact (a sort) for maps up to
    ``exact_max_pixels`` pixels, on the 16-bit quantized map beyond (O(pixels), no sort)."""
    p, m = _as_arrays(prob, mask)
    if p.size > exact_max_pixels:
        q = np.rint(np.clip(p, 0.0, 1.0) * (QUANT_LEVELS - 1)).astype(np.int64)
        pos = np.bincount(q[m], minlength=QUANT_LEVELS)
        neg = np.bincount(q, minlength=QUANT_LEVELS) - pos
        levels = np.arange(QUANT_LEVELS, dtype=np.float64) / (QUANT_LEVELS - 1)
        return _curve_from_level_counts(levels, pos, neg)
    if p.size == 0:
        return Curve(np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), 0, 0)
    levels, pos, cnt = _sorted_levels(p, m)
    return _curve_from_level_counts(levels, pos, cnt - pos)


def _sorted_levels(p: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (ascending), manipulated count and total count at each.

    For non-negative scores, the float64 bit pattern is monotonic and leaves the top bit free, so
    score and label pack into one uint64 key whose plain sort is several times faster than an
    argsort; other inputs (negative or nan) take the argsort path.
    """
    p64 = np.asarray(p, dtype=np.float64) + 0.0  # -0.0 -> +0.0
    if bool(np.all(p64 >= 0)):
        key = (p64.view(np.uint64) << np.uint64(1)) | m.astype(np.uint64)
        key.sort()
        bits = key >> np.uint64(1)
        labels = (key & np.uint64(1)).astype(np.int64)
        starts = np.flatnonzero(np.r_[True, bits[1:] != bits[:-1]])
        levels = bits[starts].view(np.float64)
    else:
        order = np.argsort(p64, kind="stable")
        ps = p64[order]
        labels = m[order].astype(np.int64)
        starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
        levels = ps[starts]
    pos = np.add.reduceat(labels, starts)
    cnt = np.diff(np.r_[starts, p64.size])
    return levels, pos, cnt


def curve_auc(curve: Curve) -> float:
    """Trapezoidal area under the ROC curve (ties collapse into one diagonal step)."""
    if curve.pos == 0 or curve.neg == 0:
        return math.nan
    tpr = np.r_[0.0, curve.tp / curve.pos]
    fpr = np.r_[0.0, curve.fp / curve.neg]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def curve_best_f1(curve: Curve) -> tuple[float, float]:
    """Best F1 over all thresholds of the curve and a threshold that reaches it.

    The threshold is returned for the strict rule ``prob > t``: the midpoint between the chosen
    distinct score and the next lower one (below the lowest score: that score minus 1e-6). With
    no manipulated pixel F1 is 0 everywhere: ``(0.0, nan)``.
    """
    if curve.pos == 0 or curve.scores.size == 0:
        return 0.0, math.nan
    f1 = 2 * curve.tp / (2 * curve.tp + curve.fp + (curve.pos - curve.tp))
    i = int(np.argmax(f1))
    s = float(curve.scores[i])
    nxt = float(curve.scores[i + 1]) if i + 1 < curve.scores.size else s - 1e-6
    return float(f1[i]), (s + nxt) / 2.0


def pixel_auc(prob: np.ndarray, mask: np.ndarray) -> float:
    """Exact ROC AUC of the map against the mask (ties count half, as in scikit-learn);
    ``nan`` when the mask is all 0 or all 1."""
    return curve_auc(score_curve(prob, mask, exact_max_pixels=np.iinfo(np.int64).max))


def best_f1(prob: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(F1 at the best threshold, that threshold for ``prob > t``), exact over all thresholds."""
    return curve_best_f1(score_curve(prob, mask, exact_max_pixels=np.iinfo(np.int64).max))


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Exact ROC AUC of any scores against binary labels (used for image-level AUC)."""
    return pixel_auc(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool))


# ---------------------------------------------------------------------------------------------
# Fixed-bin histograms: bounded memory for pooled metrics and a per-dataset best threshold


def hist_bins(prob: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Bin index of each score: bin k holds ``(k/bins, (k+1)/bins]`` (bin 0 also holds 0), so
    ``prob > k/bins`` is exactly ``bin >= k``: the grid thresholds keep the strict rule."""
    p = np.clip(np.asarray(prob, dtype=np.float64).ravel(), 0.0, 1.0)
    return np.clip(np.ceil(p * bins).astype(np.int64) - 1, 0, bins - 1)


def histograms(prob: np.ndarray, mask: np.ndarray, bins: int = HIST_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(manipulated, authentic) pixel counts per bin."""
    p, m = _as_arrays(prob, mask)
    b = hist_bins(p, bins)
    pos = np.bincount(b[m], minlength=bins)
    return pos, np.bincount(b, minlength=bins) - pos


def grid_thresholds(bins: int = HIST_BINS) -> np.ndarray:
    """The thresholds ``k/bins`` for k = 1..bins-1 at which histogram curves are exact."""
    return np.arange(1, bins, dtype=np.float64) / bins


def f1_on_grid(pos_hist: np.ndarray, neg_hist: np.ndarray) -> np.ndarray:
    """F1 at every grid threshold (``grid_thresholds``) from per-bin counts."""
    tp = np.cumsum(pos_hist[::-1])[::-1][1:].astype(np.float64)
    fp = np.cumsum(neg_hist[::-1])[::-1][1:].astype(np.float64)
    fn = float(pos_hist.sum()) - tp
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)


def fpr_on_grid(neg_hist: np.ndarray) -> np.ndarray:
    """Fraction of negative pixels above every grid threshold (``grid_thresholds``)."""
    fp = np.cumsum(neg_hist[::-1])[::-1][1:].astype(np.float64)
    total = float(neg_hist.sum())
    return fp / total if total else np.zeros_like(fp)


def hist_curve(pos_hist: np.ndarray, neg_hist: np.ndarray) -> Curve:
    """Curve of histogram counts, bins treated as tied scores (their upper edge)."""
    bins = pos_hist.size
    levels = np.arange(1, bins + 1, dtype=np.float64) / bins
    return _curve_from_level_counts(levels, pos_hist.astype(np.int64), neg_hist.astype(np.int64))


def roc_points(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) of a curve, starting at (0, 0)."""
    if curve.pos == 0 or curve.neg == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    return np.r_[0.0, curve.fp / curve.neg], np.r_[0.0, curve.tp / curve.pos]


# ---------------------------------------------------------------------------------------------
# Bootstrap


def bootstrap_ci(
    n: int,
    statistic: Callable[[np.ndarray], float],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI: ``statistic`` gets resampled indices into ``range(n)``.

    Resampling images (not pixels) is the honest unit: pixels of one image are not independent.
    Resamples where the statistic is undefined (nan) are skipped; ``(nan, nan)`` when n is 0.
    """
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    vals = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_resamples)], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(vals, [a, 1.0 - a])
    return float(lo), float(hi)


def mean_ci(values: Sequence[float] | np.ndarray, **kw) -> tuple[float, float]:
    """Bootstrap CI of the mean of per-image values (nan values are ignored)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return bootstrap_ci(v.size, lambda idx: float(v[idx].mean()), **kw)


# ---------------------------------------------------------------------------------------------
# Dataset-level aggregation


def image_pixel_metrics(
    prob: np.ndarray,
    mask: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    exact_max_pixels: int = EXACT_MAX_PIXELS,
) -> dict:
    """All per-image pixel metrics of one map in one pass (one sort, one threshold)."""
    c = confusion(prob, mask, threshold)
    curve = score_curve(prob, mask, exact_max_pixels=exact_max_pixels)
    f1b, tb = curve_best_f1(curve)
    return {
        "pixel_f1": c.f1,
        "pixel_f1_best": f1b,
        "best_threshold": tb,
        "pixel_auc": curve_auc(curve),
        "pixel_iou": c.iou,
        "pixel_precision": c.precision,
        "pixel_recall": c.recall,
        "tp": c.tp,
        "fp": c.fp,
        "fn": c.fn,
        "tn": c.tn,
    }


def _nanmean(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


@dataclass
class MetricAccumulator:
    """Streams (prediction, mask) pairs and aggregates them with bounded memory.

    Keeps one small row of numbers per image, the summed confusion counts, two fixed-bin
    histograms and the running sum of per-image F1 curves on the threshold grid; never the
    pixels. Images whose mask is empty count as authentic: they enter the pooled numbers but
    not the per-image averages (the field's convention: average over manipulated images).

    Training validation can use it as ``acc.update(prob, mask)`` then ``acc.compute()``.
    """

    threshold: float = DEFAULT_THRESHOLD
    bins: int = HIST_BINS
    exact_max_pixels: int = EXACT_MAX_PIXELS
    rows: list[dict] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    pos_hist: np.ndarray = field(init=False)
    neg_hist: np.ndarray = field(init=False)
    f1_curve_sum: np.ndarray = field(init=False)
    authentic_fpr_curve_sum: np.ndarray = field(init=False)
    n_manipulated: int = 0
    n_authentic: int = 0

    def __post_init__(self) -> None:
        self.pos_hist = np.zeros(self.bins, np.int64)
        self.neg_hist = np.zeros(self.bins, np.int64)
        self.f1_curve_sum = np.zeros(self.bins - 1, np.float64)
        self.authentic_fpr_curve_sum = np.zeros(self.bins - 1, np.float64)

    def update(self, prob: np.ndarray, mask: np.ndarray, /, **extra) -> dict:
        """Add one image; returns (and keeps) its row of per-image metrics plus ``extra``."""
        prob = np.asarray(prob)
        mask = np.asarray(mask).astype(bool, copy=False)
        manipulated = bool(mask.any())
        pos, neg = histograms(prob, mask, self.bins)
        self.pos_hist += pos
        self.neg_hist += neg
        row: dict = dict(extra)
        row["manipulated"] = manipulated
        if manipulated:
            m = image_pixel_metrics(prob, mask, self.threshold, exact_max_pixels=self.exact_max_pixels)
            m["pixel_f1_flag_all"] = flag_all_f1(mask)
            self.f1_curve_sum += f1_on_grid(pos, neg)
            self.n_manipulated += 1
            c = Counts(m["tp"], m["fp"], m["fn"], m["tn"])
        else:
            c = confusion(prob, mask, self.threshold)
            m = {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn}
            self.authentic_fpr_curve_sum += fpr_on_grid(neg)
            self.n_authentic += 1
        self.counts = self.counts + c
        row.update(m)
        row["pixel_fpr"] = c.fpr
        self.rows.append(row)
        return row

    def dataset_best_threshold(self) -> tuple[float, float]:
        """(mean per-image F1, threshold): the one grid threshold best for the whole dataset."""
        if self.n_manipulated == 0:
            return math.nan, math.nan
        mean_curve = self.f1_curve_sum / self.n_manipulated
        i = int(np.argmax(mean_curve))
        return float(mean_curve[i]), float(grid_thresholds(self.bins)[i])

    def calibrated_threshold(self, max_authentic_fpr: float | None) -> tuple[float, float, float]:
        """(threshold, mean per-image F1, mean authentic pixel FPR) at the grid threshold with the
        best mean F1 among those that flag at most ``max_authentic_fpr`` of an authentic image's
        pixels on average (``None``, or no authentic image: no constraint).

        The authentic rate only falls as the threshold rises, so the constraint is a lower bound
        on the threshold; when even the highest grid threshold breaks it, that one is returned.
        """
        if self.n_manipulated == 0:
            return math.nan, math.nan, math.nan
        f1 = self.f1_curve_sum / self.n_manipulated
        fpr = self.authentic_fpr_curve_sum / self.n_authentic if self.n_authentic else np.zeros_like(f1)
        allowed = np.ones(f1.size, bool) if max_authentic_fpr is None else fpr <= max_authentic_fpr
        if not allowed.any():
            i = f1.size - 1
        else:
            i = int(np.argmax(np.where(allowed, f1, -1.0)))
        fpr_i = float(fpr[i]) if self.n_authentic else math.nan
        return float(grid_thresholds(self.bins)[i]), float(f1[i]), fpr_i

    def mean_f1_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(thresholds, mean per-image F1) on the grid, for the F1-vs-threshold plot."""
        n = max(self.n_manipulated, 1)
        return grid_thresholds(self.bins), self.f1_curve_sum / n

    def pooled_curve(self) -> Curve:
        return hist_curve(self.pos_hist, self.neg_hist)

    def compute(self, *, ci: bool = False, n_resamples: int = 1000, seed: int = 0) -> dict:
        """Dataset metrics: per-image means over manipulated images, plus ``pooled_*``.

        With ``ci`` also 95% bootstrap intervals (``<metric>_ci``) for the per-image headline
        metrics, resampling manipulated images with a fixed seed.
        """
        man = [r for r in self.rows if r["manipulated"]]
        out: dict = {}
        for key in ("pixel_f1", "pixel_f1_best", "pixel_auc", "pixel_iou", "pixel_precision", "pixel_recall"):
            out[key] = _nanmean([r[key] for r in man])
        f1d, td = self.dataset_best_threshold()
        out["pixel_f1_dataset_best"] = f1d
        out["dataset_best_threshold"] = td
        out["pooled_pixel_f1"] = self.counts.f1
        out["pooled_pixel_iou"] = self.counts.iou
        out["pooled_pixel_precision"] = self.counts.precision
        out["pooled_pixel_recall"] = self.counts.recall
        out["pooled_pixel_auc"] = curve_auc(self.pooled_curve())
        pooled_f1 = f1_on_grid(self.pos_hist, self.neg_hist)
        out["pooled_pixel_f1_best"] = float(pooled_f1.max()) if self.counts.tp + self.counts.fn else math.nan
        # What a detector that flags every pixel would score: per-image F1 rewards it when
        # regions are large, so every F1 should be read next to this baseline.
        out["pixel_f1_flag_all_baseline"] = _nanmean([r["pixel_f1_flag_all"] for r in man])
        positives = self.counts.tp + self.counts.fn
        total = positives + self.counts.fp + self.counts.tn
        out["pooled_pixel_f1_flag_all_baseline"] = 2 * positives / (positives + total) if positives else math.nan
        if ci:
            for key in ("pixel_f1", "pixel_f1_best", "pixel_auc", "pixel_iou"):
                lo, hi = mean_ci([r[key] for r in man], n_resamples=n_resamples, seed=seed)
                out[f"{key}_ci"] = [lo, hi]
        return out


def flag_all_f1(mask: np.ndarray) -> float:
    """F1 of the trivial prediction "every pixel is manipulated": precision = area fraction,
    recall = 1, so F1 = 2|M| / (|M| + N)."""
    mask = np.asarray(mask).astype(bool, copy=False)
    pos = int(mask.sum())
    return 2 * pos / (pos + mask.size) if pos else 0.0


# ---------------------------------------------------------------------------------------------
# Image level


def image_level_metrics(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> dict:
    """Image-level detection metrics (manipulated = positive), the decision being ``score > threshold``.

    Defined only when both classes are present (otherwise ``{}``): AUC of the scores, accuracy,
    balanced accuracy (mean of the true-positive and true-negative rates), F1 of the
    manipulated class, and the false-positive rate on authentic images.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return {}
    pred = s > threshold
    c = Counts(int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum()), int((~pred & ~y).sum()))
    tpr, tnr = c.tp / n_pos, c.tn / n_neg
    return {
        "image_auc": roc_auc(s, y),
        "image_acc": (c.tp + c.tn) / y.size,
        "image_balanced_acc": (tpr + tnr) / 2.0,
        "image_f1": c.f1,
        "image_tpr": tpr,
        "image_fpr": c.fp / n_neg,
    }
