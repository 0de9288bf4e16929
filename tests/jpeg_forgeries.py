"""Photos with known compression histories, made by the tests (shared by the trace tests).

The pixels come from the repository's example photos, downscaled by two with area averaging,
which erases their own 8x8 JPEG quantization (the aligned double-JPEG trace sees no earlier
compression in them). A weak period-4 pattern survives, which the grid detector can still lock on
to: tests of the grid trace that need pixels never compressed shrink by three instead.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@lru_cache(maxsize=8)
def photo_pixels(name: str = "authentic-hats") -> np.ndarray:
    """An example photo as RGB uint8, halved (area average): natural content, no earlier JPEG
    quantization."""
    rgb = np.asarray(Image.open(EXAMPLES / f"{name}.jpg").convert("RGB"))
    h, w = rgb.shape[:2]
    out = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    out.setflags(write=False)
    return out


def encode_jpeg(rgb: np.ndarray, quality: int, **kw) -> bytes:
    """JPEG bytes as Pillow (libjpeg, standard IJG tables, 4:2:0) writes them."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "JPEG", quality=int(quality), **kw)
    return buf.getvalue()


def encode_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "PNG")
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def compressed(rgb: np.ndarray, quality: int | None) -> np.ndarray:
    """``rgb`` after one JPEG round trip at ``quality`` (None: unchanged)."""
    return rgb if quality is None else decode(encode_jpeg(rgb, quality))


def splice(
    *,
    host_quality: int | None,
    donor_quality: int | None,
    final_quality: int,
    box: tuple[int, int, int, int] = (64, 64, 96, 128),
    shift: tuple[int, int] = (0, 0),
    host: str = "authentic-hats",
    donor: str = "copymove-sails",
) -> tuple[bytes, np.ndarray]:
    """A splice with a known history, and its mask (bool, True = pasted).

    The host is compressed at ``host_quality`` (None: never), a region ``box = (y, x, h, w)`` is
    replaced by the donor's pixels after the donor's own compression at ``donor_quality``, and the
    result is saved at ``final_quality``. ``shift = (dy, dx)`` takes the donor's pixels from
    ``(y + dy, x + dx)``: a shift that is not a multiple of 8 misaligns the donor's 8x8 grid with
    the host's, as a paste from another JPEG usually does.
    """
    h_rgb = compressed(photo_pixels(host), host_quality).copy()
    d_rgb = compressed(photo_pixels(donor), donor_quality)
    y, x, bh, bw = box
    dy, dx = shift
    for rgb, (oy, ox), who in ((h_rgb, (0, 0), host), (d_rgb, (dy, dx), donor)):
        if min(y + oy, x + ox) < 0 or y + oy + bh > rgb.shape[0] or x + ox + bw > rgb.shape[1]:
            raise ValueError(f"box {box} shifted by {(oy, ox)} leaves the {who} photo ({rgb.shape[1]}x{rgb.shape[0]})")
    h_rgb[y : y + bh, x : x + bw] = d_rgb[y + dy : y + dy + bh, x + dx : x + dx + bw]
    mask = np.zeros(h_rgb.shape[:2], bool)
    mask[y : y + bh, x : x + bw] = True
    return encode_jpeg(h_rgb, final_quality), mask


def iou(flagged: np.ndarray, mask: np.ndarray) -> float:
    union = np.logical_or(flagged, mask).sum()
    return float(np.logical_and(flagged, mask).sum() / union) if union else 1.0
