"""Error level analysis (ELA): how much each area changes when the photo is saved again as JPEG.

Shown as a view for comparison with other tools, never fused into a verdict: the difference is
driven by content (edges, fine texture and saturated colours change most on any re-save) far
more than by editing, so it is easy to misread (Krawetz, "A picture's worth", Black Hat 2007,
introduced it; later evaluations found it unreliable as evidence on its own).

The photo (displayed orientation) is re-saved once with libjpeg through OpenCV at quality 95,
4:2:0 chroma as most cameras and editors write. 95 rather than the 90 often quoted: phones and
cameras mostly save at 90-98, and a re-save at about the file's own quality leaves the areas
that share its compression history almost unchanged, so that a paste with another history (its
own 8x8 grid, a lower quality) changes more. A re-save at a lower quality than the file's adds a
larger error of its own everywhere and inverts the picture (measured on the test fixtures: host
and final save at 95, paste from a quality-60 JPEG off the grid: mean difference 0.94 inside vs
0.43 outside at 95, but 1.99 vs 2.82 at 90). The map is the per-pixel maximum over R, G, B of
``|original - resaved|``, divided by the photo's own 99.5th percentile of that difference (at
least 2 grey levels, so that a near-lossless re-save is not stretched into noise), clipped to
[0, 1]. For a JPEG, ``details`` also gives the quality its luminance table corresponds to.
"""

from __future__ import annotations

import cv2
import numpy as np

from imlscan.jpegtables import jpeg_file_quality
from imlscan.scanning.traces.base import Photo, TraceResult, timed

NAME = "ela"
QUALITY = 95
PERCENTILE = 99.5
MIN_SCALE = 2.0  # grey levels
STRIP_ROWS = 1024  # rows per strip for the difference (a multiple of 16: JPEG's MCU rows)
EXPLANATION = (
    "Error level analysis: how much each area changes when the photo is saved again as JPEG. Easily "
    "misread: edges, textures and colours change more without any edit; shown for comparison with other "
    "tools, never used in this report's verdict."
)


def resave(rgb: np.ndarray, quality: int = QUALITY) -> np.ndarray:
    """``rgb`` after one JPEG round trip through libjpeg (OpenCV) at ``quality``, 4:2:0."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        int(quality),
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    ]
    ok, buf = cv2.imencode(".jpg", bgr, params)
    if not ok:  # pragma: no cover - libjpeg refuses only impossible sizes
        raise RuntimeError("JPEG re-save failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


@timed
def trace_ela(photo: Photo) -> TraceResult:
    """Error level analysis view of ``photo`` (displayed orientation); never fused."""
    rgb = photo.decoded.rgb
    h, w = rgb.shape[:2]
    again = resave(rgb)
    diff = np.empty((h, w), np.uint8)
    for y in range(0, h, STRIP_ROWS):
        a = rgb[y : y + STRIP_ROWS]
        b = again[y : y + STRIP_ROWS]
        diff[y : y + STRIP_ROWS] = cv2.absdiff(a, b).max(axis=2)
    hist = np.bincount(diff.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    level = float(np.searchsorted(cdf, cdf[-1] * PERCENTILE / 100.0))
    scale = max(level, MIN_SCALE)
    ela_map = np.minimum(diff.astype(np.float32) / scale, 1.0)
    details = {
        "resave_quality": QUALITY,
        "percentile": PERCENTILE,
        "scale_grey_levels": scale,
        "mean_difference": round(float(diff.mean()), 4),
        "file_jpeg_quality": jpeg_file_quality(photo.data),
    }
    reason = f"re-saved at JPEG quality {QUALITY}; differences shown up to {scale:g} grey levels"
    return TraceResult(NAME, True, reason, EXPLANATION, map=ela_map, score=None, details=details, fusable=False)
