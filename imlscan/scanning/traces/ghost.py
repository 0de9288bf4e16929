"""JPEG ghosts: a region that was JPEG-compressed at a lower quality than the rest of the photo.

Method (Farid, "Exposing digital forgeries from JPEG ghosts", IEEE TIFS 2009): re-saving a JPEG
at quality q changes it little where its pixels were already quantized at q. A region compressed
once at q0, pasted (on the grid) and saved again at a higher q1, therefore shows a dip of the
re-save error at q = q0 -- its "ghost" -- while the rest of the photo's error grows steadily as q
decreases. For each tried quality the stored-orientation luminance is re-saved with libjpeg
(OpenCV) and the squared difference is averaged over 16 x 16 windows (b = 16, stride 8, on the
8x8 grid).

The qualities tried are the file's own (estimated from its luminance table) and nine more in
steps of 5 below it (none under 30); the first and last serve only as neighbours. Farid
normalizes each quality's difference map to [0, 1] and reads the maps by eye; here the reading is
made a test. In log space each window's error at q is first taken relative to the photo's median
window at the same q, which removes the photo's own trend (and a ghost the whole photo shares,
as after two saves). A window's *dip* at q is how much lower that relative error is than at both
neighbouring qualities: a local minimum in quality, which a window's texture (busy windows change
more at every q) does not make. Dips are averaged over the scored windows of each 3 x 3
neighbourhood and also expressed as a z-score (minus the photo's median dip at q, over 1.4826 x
its MAD). A window is flagged at q when its dip is at least log(1.5) (an error 1.5 times lower
than at both neighbours) and its z-score at least 3; the map value is
min(dip / (2 log 1.5), z / 6), clipped to [0, 1], so that 0.5 is the flag. Flagged windows count
only in connected areas of at least 8 windows and 0.1% of the photo's windows; the ghost quality
is the one with the largest such area, and the map is that quality's (values of smaller areas
kept just under 0.5). Windows too smooth to change at the lowest tried quality (mean squared
error under 1 grey level) are not scored. Windows are turned back to pixels by averaging, for
each 8x8 block, the windows covering it.

Luminance only: the ghost lives in the luminance quantization, and one channel costs a third.
"""

from __future__ import annotations

import cv2
import numpy as np

from imlscan.jpegtables import jpeg_file_quality
from imlscan.scanning.traces.base import Photo, TraceResult, timed

NAME = "ghost"
EXPLANATION = (
    "Where the photo looks like it was saved at a lower JPEG quality before the rest: a region pasted from a "
    "more compressed JPEG. Silent when the paste was of higher quality, off the 8x8 grid, or the last save "
    "was much coarser."
)
NO_GHOST = "no ghost found"
SCORE_DEFINITION = (
    "0 without a ghost; otherwise the mean z-score over the ghost area / 6, capped at 1 (0.5 = z of 3, the flag)"
)
STEP = 5  # quality step between re-saves
COUNT = 10  # number of re-saves, the file's own quality first
LOWEST = 30  # lowest quality tried
Z_FLAG = 3.0  # z-score of a flagged window (map 0.5)
DIP_FLAG = float(np.log(1.5))  # and its dip: an error 1.5 times lower than at both neighbouring qualities
MIN_WINDOWS = 8  # smallest flagged area, in windows (connected, 8-neighbour) ...
MIN_SHARE = 0.001  # ... and at least this share of the windows: more windows, more chance areas
MIN_ERROR = 1.0  # mean squared error at the lowest quality under which a window is not scored
EPS = 0.05  # added to mean squared errors before the log (grey levels squared)


def file_quality(photo: Photo) -> int | None:
    """The IJG quality of the file's luminance table, or None when it cannot be read.

    From ``photo.jpeg`` when another trace has already read the file's coefficients (the same
    ``estimate_quality``), otherwise from the header alone through Pillow (no coefficient read)."""
    cached = vars(photo).get("jpeg")
    if cached is not None and not getattr(cached, "error", None):
        luma = getattr(cached, "qualities", {}).get("luma")
        if luma and luma.get("quality"):
            return int(luma["quality"])
    return jpeg_file_quality(photo.data)


def qualities_below(quality: int) -> list[int]:
    """The re-save qualities: the file's own, then ``COUNT - 1`` steps of ``STEP`` below it, none
    under ``LOWEST``. The first and last are only neighbours: a ghost is looked for in between."""
    return [q for q in (quality - STEP * k for k in range(COUNT)) if q >= LOWEST]


def window_errors(luma: np.ndarray, qualities: list[int]) -> np.ndarray:
    """Mean squared re-save error over 16 x 16 windows (stride 8): (len(qualities), H/8 - 1, W/8 - 1)."""
    hb, wb = luma.shape[0] // 8, luma.shape[1] // 8
    src = np.ascontiguousarray(luma[: hb * 8, : wb * 8])
    out = np.empty((len(qualities), hb - 1, wb - 1), np.float32)
    for i, q in enumerate(qualities):
        ok, enc = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        if not ok:
            raise ValueError(f"JPEG re-save at quality {q} failed")
        diff = cv2.absdiff(cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE), src)
        # Area interpolation by exactly 8 is the mean of each 8x8 block.
        blocks = cv2.resize(cv2.multiply(diff, diff, dtype=cv2.CV_32F), (wb, hb), interpolation=cv2.INTER_AREA)
        out[i] = (blocks[:-1, :-1] + blocks[1:, :-1] + blocks[:-1, 1:] + blocks[1:, 1:]) / 4.0
    return out


def ghost_scores(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each inner quality (all but the first and last) and window: its dip, i.e. how much
    lower (log) its error is than at both neighbouring qualities, each relative to the photo's
    median window, averaged over the scored windows of its 3 x 3 neighbourhood; the dip as a
    z-score (minus the photo's median dip, over 1.4826 x MAD of the windows' own dips); and the
    mask of windows that are scored."""
    logs = np.log(errors + EPS)
    valid = errors[-1] >= MIN_ERROR
    shape = logs[1:-1].shape
    dips, z = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    if valid.sum() < 2 * MIN_WINDOWS:
        return dips, z, valid
    centred = logs - np.median(logs[:, valid], axis=1)[:, None, None]
    dip = np.minimum(centred[:-2], centred[2:]) - centred[1:-1]  # > 0: a local minimum in quality
    count = cv2.boxFilter(valid.astype(np.float32), -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    for i in range(len(dip)):
        d = dip[i][valid]
        med = float(np.median(d))
        spread = max(1.4826 * float(np.median(np.abs(d - med))), 0.02)
        own = np.where(valid, dip[i], 0.0).astype(np.float32)
        total = cv2.boxFilter(own, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
        dips[i] = np.where(valid, total / np.maximum(count, 1), 0.0)
        z[i] = np.where(valid, (dips[i] - med) / spread, 0.0)
    return dips, z, valid


def window_map(dips: np.ndarray, z: np.ndarray) -> np.ndarray:
    """0.5 where both the dip reaches ``DIP_FLAG`` and its z-score ``Z_FLAG``, in [0, 1]."""
    return np.clip(np.minimum(dips / (2 * DIP_FLAG), z / (2 * Z_FLAG)), 0.0, 1.0)


def _large_areas(flag: np.ndarray) -> np.ndarray:
    """``flag`` without its connected areas of fewer than ``MIN_WINDOWS`` windows (or ``MIN_SHARE``
    of all windows, whichever is more)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(flag.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= max(MIN_WINDOWS, MIN_SHARE * flag.size)
    keep[0] = False
    return keep[labels]


def _windows_to_pixels(values: np.ndarray, h: int, w: int) -> np.ndarray:
    """Window values (stride 8, 16 x 16) to an H x W map: each pixel takes the mean of the windows
    covering its 8 x 8 block (four inside, fewer on the border)."""
    hb, wb = values.shape[0] + 1, values.shape[1] + 1
    padded = np.pad(values, 1, mode="constant")
    count = np.pad(np.ones_like(values), 1, mode="constant")
    s = padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]
    c = count[:-1, :-1] + count[1:, :-1] + count[:-1, 1:] + count[1:, 1:]
    per_block = (s / np.maximum(c, 1)).astype(np.float32)
    full = np.zeros((h, w), np.float32)
    full[: hb * 8, : wb * 8] = np.repeat(np.repeat(per_block, 8, axis=0), 8, axis=1)
    return full


@timed
def trace_ghost(photo: Photo) -> TraceResult:
    """JPEG ghosts (see the module)."""
    if not photo.is_jpeg:
        return TraceResult(NAME, False, "not a JPEG", EXPLANATION)
    quality = file_quality(photo)
    if quality is None:
        return TraceResult(NAME, False, "not applicable: no readable JPEG quantization table", EXPLANATION)
    qualities = qualities_below(quality)
    luma = np.clip(np.rint(photo.luma_stored), 0, 255).astype(np.uint8)
    h, w = luma.shape
    details: dict = {"file_quality": quality, "qualities": qualities, "score_definition": SCORE_DEFINITION}
    if len(qualities) < 3:
        return TraceResult(
            NAME, False, f"JPEG quality {quality} too low to look for lower ones", EXPLANATION, details=details
        )
    if h < 48 or w < 48:
        return TraceResult(NAME, False, "image too small (under 48 pixels on a side)", EXPLANATION, details=details)
    dips, z, valid = ghost_scores(window_errors(luma, qualities))
    values = window_map(dips, z)
    areas = np.stack([_large_areas(v >= 0.5) for v in values])
    size = areas.sum(axis=(1, 2))
    best = int(np.argmax(size))
    details["scored_share"] = round(float(valid.mean()), 4)
    details["flagged_windows_per_quality"] = {str(q): int(s) for q, s in zip(qualities[1:-1], size)}
    soft = values[best]
    if size[best] == 0:
        details["ghost_quality"] = None
        # Below the flag everywhere: isolated windows above it are kept just under 0.5.
        stored = _windows_to_pixels(np.minimum(soft, 0.49), h, w)
        return TraceResult(NAME, True, NO_GHOST, EXPLANATION, map=photo.to_display(stored), score=0.0, details=details)
    soft = np.where(areas[best], soft, np.minimum(soft, 0.49))
    ghost_q = qualities[best + 1]
    details["ghost_quality"] = ghost_q
    details["ghost_share"] = round(float(areas[best].mean()), 4)
    score = float(soft[areas[best]].mean())
    stored = _windows_to_pixels(soft, h, w)
    reason = (
        f"ghost at quality {ghost_q} over {100 * areas[best].mean():.1f}% of the photo (file saved at about {quality})"
    )
    return TraceResult(NAME, True, reason, EXPLANATION, map=photo.to_display(stored), score=score, details=details)
