"""JPEG grid detection and grid-misaligned regions ("ZERO").

Method (Nikoukhah, Anger, Ehret, Colom, Morel, Grompone von Gioi, "JPEG grid detection based on
the number of DCT zeros and its application to automatic and localized forgery detection", CVPR
Workshops 2019; the IPOL 2021 article "ZERO" details it): JPEG quantizes the DCT of the 8x8 blocks
of its grid, so in decoded pixels the DCT of a block *on* the grid has many coefficients that
round to zero, and a block straddling the grid has few. For every pixel position the 8x8 block
starting there is transformed and its zeros (|coefficient| < 0.5, the midpoint of the finest
quantization step; DC excluded) are counted; each pixel then votes for the grid origin
(x mod 8, y mod 8) of the block covering it with the most zeros; ties and blocks constant along a
row or a column cast no vote.

Decisions are a-contrario (Desolneux, Moisan, Morel): under the null hypothesis a vote goes to
any of the 64 origins with probability 1/64, and votes are counted per 64 pixels (a block's
pixels are not independent). A grid, or a region voting for another grid than the main one, is
kept when its number of false alarms NFA = N_tests * P(Binomial(n, 1/64) >= k) is below 1, with
N_tests = 64^2 W^2 H^2 (grids times rectangular windows), so that a photo with no such region
gets on average less than one false detection.

The binomial tail is bounded from above in closed form (so the NFA is never underestimated).

Regions are grown on 8x8 cells: cells holding votes for the same (non-main) grid and touching
(8-connectivity) form one candidate, whose bounding box gives n (cells) and whose votes / 64
give k, as ZERO's pixel-level region growing with a 9-pixel reach does, at a fraction of its
cost. In a JPEG file the file's own grid, (0, 0), is never foreign (after a crop and a
high-quality re-save the earlier, shifted grid can be the most voted one). A region whose
bounding box covers more than half the photo is reported as a second grid over the photo
(``details["whole_photo_grids"]``: a crop between two compressions, or a very large paste), not
mapped. The map is 1 on the cells of the detected regions after a closing by one cell, else 0.
Not implemented: the IPOL version's second test for regions *missing* the grid (which re-saves
the photo at quality 99).

The DCT of every 8x8 window is two separable passes of OpenCV filters (8 row filters, then 8
column filters on each), in strips of rows, which costs about 0.1 s per megapixel on two cores.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from imlscan.scanning.traces.base import Photo, TraceResult, timed

NAME = "grid"
EXPLANATION = (
    "Where the 8x8 JPEG grid is shifted: a region pasted from another JPEG, or a crop. Silent after resizing "
    "or a strong recompression; a paste aligned with the grid is invisible to it."
)
NO_GRID = "no JPEG grid found (never compressed, or resized after the last compression)"
SCORE_DEFINITION = (
    "0 when no region votes meaningfully for another grid; otherwise 0.5 + 0.05 * -log10(NFA) of the most "
    "meaningful region, capped at 1 (0.5 = NFA of 1, the detection threshold; 1 = NFA of 1e-10 or less)"
)

# Orthonormal 8-point DCT-II basis (row k = frequency k), as JPEG's DCT.
_DCT = np.array(
    [
        [(math.sqrt(0.125) if k == 0 else 0.5) * math.cos((2 * n + 1) * k * math.pi / 16) for n in range(8)]
        for k in range(8)
    ],
    np.float32,
)
_ROW_KERNELS = [np.ascontiguousarray(_DCT[k].reshape(1, 8)) for k in range(8)]
_COL_KERNELS = [np.ascontiguousarray(_DCT[k].reshape(8, 1)) for k in range(8)]
_STRIP_PIXELS = 1 << 18  # pixels per strip: bounds memory and gives threads work to share
MAX_LOCAL_SHARE = 0.5  # a region whose bounding box covers more of the photo is a second grid, not a paste
_FLAT = 64  # vote index of a block constant along a row or a column: never a vote


def log10_binomial_tail(n: int, k: int, p: float) -> float:
    """log10 P(Binomial(n, p) >= k), bounded from above (never smaller than the truth).

    For k > np the tail is at most term(k) / (1 - r) with r the ratio of term(k+1) to term(k) (the
    terms then decrease faster than a geometric series of ratio r); for k <= np it is taken as 1.
    """
    if k <= 0 or n <= 0:
        return 0.0
    k = min(k, n)
    if k <= n * p:
        return 0.0
    log_term = (
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
    )
    r = (n - k) / (k + 1) * p / (1 - p)
    return min(0.0, (log_term - math.log1p(-r)) / math.log(10))


def count_zeros(luma: np.ndarray) -> np.ndarray:
    """For every 8x8 block of ``luma`` (indexed by its top-left pixel; shape (H-7, W-7)), the
    number of its 63 AC DCT coefficients with magnitude below 0.5.

    Separable: eight 1 x 8 filters along rows, then for each of them eight 8 x 1 filters along
    columns, in strips of rows (two threads when OpenCV may use two)."""
    h, w = luma.shape
    out = np.empty((h - 7, w - 7), np.uint8)
    rows = max(8, _STRIP_PIXELS // max(w, 1))

    def strip(y0: int) -> None:
        y1 = min(y0 + rows, h - 7)
        src = luma[y0 : y1 + 7]
        acc = np.zeros(src.shape, np.uint8)
        for u in range(8):
            r = cv2.filter2D(src, cv2.CV_32F, _ROW_KERNELS[u], anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
            for v in range(8):
                if u == 0 and v == 0:
                    continue
                c = cv2.filter2D(r, cv2.CV_32F, _COL_KERNELS[v], anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
                # inRange gives 255 = -1 (mod 256) per zero: 63 of them cannot wrap around.
                np.add(acc, cv2.inRange(c, -0.5, 0.5), out=acc)
        np.subtract(0, acc[: y1 - y0, : w - 7], out=out[y0:y1], dtype=np.uint8, casting="unsafe")

    starts = range(0, h - 7, rows)
    workers = min(2, max(1, cv2.getNumThreads()), len(starts))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(strip, starts))
    else:
        for s in starts:
            strip(s)
    return out


def grid_votes(luma: np.ndarray) -> np.ndarray:
    """Per pixel: the grid origin index ``(x mod 8) + 8 (y mod 8)`` of the block with the most
    DCT zeros among the 64 blocks covering the pixel, or -1 (tie, constant block, no zero, or a
    pixel within 7 of the border, which fewer than 64 blocks cover)."""
    h, w = luma.shape
    votes = np.full((h, w), -1, np.int8)
    if h < 15 or w < 15:
        return votes
    zeros = count_zeros(luma)
    hz, wz = zeros.shape
    # Blocks constant along every row (or every column) have many zeros wherever they sit.
    same_x = (luma[:, 1:] == luma[:, :-1]).astype(np.uint8)
    same_y = (luma[1:, :] == luma[:-1, :]).astype(np.uint8)
    const_x = cv2.erode(same_x, np.ones((8, 7), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    const_y = cv2.erode(same_y, np.ones((7, 8), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    flat = (const_x[:hz, :wz] | const_y[:hz, :wz]).astype(bool)
    idx = (np.arange(wz, dtype=np.uint16) % 8)[None, :] + 8 * (np.arange(hz, dtype=np.uint16) % 8)[:, None]
    idx = np.where(flat, np.uint16(_FLAT), idx)
    # The 64 blocks covering a pixel have 64 distinct origins: the best block is unique exactly
    # when the maximum of (zeros, origin) and of (zeros, -origin) name the same origin.
    key = zeros.astype(np.uint16) << 7
    kernel = np.ones((8, 8), np.uint8)
    hi = cv2.dilate(key | idx, kernel, anchor=(7, 7))[7:, 7:]
    lo = cv2.dilate(key | (127 - idx), kernel, anchor=(7, 7))[7:, 7:]
    best = hi & 127
    ok = (best == 127 - (lo & 127)) & (best < 64) & (hi >= 128)
    inner = np.where(ok, best.astype(np.int8), np.int8(-1))
    votes[7 : h - 7, 7 : w - 7] = inner
    return votes


def _log_nt(h: int, w: int) -> float:
    return 2 * math.log10(64) + 2 * math.log10(max(w, 1)) + 2 * math.log10(max(h, 1))


def main_grid(votes: np.ndarray) -> tuple[int, float, np.ndarray, list[float]]:
    """The most voted grid origin, its log10 NFA, the vote counts and every grid's log10 NFA."""
    h, w = votes.shape
    counts = np.bincount(votes[votes >= 0].ravel().astype(np.int64), minlength=64)[:64]
    log_nt = _log_nt(h, w)
    n = h * w // 64
    lnfa = [log_nt + log10_binomial_tail(n, int(c) // 64, 1 / 64) for c in counts]
    best = int(np.argmax(counts))
    return best, lnfa[best], counts, lnfa


def foreign_regions(votes: np.ndarray, exclude: set[int]) -> tuple[np.ndarray, list[dict]]:
    """Regions voting for a grid not in ``exclude`` with NFA < 1: a cell map (8x8 cells; 0 = none,
    i = the i-th region) and one record per region (bounding box in pixels, grid, log10 NFA, share
    of the photo's cells it covers)."""
    h, w = votes.shape
    hc, wc = -(-h // 8), -(-w // 8)
    detected = np.zeros((hc, wc), np.int32)
    regions: list[dict] = []
    keep = votes >= 0
    for g in exclude:
        keep &= votes != g
    ys, xs = np.nonzero(keep)
    if ys.size == 0:
        return detected, regions
    cell = (ys // 8) * wc + xs // 8
    per_cell = np.bincount(cell * 64 + votes[ys, xs].astype(np.int64), minlength=hc * wc * 64).reshape(hc, wc, 64)
    log_nt = _log_nt(h, w)
    # A region of k votes needs NFA = N_tests (1/64)^(k/64) < 1 at best: fewer votes cannot count.
    min_votes = math.ceil(64 * log_nt / math.log10(64))
    totals = per_cell.reshape(-1, 64).sum(0)
    for g in np.flatnonzero(totals >= min_votes):
        count = per_cell[:, :, g]
        present = (count > 0).astype(np.uint8)
        n_lab, labels, stats, _ = cv2.connectedComponentsWithStats(present, connectivity=8)
        sums = np.bincount(labels.ravel(), weights=count.ravel().astype(np.float64), minlength=n_lab)
        for lab in range(1, n_lab):
            k_votes = int(sums[lab])
            if k_votes < min_votes:
                continue
            x0, y0, bw, bh = (int(v) for v in stats[lab, :4])
            lnfa = log_nt + log10_binomial_tail(bw * bh, k_votes // 64, 1 / 64)
            if lnfa < 0:
                regions.append(
                    {
                        "grid": [int(g) % 8, int(g) // 8],
                        "box_xywh": [x0 * 8, y0 * 8, min(bw * 8, w - x0 * 8), min(bh * 8, h - y0 * 8)],
                        "log10_nfa": round(lnfa, 2),
                        "share": round(bw * bh / (hc * wc), 4),
                    }
                )
                detected[labels == lab] = len(regions)
    return detected, regions


def _cells_to_pixels(cells: np.ndarray, h: int, w: int) -> np.ndarray:
    """A cell mask, closed (holes and gaps of a cell filled), as an H x W float32 0/1 map."""
    c = cells.astype(np.uint8)
    if c.any():
        c = cv2.morphologyEx(
            c, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
        )
    return np.repeat(np.repeat(c, 8, axis=0), 8, axis=1)[:h, :w].astype(np.float32)


@timed
def trace_grid(photo: Photo) -> TraceResult:
    """JPEG grid origin of the whole photo and regions whose grid differs (see the module)."""
    luma = np.rint(photo.luma_stored).astype(np.float32)
    h, w = luma.shape
    votes = grid_votes(luma)
    best, lnfa, counts, all_lnfa = main_grid(votes)
    details: dict = {
        "grid_origin": [best % 8, best // 8],
        "grid_meaningful": bool(lnfa < 0 and counts[best] > 0),
        "grid_log10_nfa": round(lnfa, 2),
        "voting_share": round(float(counts.sum()) / max(h * w, 1), 4),
        "score_definition": SCORE_DEFINITION,
    }
    if not details["grid_meaningful"]:
        details["grid_origin"] = None
        return TraceResult(NAME, False, NO_GRID, EXPLANATION, details=details)
    others = [[g % 8, g // 8] for g in range(64) if g != best and all_lnfa[g] < 0]
    details["other_meaningful_grids"] = others
    # A JPEG's own grid, (0, 0), is expected everywhere: never foreign.
    cells, regions = foreign_regions(votes, {best, 0} if photo.is_jpeg else {best})
    local = [i + 1 for i, r in enumerate(regions) if r["share"] <= MAX_LOCAL_SHARE]
    details["regions"] = sorted((regions[i - 1] for i in local), key=lambda r: r["log10_nfa"])[:20]
    details["whole_photo_grids"] = [r for r in regions if r["share"] > MAX_LOCAL_SHARE][:20]
    stored = _cells_to_pixels(np.isin(cells, local), h, w)
    found = details["regions"]
    score = min(1.0, 0.5 - 0.05 * found[0]["log10_nfa"]) if found else 0.0
    dx, dy = details["grid_origin"]
    if found:
        parts = [f"{len(found)} region(s) on another JPEG grid (best NFA 1e{found[0]['log10_nfa']:.0f})"]
    else:
        parts = ["one JPEG grid throughout"]
    if (dx, dy) != (0, 0):
        when = "after an earlier compression, then re-saved" if photo.is_jpeg else "after its last JPEG compression"
        parts.append(f"main grid shifted by ({dx}, {dy}): likely cropped {when}")
    if details["whole_photo_grids"]:
        parts.append("a second grid over most of the photo: cropped between two compressions, or a very large paste")
    if not photo.is_jpeg:
        parts.append("not a JPEG file, but its pixels show a JPEG grid")
    return TraceResult(
        NAME,
        True,
        "; ".join(parts),
        EXPLANATION,
        map=photo.to_display(stored),
        score=float(score),
        details=details,
    )
