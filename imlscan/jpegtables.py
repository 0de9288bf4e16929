"""JPEG quantization tables: IJG's standard tables, the quality a table corresponds to on the IJG
(libjpeg) scale, and whether it is a standard table scaled.

Cameras and phones write tables of their own; editors and most software write IJG's standard
tables scaled by a quality factor, so "standard tables at quality 92" is itself a fact about the
software that saved the file last. A leaf module: the synthetic-data generator, the forensic
traces and the provenance reader all use it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

# ITU T.81 Annex K tables (natural order), which libjpeg scales by its quality factor.
IJG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.int32,
)
IJG_CHROMA = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ],
    np.int32,
)


def ijg_table(quality: int, chroma: bool = False) -> np.ndarray:
    """The table libjpeg writes at ``quality`` (1-100), baseline-limited to 1..255."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    base = IJG_CHROMA if chroma else IJG_LUMA
    return np.clip((base * scale + 50) // 100, 1, 255).astype(np.int32)


_TABLES = {c: np.stack([ijg_table(q, c) for q in range(1, 101)]) for c in (False, True)}


def estimate_quality(table: np.ndarray, chroma: bool = False) -> tuple[int, bool, float]:
    """The IJG quality whose scaled standard table is closest to ``table``.

    Arguments:
        table: an 8 x 8 quantization table in natural (row-major) order.
        chroma: compare with the chrominance table instead of the luminance one.

    Returns:
        ``(quality, standard, error)``: the nearest quality (1-100), whether ``table`` is exactly
        that scaled standard table, and the mean absolute difference from it in table units
        (0 for standard tables; cameras' own tables typically differ by one or more).
    """
    t = np.asarray(table, np.int32).reshape(8, 8)
    diff = np.abs(_TABLES[bool(chroma)] - t[None]).mean(axis=(1, 2))
    best = int(np.argmin(diff))
    # Ties (flat tables at very high qualities) resolve to the highest quality.
    best = int(np.flatnonzero(diff == diff[best])[-1])
    return best + 1, bool(diff[best] == 0), float(diff[best])


def jpeg_file_quality(data: bytes) -> int | None:
    """The IJG quality of a JPEG's luminance table (``estimate_quality``), or None when the
    bytes are not a readable JPEG."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # opening reads EXIF; a corrupt block warns, the tables are fine
            with Image.open(io.BytesIO(data)) as im:
                tables = getattr(im, "quantization", None) if im.format == "JPEG" else None
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if not tables or 0 not in tables:
        return None
    return estimate_quality(np.asarray(tables[0]).reshape(8, 8))[0]
