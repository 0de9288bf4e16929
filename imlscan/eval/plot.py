"""Small line plots drawn with OpenCV, written as PNG.

imlscan's runtime dependencies stay small (no matplotlib): ROC curves, F1-vs-threshold and
robustness curves only need axes, ticks, lines, markers and a legend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np

from imlscan.fsutil import atomic_write_bytes

WIDTH, HEIGHT = 800, 560
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 84, 28, 56, 72
FONT = cv2.FONT_HERSHEY_SIMPLEX
# Colour-blind-friendly palette (Okabe-Ito), as BGR.
PALETTE = [(178, 114, 0), (0, 94, 213), (115, 158, 0), (167, 121, 204), (233, 180, 86), (66, 228, 240), (0, 0, 0)]
GREY = (200, 200, 200)
INK = (40, 40, 40)


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(target - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.6g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.1e}"


def _limits(values: list[float], lim: tuple[float, float] | None) -> tuple[float, float]:
    if lim is not None:
        return float(lim[0]), float(lim[1])
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.1 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def render_line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    diagonal: bool = False,
    markers: bool | None = None,
    legend: str = "upper right",
) -> np.ndarray:
    """The plot as a ``HEIGHT x WIDTH x 3`` BGR image; nan points break a line."""
    xs_all = [float(v) for xs, _ in series.values() for v in xs]
    ys_all = [float(v) for _, ys in series.values() for v in ys]
    x0, x1 = _limits(xs_all, xlim)
    y0, y1 = _limits(ys_all, ylim)
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    left, right, top, bottom = MARGIN_L, WIDTH - MARGIN_R, MARGIN_T, HEIGHT - MARGIN_B

    def px(x: float, y: float) -> tuple[int, int]:
        u = left + (x - x0) / (x1 - x0) * (right - left)
        v = bottom - (y - y0) / (y1 - y0) * (bottom - top)
        return int(round(u)), int(round(v))

    for t in nice_ticks(x0, x1):
        u, _ = px(t, y0)
        cv2.line(img, (u, top), (u, bottom), GREY, 1)
        label = _fmt(t)
        (tw, th), _ = cv2.getTextSize(label, FONT, 0.45, 1)
        cv2.putText(img, label, (u - tw // 2, bottom + th + 8), FONT, 0.45, INK, 1, cv2.LINE_AA)
    for t in nice_ticks(y0, y1):
        _, v = px(x0, t)
        cv2.line(img, (left, v), (right, v), GREY, 1)
        label = _fmt(t)
        (tw, th), _ = cv2.getTextSize(label, FONT, 0.45, 1)
        cv2.putText(img, label, (left - tw - 8, v + th // 2), FONT, 0.45, INK, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), INK, 1)
    if diagonal:
        cv2.line(img, px(x0, y0), px(x1, y1), GREY, 1, cv2.LINE_AA)

    for k, (xs, ys) in enumerate(series.values()):
        color = PALETTE[k % len(PALETTE)]
        pts = [(float(x), float(y)) for x, y in zip(xs, ys)]
        show_markers = markers if markers is not None else len(pts) <= 30
        segment: list[tuple[int, int]] = []
        for x, y in pts + [(math.nan, math.nan)]:
            if math.isfinite(x) and math.isfinite(y):
                segment.append(px(x, y))
                continue
            if len(segment) > 1:
                cv2.polylines(img, [np.array(segment, np.int32)], False, color, 2, cv2.LINE_AA)
            if show_markers:
                for p in segment:
                    cv2.circle(img, p, 4, color, -1, cv2.LINE_AA)
            segment = []

    if series:
        rows = list(series)
        widths = [cv2.getTextSize(n, FONT, 0.5, 1)[0][0] for n in rows]
        bw, bh = max(widths) + 44, 22 * len(rows) + 8
        bx = right - bw - 8
        by = top + 8 if legend == "upper right" else bottom - bh - 8
        cv2.rectangle(img, (bx, by), (bx + bw, by + bh), (255, 255, 255), -1)
        cv2.rectangle(img, (bx, by), (bx + bw, by + bh), GREY, 1)
        for k, name in enumerate(rows):
            y = by + 18 + 22 * k
            cv2.line(img, (bx + 8, y - 5), (bx + 30, y - 5), PALETTE[k % len(PALETTE)], 3, cv2.LINE_AA)
            cv2.putText(img, name, (bx + 36, y), FONT, 0.5, INK, 1, cv2.LINE_AA)

    (tw, _), _ = cv2.getTextSize(title, FONT, 0.65, 2)
    cv2.putText(img, title, (max(4, (WIDTH - tw) // 2), 34), FONT, 0.65, INK, 2, cv2.LINE_AA)
    (tw, _), _ = cv2.getTextSize(xlabel, FONT, 0.55, 1)
    cv2.putText(img, xlabel, ((left + right - tw) // 2, HEIGHT - 20), FONT, 0.55, INK, 1, cv2.LINE_AA)
    (tw, th), _ = cv2.getTextSize(ylabel, FONT, 0.55, 1)
    strip = np.full((th + 10, tw + 4, 3), 255, np.uint8)
    cv2.putText(strip, ylabel, (2, th + 3), FONT, 0.55, INK, 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    sh, sw = strip.shape[:2]
    y_at = max(0, (top + bottom - sh) // 2)
    sh = min(sh, HEIGHT - y_at)
    img[y_at : y_at + sh, 8 : 8 + sw] = strip[:sh]
    return img


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    **kw,
) -> None:
    """Draw ``{name: (xs, ys)}`` as lines and write a PNG to ``path`` atomically.

    Extra keywords: ``xlim``, ``ylim`` (axis ranges), ``diagonal`` (the chance line of a ROC
    plot), ``markers`` (default: on for short series) and ``legend`` ("upper right" or
    "lower right").
    """
    img = render_line_plot(series, title=title, xlabel=xlabel, ylabel=ylabel, **kw)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("OpenCV could not encode the plot as PNG")
    atomic_write_bytes(path, buf.tobytes())
