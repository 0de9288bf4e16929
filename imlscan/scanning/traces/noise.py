"""Noise-level inconsistency: regions whose sensor grain differs from the rest of the photo.

Every camera adds noise whose strength is set by the sensor, the ISO and the processing; a region
pasted from another photo, or smoothed, denoised or synthesised, usually carries noise of another
strength than its surroundings (Mahdian & Saic, "Using noise inconsistencies for blind image
forensics", Image and Vision Computing 27(10), 2009). The trace follows their estimator and adds
two robust statistics so that it needs no fitted threshold beyond the flag level:

1. Local noise estimate. The luminance is filtered with the separable second difference
   ``[1, -2, 1] x [1, -2, 1] / 6`` (Immerkaer, "Fast noise variance estimation", CVIU 1996; the
   finest diagonal detail, like the HH wavelet subband Mahdian & Saic use). It cancels constant,
   linear and bilinear intensity and every purely horizontal or vertical edge, and has unit gain
   for white noise. Sampled every second pixel (as the decimated HH band), blocks of 32 x 32
   pixels every 16 pixels give ``sigma = median(|r|) / 0.6745`` (MAD, robust to the minority of
   samples that fall on texture or edges). Blocks with over a quarter of clipped pixels (any
   channel at 0-1 or 254-255: the noise is cut there) or with no measurable noise (median 0:
   flat or fully quantized) are not measured.
2. Physical model. Sensor noise depends on brightness (shot noise grows with the signal, clipping
   and tone curves shrink it at the extremes), so ``log sigma`` is compared with the photo's own
   noise level function: a quadratic in the block's mean luminance (3 parameters) fitted by
   iteratively reweighted least squares with Tukey's biweight, so that a pasted region, a
   minority of outliers, does not bend it.
3. Outliers. The residuals' centre is their shorth midpoint (the middle of the shortest interval
   that holds half of them: the majority noise level, even when a pasted region covers 40%), and
   their scale is the robust spread of residual differences between non-overlapping neighbouring
   blocks (``1.4826 * median |d| / sqrt 2``, floored at 0.1: a coherent region changes it only at
   its border) or the global MAD of residuals, whichever is smaller. ``z = (residual - centre) /
   scale`` is median-filtered over 3 x 3 neighbouring blocks (a region must span several blocks)
   and mapped to ``1 / (1 + exp(-2 (|z| - Z0)))`` with ``Z0 = 4.5`` (0.5 = flagged): on the
   test photos with uniform added noise (sigma 6 per channel) it flags at most 0.5% of the
   pixels, except a strongly textured stucco wall, which reads as extra noise (up to 6%).

JPEG quantization suppresses noise across the whole photo alike; the comparison is within the
photo, so the trace still applies, but heavy compression or downscaling flattens noise until
nothing is left to compare.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from imlscan.scanning.traces.base import Photo, TraceResult, timed

NAME = "noise"
BLOCK = 32  # pixels on a side of one block
STEP = 16  # pixels between blocks (half a block: blocks overlap)
Z0 = 4.5  # flag level on |z|
SLOPE = 2.0  # logistic slope per unit of z
MIN_SIDE = 64
SCALE_FLOOR = 0.1  # a 10% difference in noise level is below what 256 samples resolve
SIGMA_FLOOR = 0.5  # grey levels: below this, 8-bit rounding (0.29) dominates the estimate
MAX_CLIPPED = 0.25
NLF_ITERATIONS = 8
FLAT_RANGE = 2.0  # grey levels: a block whose luminance spans no more is textureless
MAD_TO_SIGMA = 1.0 / 0.6745
STRIP_BLOCKS = 64  # block rows per strip (bounds memory on large photos)
EXPLANATION = (
    "Regions whose grain differs from the rest of the photo: pasted from another camera or setting, or "
    "smoothed. Fails on heavily compressed or resized photos, which flatten the noise, and in textureless "
    "or very dark areas."
)
SCORE_DEFINITION = (
    "the noise map's 99th percentile over the measured area: above 0.5 when at least 1% of the measured "
    "photo carries noise more than Z0 robust deviations from its own noise level"
)

_D2 = np.array([1.0, -2.0, 1.0], np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    f = rgb.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _tiles(a: np.ndarray, t: int) -> np.ndarray:
    """``a`` (rows x cols, multiples of ``t``) as (rows/t, cols/t, t*t) tiles."""
    ny, nx = a.shape[0] // t, a.shape[1] // t
    return a[: ny * t, : nx * t].reshape(ny, t, nx, t).transpose(0, 2, 1, 3).reshape(ny, nx, t * t)


def _blocks(tiles: np.ndarray) -> np.ndarray:
    """2 x 2 neighbouring tiles joined: blocks of two tiles on a side, one tile apart."""
    return np.concatenate([tiles[:-1, :-1], tiles[1:, :-1], tiles[:-1, 1:], tiles[1:, 1:]], axis=2)


def block_noise(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block (``BLOCK`` px every ``STEP`` px): noise sigma (grey levels), mean luminance, and
    whether it was measured. Block (i, j) covers rows ``16 i .. 16 i + 31`` and the same columns."""
    h, w = rgb.shape[:2]
    ty, tx = h // STEP, w // STEP
    by, bx = ty - 1, tx - 1
    sigma = np.zeros((by, bx), np.float32)
    mean = np.zeros((by, bx), np.float32)
    valid = np.zeros((by, bx), bool)
    for b0 in range(0, by, STRIP_BLOCKS):
        b1 = min(b0 + STRIP_BLOCKS, by)
        y0, y1 = b0 * STEP, (b1 + 1) * STEP  # pixel rows of tiles b0 .. b1
        p0, p1 = max(y0 - 1, 0), min(y1 + 1, h)  # one row of context for the filter
        strip = rgb[p0:p1, : tx * STEP]
        luma = _luma(strip)
        r = cv2.sepFilter2D(luma, cv2.CV_32F, _D2, _D2 / 6.0, borderType=cv2.BORDER_REFLECT)
        r = np.abs(r[y0 - p0 : y1 - p0 : 2, ::2])
        samples = _blocks(_tiles(r, STEP // 2))
        med = np.partition(samples, samples.shape[2] // 2, axis=2)[..., samples.shape[2] // 2]
        lum = luma[y0 - p0 : y1 - p0]
        tile_max = _tiles(lum, STEP).max(axis=2)
        tile_min = _tiles(lum, STEP).min(axis=2)
        flat = (_blocks(tile_max[..., None]).max(axis=2) - _blocks(tile_min[..., None]).min(axis=2)) <= FLAT_RANGE
        tile_mean = cv2.resize(lum, (tx, b1 - b0 + 1), interpolation=cv2.INTER_AREA)
        s = strip[y0 - p0 : y1 - p0]
        clip = ((s <= 1) | (s >= 254)).any(axis=2).astype(np.float32)
        tile_clip = cv2.resize(clip, (tx, b1 - b0 + 1), interpolation=cv2.INTER_AREA)
        sigma[b0:b1] = med * MAD_TO_SIGMA
        mean[b0:b1] = _blocks(tile_mean[..., None]).mean(axis=2)
        valid[b0:b1] = (_blocks(tile_clip[..., None]).mean(axis=2) <= MAX_CLIPPED) & ~flat
    return sigma, mean, valid


def _noise_level_function(log_sigma: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The photo's expected log sigma at each block's brightness: a quadratic in brightness fitted
    by iteratively reweighted least squares with Tukey's biweight, starting from a constant (the
    shorth centre). A pasted region is a minority of outliers to a curve shared by the whole
    photo, so it loses its weight instead of bending the curve, even where it dominates a range
    of brightness."""
    centre = _shorth_centre(log_sigma)
    fit = np.full_like(log_sigma, centre)
    if len(log_sigma) < 12 or np.ptp(mean) < 32:
        return fit
    x = (mean - 128.0) / 128.0
    design = np.stack([np.ones_like(x), x, x * x], axis=1).astype(np.float64)
    for _ in range(NLF_ITERATIONS):
        res = log_sigma - fit
        scale = max(1.4826 * float(np.median(np.abs(res))), SCALE_FLOOR)
        u = res / (4.685 * scale)
        wts = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
        if wts.sum() < 12:
            break
        sw = np.sqrt(wts)
        coef, *_ = np.linalg.lstsq(design * sw[:, None], log_sigma * sw, rcond=None)
        fit = (design @ coef).astype(np.float32)
    return fit


def _shorth_centre(x: np.ndarray) -> float:
    """Midpoint of the shortest interval that holds half of ``x``."""
    s = np.sort(x)
    k = max(len(s) // 2, 1)
    if len(s) <= k:
        return float(np.median(s))
    widths = s[k:] - s[:-k]
    i = int(np.argmin(widths))
    return float((s[i] + s[i + k]) / 2)


def _scale(res: np.ndarray, valid: np.ndarray, centre: float) -> float:
    """Robust spread of the residuals: neighbour differences (blocks two steps apart, which do not
    overlap) or the global MAD, whichever is smaller, floored at ``SCALE_FLOOR``."""
    rows = (res[2:, :] - res[:-2, :])[valid[2:, :] & valid[:-2, :]]
    cols = (res[:, 2:] - res[:, :-2])[valid[:, 2:] & valid[:, :-2]]
    diffs = [rows, cols]
    d = np.concatenate(diffs)
    glob = 1.4826 * float(np.median(np.abs(res[valid] - centre)))
    local = 1.4826 * float(np.median(np.abs(d))) / math.sqrt(2) if d.size >= 8 else glob
    return max(min(local, glob), SCALE_FLOOR)


def _to_pixels(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """A block grid (block centres at ``STEP (i + 1)``) interpolated to h x w pixels."""
    by, bx = grid.shape
    up = cv2.resize(grid, (bx * STEP, by * STEP), interpolation=cv2.INTER_LINEAR)
    # cv2 puts grid point i at pixel STEP i + (STEP - 1) / 2; the block centre is STEP (i + 1).
    off = STEP // 2
    return cv2.copyMakeBorder(up, off, h - off - by * STEP, off, w - off - bx * STEP, cv2.BORDER_REPLICATE)


def noise_zscores(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per block robust z-score of log sigma (median-filtered), validity, and facts to report."""
    sigma, mean, valid = block_noise(rgb)
    z = np.zeros(sigma.shape, np.float32)
    facts: dict = {"blocks": int(sigma.size), "blocks_measured": int(valid.sum())}
    if valid.sum() < 4:
        return z, valid, facts
    log_sigma = np.log(np.maximum(sigma, SIGMA_FLOOR))
    expected = np.zeros_like(log_sigma)
    expected[valid] = _noise_level_function(log_sigma[valid], mean[valid])
    res = np.where(valid, log_sigma - expected, 0.0).astype(np.float32)
    centre = _shorth_centre(res[valid])
    scale = _scale(res, valid, centre)
    z = np.where(valid, (res - centre) / scale, 0.0).astype(np.float32)
    if min(z.shape) >= 3:
        z = cv2.medianBlur(z, 3)
    z[~valid] = 0.0
    facts.update(
        {
            "sigma_median": round(float(np.median(sigma[valid])), 3),
            "log_sigma_scale": round(scale, 4),
        }
    )
    return z, valid, facts


@timed
def trace_noise(photo: Photo) -> TraceResult:
    """Noise-level inconsistency map of ``photo`` (displayed orientation)."""
    rgb = photo.decoded.rgb
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        return TraceResult(NAME, False, f"image too small ({w} x {h} px; needs {MIN_SIDE} px on a side)", EXPLANATION)
    z, valid, facts = noise_zscores(rgb)
    details = {"block_size": BLOCK, "block_step": STEP, "z0": Z0, **facts, "score_definition": SCORE_DEFINITION}
    if valid.sum() < 4 or valid.mean() < 0.1:
        return TraceResult(
            NAME,
            False,
            "image flat or saturated: too few areas with measurable noise",
            EXPLANATION,
            details=details,
        )
    # Global sigma (Immerkaer's estimate over the whole photo): the median of the block sigmas.
    details["sigma_global"] = details.pop("sigma_median")
    block_map = (1.0 / (1.0 + np.exp(-SLOPE * (np.abs(z) - Z0)))).astype(np.float32)
    block_map[~valid] = 0.0
    score = float(np.percentile(block_map[valid], 99))
    flagged = float((block_map[valid] >= 0.5).mean())
    details["flagged_fraction"] = round(flagged, 4)
    pixel_map = np.clip(_to_pixels(block_map, h, w), 0.0, 1.0).astype(np.float32)
    if flagged > 0:
        lo = float((z[valid] <= -Z0).mean())
        kind = "less" if lo >= flagged / 2 else "more"
        reason = (
            f"{flagged:.1%} of the measured area has {kind} noise than the rest (sigma about {details['sigma_global']})"
        )
    else:
        reason = f"noise level consistent across the photo (sigma about {details['sigma_global']} grey levels)"
    return TraceResult(NAME, True, reason, EXPLANATION, map=pixel_map, score=score, details=details)
