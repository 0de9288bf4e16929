"""Pictures of the forensic traces: each trace's map as an image with a title, a one-line
caption and a colour legend, for ``imlscan traces --out`` and the HTML report's trace panels.

Rendering only, like ``report``: it reads ``TraceResult``s and never computes a trace.
"""

from __future__ import annotations

import html as htmllib
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from imlscan.fsutil import atomic_write_bytes
from imlscan.imageio import encode_png
from imlscan.scanning.traces import TraceResult

PANEL_MAX_SIDE = 800
TITLES = {
    "adq": "Aligned double JPEG",
    "grid": "JPEG grid",
    "ghost": "JPEG ghosts",
    "noise": "Noise level",
    "ela": "Error level analysis (weak evidence)",
}


def _fit(a: np.ndarray, max_side: int) -> np.ndarray:
    h, w = a.shape[:2]
    k = min(1.0, max_side / max(h, w))
    if k >= 1.0:
        return a
    return cv2.resize(a, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255)) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def render_trace(result: TraceResult, rgb: np.ndarray, *, max_side: int = PANEL_MAX_SIDE) -> np.ndarray:
    """One trace as a picture: its map in the inferno colours beside a legend bar (0 = nothing
    found, 1 = strongest sign), the title on top and the trace's verdict line underneath; a trace
    that does not apply is the greyed photo with the reason."""
    photo = _fit(rgb, max_side)
    h, w = photo.shape[:2]
    if result.applies and result.map is not None:
        m = _fit(np.clip(np.asarray(result.map, np.float32), 0, 1), max_side)
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        body = cv2.applyColorMap(np.round(m * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
    else:
        grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        body = np.repeat((grey // 3 + 40)[..., None], 3, axis=2).astype(np.uint8)
    bar_w, pad = max(12, w // 40), 8
    legend = np.zeros((h, bar_w + 52, 3), np.uint8)
    ramp = np.linspace(255, 0, h).astype(np.uint8)[:, None].repeat(bar_w, axis=1)
    legend[:, :bar_w] = cv2.applyColorMap(ramp, cv2.COLORMAP_INFERNO)[:, :, ::-1]
    s = 0.4
    _text(legend, "1", (bar_w + 4, 14), s)
    _text(legend, "0.5", (bar_w + 4, h // 2 + 4), s)
    _text(legend, "0", (bar_w + 4, h - 4), s)
    top, bottom = 26, 22
    out = np.zeros((h + top + bottom, w + pad + legend.shape[1], 3), np.uint8)
    out[top : top + h, :w] = body
    out[top : top + h, w + pad :] = legend
    title = TITLES.get(result.name, result.name)
    if result.score is not None:
        title += f"  score {result.score:.2f}"
    _text(out, title, (4, 18), 0.55)
    line = result.reason if len(result.reason) < 110 else result.reason[:107] + "..."
    _text(out, ("" if result.applies else "not applicable: ") + line, (4, top + h + 16), 0.4, (220, 220, 220))
    return out


def write_trace_pictures(
    results: Mapping[str, TraceResult], rgb: np.ndarray, out_dir: str | Path, stem: str
) -> dict[str, Path]:
    """Write ``STEM.trace-NAME.png`` for every trace (atomically); returns name -> path."""
    out_dir = Path(out_dir)
    paths = {}
    for name, result in results.items():
        path = out_dir / f"{stem}.trace-{name}.png"
        atomic_write_bytes(path, encode_png(render_trace(result, rgb)))
        paths[name] = path
    return paths


def trace_panels_html(results: Mapping[str, TraceResult], pictures: Mapping[str, str]) -> str:
    """The HTML report's traces section: one panel per trace (picture as a data URI, the
    explanation, the reason), and the reading guidance in a journalist's words."""
    e = htmllib.escape
    parts = [
        "<h2>Forensic traces</h2>",
        "<p class='note'>Each panel reads the original file at its own resolution: what its JPEG "
        "compression, its 8x8 grid and its noise say about where parts of it came from. A trace that "
        "does not apply to this file says why. Bright areas are worth a look; dark areas are not proof "
        "that nothing was changed. Error level analysis is shown because other tools show it; it is "
        "weak evidence and never enters the map above.</p>",
        "<div class='traces'>",
    ]
    for name, r in results.items():
        img = f"<img src='{pictures[name]}' alt='{e(TITLES.get(name, name))}'>" if name in pictures else ""
        parts.append(
            f"<figure class='trace'>{img}<figcaption><b>{e(TITLES.get(name, name))}</b>: "
            f"{e(r.explanation)}<br><small>{'' if r.applies else 'not applicable: '}{e(r.reason)}</small>"
            "</figcaption></figure>"
        )
    parts.append("</div>")
    return "".join(parts)
