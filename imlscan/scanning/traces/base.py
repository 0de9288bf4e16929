"""What every trace reads (``Photo``) and what every trace returns (``TraceResult``).

A trace reads the original file, never a resized copy: a resize erases the 8x8 JPEG grid and the
noise that these methods measure. Pixel-domain traces that depend on the JPEG grid work on the
*stored* orientation of the file (the grid is aligned there), then turn their map to the
*displayed* orientation (after EXIF rotation), in which every map of a scan is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from imlscan.imageio import DecodedImage, apply_orientation

# EXIF orientation -> the orientation that undoes it (2, 3, 4, 5, 7 undo themselves).
_INVERSE = {6: 8, 8: 6}


@dataclass
class TraceResult:
    """One trace's answer for one photo.

    Attributes:
        name: the trace's short name (``adq``, ``grid``, ``ghost``, ``noise``, ``ela``).
        applies: False when the trace cannot say anything about this file (then ``map`` and
            ``score`` are None and ``reason`` says why, e.g. "not a JPEG").
        reason: one line: why it does not apply, or what it found ("double compression found,
            primary quality about 75").
        map: H x W float32 in [0, 1] at the photo's displayed resolution: higher = more likely
            to come from another source or history than the rest of the photo.
        score: image-level score in [0, 1] (higher = stronger sign of manipulation).
        explanation: one line for a reader: what the trace shows and when it fails.
        details: facts worth reporting (estimated qualities, grid origin, ...); JSON-safe.
        fusable: False for views that are shown but never fused (error level analysis).
        seconds: time the trace took.
        version: the trace method's version (``traces.TRACE_VERSIONS``), so a report says which
            method made its map.
    """

    name: str
    applies: bool
    reason: str
    explanation: str
    map: np.ndarray | None = None
    score: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    fusable: bool = True
    seconds: float = 0.0
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The trace's entry in a scan's JSON report (no pixels)."""
        return {
            "name": self.name,
            "applies": self.applies,
            "reason": self.reason,
            "score": None if self.score is None else round(float(self.score), 6),
            "fusable": self.fusable,
            "explanation": self.explanation,
            "details": self.details,
            "seconds": round(self.seconds, 4),
            "version": self.version,
        }


class Photo:
    """A photo file as the traces read it: its bytes, its decoded pixels and, for a JPEG, its
    quantized DCT coefficients and tables (read once, on first use, and shared by every trace).

    Arguments:
        data: the file's bytes, exactly as stored.
        decoded: the decoded image (``imageio.decode_bytes(data)``): RGB in displayed orientation.
    """

    def __init__(self, data: bytes, decoded: DecodedImage):
        self.data = data
        self.decoded = decoded

    @property
    def is_jpeg(self) -> bool:
        return self.data[:3] == b"\xff\xd8\xff"

    @property
    def orientation(self) -> int:
        """The EXIF orientation that was applied to get the displayed pixels (1: none)."""
        o = self.decoded.orientation
        return int(o) if o and self.decoded.orientation_applied != "none" else 1

    def to_display(self, a: np.ndarray) -> np.ndarray:
        """A map in the file's stored orientation, turned as the displayed photo is."""
        return np.ascontiguousarray(apply_orientation(a, self.orientation))

    def to_stored(self, a: np.ndarray) -> np.ndarray:
        """A displayed-orientation array turned back to the file's stored orientation."""
        return np.ascontiguousarray(apply_orientation(a, _INVERSE.get(self.orientation, self.orientation)))

    @cached_property
    def rgb_stored(self) -> np.ndarray:
        """The decoded RGB in the stored orientation (where the JPEG grid is aligned)."""
        return self.to_stored(self.decoded.rgb)

    @cached_property
    def luma_stored(self) -> np.ndarray:
        """Luminance (ITU-R BT.601, as JPEG's Y) as float32, stored orientation."""
        rgb = self.rgb_stored.astype(np.float32)
        return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]

    @cached_property
    def jpeg(self) -> Any:
        """The JPEG's coefficients and tables (``traces.jpeg.JpegData``), or None when the file
        is not a JPEG. Raises nothing: an unreadable JPEG gives a ``JpegData`` whose ``error``
        says why, so each JPEG trace can report "not applicable: <reason>"."""
        if not self.is_jpeg:
            return None
        from imlscan.scanning.traces.jpeg import read_jpeg

        return read_jpeg(self.data)


def timed(fn: Callable[[Photo], TraceResult]) -> Callable[[Photo], TraceResult]:
    """Record how long a trace took in its result."""

    def run(photo: Photo) -> TraceResult:
        t0 = time.perf_counter()
        result = fn(photo)
        result.seconds = time.perf_counter() - t0
        return result

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run
