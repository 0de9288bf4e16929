"""Aligned double JPEG compression (A-DJPG): which 8x8 blocks were compressed only once in a photo
whose background was compressed twice on the same grid.

A JPEG that is opened, edited and saved again is quantized twice on the same 8x8 grid: first with
step ``Q1`` (the earlier save), then with ``Q2`` (the last save). When ``Q1 > Q2`` the histogram of
each low-frequency DCT coefficient becomes periodic, with bins that stay (nearly) empty, because
the values that survive the first quantization are multiples of ``Q1``. A region pasted from
another source (an uncompressed image, or a JPEG whose grid does not line up with this one) has
been quantized only once on this grid and fills every bin. The method follows

- Lin, He, Tang, Tang, "Fast, automatic and fine-grained tampered JPEG image detection via DCT
  coefficient analysis", Pattern Recognition 42(11), 2009 (per-block posterior from the periodic
  histogram of each frequency), and
- Bianchi, De Rosa, Piva, "Improved DCT coefficient analysis for forgery localization in JPEG
  images", ICASSP 2011, and Bianchi, Piva, "Image forgery localization via block-grained analysis
  of JPEG artifacts", IEEE TIFS 7(3), 2012 (the statistical model below),

implemented here from the papers' equations:

1. For each of the first AC frequencies in zig-zag order, the distribution of the unquantized
   coefficient is estimated by *calibration*: the luminance is decoded from the coefficients and
   the DCT is taken again on the grid shifted by (4, 4), where the quantization lattice is lost.
2. Single compression (the hypothesis "pasted"): ``p0(x) = P(round(v / Q2) = x)``. Double
   compression (the hypothesis "background"): ``p1(x) = sum_k P(round(v / Q1) = k) P(x | Q1 k)``,
   where ``P(x | Q1 k)`` quantizes ``Q1 k`` plus a Gaussian rounding error (decoding to 8-bit
   pixels and back) with step ``Q2``. This is the full model of Bianchi and Piva, of which
   ``p1 = n(x) p0`` (with ``n`` the number of ``Q1`` multiples that land in bin ``x``) is the
   simplified form.
3. ``Q1`` is the candidate step (``Q2 < Q1 <= 4 Q2 + 16``) that maximizes the likelihood of the
   observed histogram under the mixture ``alpha p0 + (1 - alpha) p1``, with ``alpha`` (the share
   of single-compressed coefficients) fitted by EM; a frequency shows double quantization when
   that likelihood beats single compression (``alpha = 1``) by a margin (``MIN_GAIN`` nats per
   non-zero coefficient), and the photo does when ``MIN_FREQUENCIES`` frequencies do. The rounding
   error's deviation is then chosen by likelihood among ``SIGMAS`` and ``Q1`` searched again.
   The margin and the count are the one fitted decision: on 200 training-split hosts (version 2,
   ``lab/scripts/adq_detection.py``) they are the pair that finds the most aligned double
   compressions with a quality rise while declaring at most 1% of single-compressed photos
   (downscaled, or cropped off the grid, then saved) double: 0.15 nats on 3 of 27 frequencies
   finds 90% of re-saves above the earlier quality (version 1, 0.25 on 2 of 15: 48%); small
   quality rises (q65 -> q75) gain only 0.05-0.2 nats per coefficient.
4. Each block's log likelihood ratio ``log p0(x) / p1(x)`` is summed over the frequencies that show
   double quantization and averaged over the 3 x 3 blocks around it (a paste covers neighbouring
   blocks; the mean keeps an isolated block's evidence from standing alone without the extra
   confidence a sum would claim); the block's posterior of being single-compressed follows with
   the mixture's own estimate of the share of single-compressed coefficients as the prior
   (empirical Bayes; a prior of one half would put every block without evidence on the 0.5
   threshold). Version 1 took a 3 x 3 median of the posteriors; the mean fused better on the
   training split (``lab/scripts/adq_rules.py``).

Zero coefficients carry no weight (their probability under both hypotheses depends on how well
the calibration matches the unquantized image near zero, which it does poorly), so blocks with no
texture stay at the prior: smooth pasted regions (sky, walls) are hard to see. Blocks with a
clipped pixel and partial edge blocks carry no weight either (see ``_unreliable_blocks``).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from imlscan.jpegtables import ijg_table
from imlscan.scanning.traces.base import Photo, TraceResult, timed
from imlscan.scanning.traces.jpeg import ZIGZAG

EXPLANATION = (
    "Blocks compressed once in a photo whose background was compressed twice: a paste from another source. "
    "Needs the photo's own JPEG saved at a higher quality than before; silent after resizing, cropping off the "
    "8x8 grid or a re-save at the same or lower quality."
)
SCORE_DEFINITION = "mean of the highest 1% (at least 4) of the smoothed block probabilities of single compression"

FREQUENCIES = 27  # zig-zag positions 1..27 (AC only) are candidates
MIN_NONZERO = 0.02  # a frequency needs this share of non-zero coefficients...
MIN_NONZERO_COUNT = 200  # ...and at least this many
HIST_LIMIT = 40  # histograms over |x| <= HIST_LIMIT (quantized units)
# Candidate standard deviations of the rounding error between the two compressions (DCT units);
# the first is tried first, the one that fits best is kept.
SIGMAS = (0.35, 0.2, 0.5, 0.7, 1.0)
OUTLIERS = 0.02  # share of double-compressed coefficients allowed off the model (clipping...)
MIN_GAIN = 0.15  # nats per non-zero coefficient for a frequency to show double quantization
MIN_DQ_SHARE = 0.25  # ...and at least this share of its non-zero coefficients double-compressed
MIN_FREQUENCIES = 3  # the photo shows double compression when this many frequencies do
LLR_CLIP = 4.0  # one coefficient moves a block's log-odds by at most this
MAX_Q2 = 64  # frequencies quantized more coarsely than this are left out
PRIOR_MIN = 0.02  # floor of the prior share of pasted blocks
CALIBRATION_BLOCKS = 30_000  # blocks sampled for the calibration histogram
POOL_BLOCKS = 3  # block evidence is averaged over POOL_BLOCKS x POOL_BLOCKS blocks

# Minimum coded unit (height, width) in pixels per chroma subsampling.
_MCU = {"4:2:0": (16, 16), "4:2:2": (8, 16), "4:4:0": (16, 8), "4:1:1": (8, 32), "4:1:0": (16, 32)}
_DCT = np.array(
    [[math.sqrt((2 if u else 1) / 8) * math.cos((2 * x + 1) * u * math.pi / 16) for x in range(8)] for u in range(8)],
    np.float32,
)


@timed
def trace_adq(photo: Photo) -> TraceResult:
    """Localize blocks that escaped an aligned double JPEG compression (see the module's doc)."""
    if not photo.is_jpeg:
        return _not_applicable("not a JPEG")
    jpeg = photo.jpeg
    if jpeg is None or jpeg.error:
        return _not_applicable(f"JPEG not readable by the JPEG traces: {jpeg.error if jpeg else 'no data'}")
    y, table = jpeg.y, jpeg.luma_table
    current = jpeg.qualities.get("luma", {})
    details: dict[str, Any] = {
        "current_quality": current.get("quality"),
        "current_tables_standard": current.get("standard"),
        "score_definition": SCORE_DEFINITION,
    }
    if y.shape[0] < 4 or y.shape[1] < 4:
        return _not_applicable("too small for the JPEG traces (under 32 x 32 pixels)", details)
    fits, bins, sigma = analyse(y, table)
    details["frequencies"] = [f.to_dict() for f in fits]
    used = [f for f in fits if f.double]
    if not fits:
        return _not_applicable("too few textured blocks to read the JPEG histograms", details)
    if len(used) < MIN_FREQUENCIES:
        return _not_applicable(
            "no sign of double compression: a single compression, or one hidden by a last save at the same or "
            "a lower quality (or after resizing)",
            details,
        )

    llr = np.zeros(y.shape[:2], np.float32)
    for f, b in zip(fits, bins):
        if f.double:
            llr += f.llr[b]
    unreliable = _unreliable_blocks(photo, jpeg.subsampling, y.shape[:2])
    llr[unreliable] = 0
    # Empirical Bayes: the prior share of single-compressed blocks is the mixture's own estimate.
    prior = float(np.clip(np.median([f.alpha for f in used]), PRIOR_MIN, 0.5))
    pooled = cv2.blur(llr, (POOL_BLOCKS, POOL_BLOCKS), borderType=cv2.BORDER_REFLECT)
    logit = pooled + math.log(prior / (1 - prior))
    prob = (1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))).astype(np.float32)

    n_top = min(prob.size, max(4, int(round(0.01 * prob.size))))
    score = float(np.clip(np.partition(prob.ravel(), prob.size - n_top)[-n_top:].mean(), 0, 1))

    h, w = jpeg.height, jpeg.width
    hb, wb = prob.shape
    stored = np.broadcast_to(prob[:, None, :, None], (hb, 8, wb, 8)).reshape(hb * 8, wb * 8)[:h, :w]
    heat = np.clip(photo.to_display(stored), 0, 1).astype(np.float32)

    q1 = _primary_quality([(f.index, f.q1) for f in used])
    details.update(
        {
            "primary_quality": q1,
            "primary_steps": {str(f.index): f.q1 for f in used},
            "frequencies_used": [f.index for f in used],
            "prior": round(prior, 4),
            "rounding_sigma": sigma,
            "unreliable_blocks": round(float(unreliable.mean()), 4),
            "flagged_share": round(float((prob > 0.5).mean()), 4),
        }
    )
    found = f"double compression found, primary quality about {q1}" if q1 else "double compression found"
    return TraceResult(
        name="adq",
        applies=True,
        reason=found,
        explanation=EXPLANATION,
        map=heat,
        score=score,
        details=details,
    )


class _Fit:
    """One frequency: its histogram, the calibrated single-compression model and the fitted
    double-compression model."""

    def __init__(self, index: int, q2: int, hist: np.ndarray, v: np.ndarray):
        lim = HIST_LIMIT
        self.index, self.q2 = index, q2
        self.row, self.col = divmod(int(ZIGZAG[index]), 8)
        self.keep = np.arange(-lim, lim + 1) != 0  # zeros are left out (see the module's doc)
        self.h = hist[self.keep]
        self.nonzero = int(self.h.sum())
        self.q1: int | None = None
        self.alpha = 1.0
        self.gain = 0.0
        self.double = False
        self.llr = np.zeros(2 * lim + 3, np.float32)
        # Fine histogram (1/4 units) of the calibrated coefficients: the unquantized distribution.
        self.q1_max = min(4 * q2 + 16, 255)
        reach = (lim + 1) * q2 + self.q1_max
        self.fine = np.bincount(np.clip(np.rint(v * 4).astype(np.int64), -4 * reach, 4 * reach) + 4 * reach)
        self.centers = (np.arange(self.fine.size) - 4 * reach) / 4.0
        idx = np.clip(np.rint(self.centers / q2).astype(np.int64), -lim - 1, lim + 1) + lim + 1
        single = np.bincount(idx, weights=self.fine, minlength=2 * lim + 3)[1:-1]
        self.f0 = _normalise(single[self.keep] + 0.5)
        self.ll0 = float((self.h * np.log(self.f0)).sum())

    def models(self, q1s: np.ndarray, sigma: float) -> np.ndarray:
        """Double-compression distributions over the non-zero bins, one row per ``q1s``."""
        f1 = _double_quantized(self.fine, self.centers, self.q2, q1s, sigma)[:, self.keep]
        f1 = f1 / np.maximum(f1.sum(axis=1, keepdims=True), 1e-12) * (1 - OUTLIERS) + OUTLIERS * self.f0
        f1 = np.maximum(f1, 1e-12)
        return f1 / f1.sum(axis=1, keepdims=True)

    def search(self, sigma: float) -> None:
        """The most likely primary step and whether this frequency shows double quantization."""
        self.q1, self.alpha, self.gain, self.double = None, 1.0, 0.0, False
        if self.nonzero < MIN_NONZERO_COUNT:
            return
        q1s = np.arange(self.q2 + 1, self.q1_max + 1)
        alphas, lls = _em(self.h, self.f0, self.models(q1s, sigma))
        gains = (lls - self.ll0) / self.nonzero
        j = int(np.argmax(gains))
        if gains[j] > 0:
            self.q1, self.alpha, self.gain = int(q1s[j]), float(alphas[j]), float(gains[j])
            self.double = self.gain >= MIN_GAIN and (1 - self.alpha) >= MIN_DQ_SHARE

    def loglik(self, sigma: float) -> float:
        """Log likelihood of the histogram with the current ``q1`` and rounding error ``sigma``."""
        return float(_em(self.h, self.f0, self.models(np.array([self.q1]), sigma))[1][0])

    def finish(self, sigma: float) -> None:
        """Each bin's log likelihood ratio, single over double compression, indexed like the
        block bins (zero and the values beyond the limit carry no evidence)."""
        self.llr = np.zeros(2 * HIST_LIMIT + 3, np.float32)
        if self.q1 is not None:
            f1 = self.models(np.array([self.q1]), sigma)[0]
            self.llr[1:-1][self.keep] = np.clip(np.log(self.f0) - np.log(f1), -LLR_CLIP, LLR_CLIP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "q2": self.q2,
            "q1": self.q1,
            "single_share": round(self.alpha, 4),
            "gain": round(self.gain, 4),
            "double": self.double,
            "nonzero": self.nonzero,
        }


def analyse(y: np.ndarray, table: np.ndarray) -> tuple[list[_Fit], np.ndarray, float]:
    """Fit the single/double quantization mixture on each candidate frequency.

    Returns the fits, each fit's block histogram bins (``(len(fits), H/8, W/8)`` uint8: ``0`` and
    ``2 HIST_LIMIT + 2`` hold the values beyond the limit, ``HIST_LIMIT + 1`` holds zero) and the
    rounding error's standard deviation that fits the photo best.
    """
    hb, wb = y.shape[:2]
    table = np.asarray(table).reshape(64)
    lim = HIST_LIMIT
    cols = y.reshape(hb * wb, 64)[:, ZIGZAG[1 : FREQUENCIES + 1]].T  # (FREQUENCIES, blocks)
    bins = (np.clip(cols, -lim - 1, lim + 1) + (lim + 1)).astype(np.uint8)
    counts = [np.bincount(b, minlength=2 * lim + 3) for b in bins]
    chosen = [
        i
        for i, h in enumerate(counts)
        if hb * wb - int(h[lim + 1]) >= max(MIN_NONZERO_COUNT, MIN_NONZERO * hb * wb) and table[ZIGZAG[i + 1]] <= MAX_Q2
    ]
    if not chosen:
        return [], bins[:0].reshape(0, hb, wb), SIGMAS[0]
    calib = _calibrate(y, table, [divmod(int(ZIGZAG[i + 1]), 8) for i in chosen])
    fits = [
        _Fit(i + 1, int(table[ZIGZAG[i + 1]]), counts[i][1:-1].astype(np.float64), v) for i, v in zip(chosen, calib)
    ]
    sigma = SIGMAS[0]
    for f in fits:
        f.search(sigma)
    used = [f for f in fits if f.double]
    if len(used) >= MIN_FREQUENCIES:
        # The rounding error depends on the software in between: fit it, then search again.
        strongest = sorted(used, key=lambda f: -f.gain)[:5]
        best = max(SIGMAS, key=lambda s: sum(f.loglik(s) for f in strongest))
        if best != sigma:
            sigma = best
            for f in fits:
                f.search(sigma)
    for f in fits:
        if f.double:
            f.finish(sigma)
    return fits, bins[chosen].reshape(len(chosen), hb, wb), sigma


def _double_quantized(fine: np.ndarray, centers: np.ndarray, q2: int, q1s: np.ndarray, sigma: float) -> np.ndarray:
    """For each primary step in ``q1s``: the distribution of ``x`` in -HIST_LIMIT..HIST_LIMIT after
    quantizing the calibrated coefficients (histogram ``fine`` at ``centers``) with step ``q1``,
    adding a Gaussian rounding error and quantizing again with ``q2`` (rows: ``q1s``)."""
    lim, s = HIST_LIMIT, sigma / q2
    kidx = np.rint(centers[None, :] / q1s[:, None]).astype(np.int64)
    kmin = int(kidx.min())
    span = int(kidx.max()) - kmin + 1
    flat = (np.arange(q1s.size)[:, None] * span + (kidx - kmin)).ravel()
    weights = np.broadcast_to(fine, kidx.shape).ravel()
    p1k = np.bincount(flat, weights=weights, minlength=q1s.size * span).reshape(q1s.size, span)
    mu = (np.arange(span) + kmin)[None, :] * (q1s[:, None] / q2)  # Q1 k in units of Q2
    reach = int(math.ceil(5 * s))
    rows, ks = np.nonzero((p1k > 0) & (np.abs(mu) <= lim + reach))
    m, w = mu[rows, ks], p1k[rows, ks]
    base = np.rint(m)
    cdf = _phi((base[:, None] + np.arange(-reach - 0.5, reach + 1)[None, :] - m[:, None]) / s)
    prob = np.diff(cdf, axis=1) * w[:, None]  # mass landing in bins base - reach .. base + reach
    xs = base[:, None].astype(np.int64) + np.arange(-reach, reach + 1)[None, :]
    ok = np.abs(xs) <= lim
    idx = (rows[:, None] * (2 * lim + 1) + xs + lim)[ok]
    return np.bincount(idx, weights=prob[ok], minlength=q1s.size * (2 * lim + 1)).reshape(q1s.size, 2 * lim + 1)


def _em(h: np.ndarray, f0: np.ndarray, f1: np.ndarray, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``f1``: the weight ``alpha`` of ``f0`` in ``h ~ alpha f0 + (1 - alpha) f1`` (EM)
    and the log likelihood of ``h`` under that mixture."""
    alpha, hf0 = np.full((f1.shape[0], 1), 0.2), h * f0 / h.sum()
    for _ in range(iterations):
        alpha = alpha * (hf0 / (alpha * f0 + (1 - alpha) * f1)).sum(axis=1, keepdims=True)
        alpha = np.minimum(np.maximum(alpha, 1e-4), 1 - 1e-4)
    return alpha[:, 0], (h * np.log(alpha * f0 + (1 - alpha) * f1)).sum(axis=1)


def _calibrate(y: np.ndarray, table: np.ndarray, freqs: list[tuple[int, int]]) -> list[np.ndarray]:
    """The DCT coefficients ``freqs`` of the decoded luminance on the grid shifted by (4, 4),
    from a sample of block rows: an estimate of the unquantized coefficients' distribution."""
    hb, wb = y.shape[:2]
    stride = max(1, math.ceil((hb - 1) * (wb - 1) / CALIBRATION_BLOCKS))
    rows = np.arange(0, hb - 1, stride)
    q = table.reshape(8, 8).astype(np.float32)

    def pixels(r: np.ndarray) -> np.ndarray:
        spatial = _transform(y[r].astype(np.float32) * q, _DCT.T)  # (n, wb, 8, 8)
        return spatial.transpose(0, 2, 1, 3).reshape(len(r), 8, wb * 8)

    strip = np.concatenate([pixels(rows), pixels(rows + 1)], axis=1)
    strip = np.clip(np.rint(strip + 128), 0, 255) - 128
    shifted = strip[:, 4:12, 4 : 4 + (wb - 1) * 8].reshape(len(rows), 8, wb - 1, 8).transpose(0, 2, 1, 3)
    coef = _transform(np.ascontiguousarray(shifted), _DCT).reshape(-1, 64)
    return [coef[:, r * 8 + c] for r, c in freqs]


def _transform(blocks: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``m @ b @ m.T`` for every 8 x 8 block ``b`` in the last two axes, as two large products."""
    shape = blocks.shape
    a = blocks.reshape(-1, 8) @ m.T  # rows: b @ m.T
    a = a.reshape(-1, 8, 8).transpose(0, 2, 1).reshape(-1, 8) @ m.T  # (b @ m.T).T @ m.T = (m @ b @ m.T).T
    return a.reshape(-1, 8, 8).transpose(0, 2, 1).reshape(shape)


def _unreliable_blocks(photo: Photo, subsampling: str | None, shape: tuple[int, int]) -> np.ndarray:
    """Blocks whose coefficients cannot show double compression even where it happened: blocks
    with a clipped pixel (0 or 255 in a colour channel: clipping after decoding moves the
    coefficients off the first quantization's lattice) and the last row or column of blocks when
    the photo ends inside a minimum coded unit (the encoder pads it anew on each save)."""
    hb, wb = shape
    bad = np.zeros(shape, bool)
    rgb = photo.rgb_stored
    if rgb.ndim == 3 and rgb.shape[0] <= hb * 8 and rgb.shape[1] <= wb * 8 and rgb.dtype == np.uint8:
        h, w = rgb.shape[:2]
        for r0 in range(0, hb, 64):  # 512-pixel strips bound the memory on large photos
            t = rgb[r0 * 8 : (r0 + 64) * 8] - np.uint8(1)  # 0 wraps to 255, 255 becomes 254
            m = np.maximum(t[..., 0], t[..., 1])
            np.maximum(m, t[..., 2], out=m)
            n = -(-m.shape[0] // 8)
            padded = np.zeros((n * 8, wb * 8), np.uint8)
            padded[: m.shape[0], :w] = m
            rows = padded.reshape(n, 8, wb * 8).max(axis=1)
            bad[r0 : r0 + n] |= rows.reshape(n, wb, 8).max(axis=2) >= 254
        mcu_h, mcu_w = _MCU.get(subsampling or "", (8, 8))
        if h % mcu_h:
            bad[-1, :] = True
        if w % mcu_w:
            bad[:, -1] = True
    return bad


def _primary_quality(steps: list[tuple[int, int | None]]) -> int | None:
    """The IJG quality whose luminance table best explains the estimated primary steps."""
    steps = [(k, q) for k, q in steps if q]
    if len(steps) < 2:
        return None
    idx = np.array([ZIGZAG[k] for k, _ in steps])
    est = np.array([q for _, q in steps], np.float64)
    errors = [np.abs(ijg_table(q).reshape(64)[idx] - est).mean() for q in range(1, 101)]
    best = int(np.argmin(errors))
    return best + 1 if errors[best] <= 1.0 else None


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.maximum(np.asarray(p, np.float64), 1e-12)
    return p / p.sum()


def _phi(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz and Stegun 7.1.26 for erf; error under 1.5e-7)."""
    t = np.abs(z) / math.sqrt(2)
    k = 1.0 / (1.0 + 0.3275911 * t)
    poly = k * (0.254829592 + k * (-0.284496736 + k * (1.421413741 + k * (-1.453152027 + k * 1.061405429))))
    erf = 1.0 - poly * np.exp(-t * t)
    return 0.5 * (1.0 + np.sign(z) * erf)


def _not_applicable(reason: str, details: dict[str, Any] | None = None) -> TraceResult:
    return TraceResult(name="adq", applies=False, reason=reason, explanation=EXPLANATION, details=details or {})


__all__ = ["trace_adq", "analyse"]
