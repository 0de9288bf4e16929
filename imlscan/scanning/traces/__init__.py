"""Training-free forensic traces: what a photo file remembers of its own history.

Each trace reads the original file (its bytes, its decoded pixels and, for a JPEG, its quantized
DCT coefficients), never a resized copy, and returns a ``TraceResult``: a map at the photo's
displayed resolution, an image-level score, whether it applies to this file and a one-line
explanation. They complement the network, which sees the photo resized (the paper protocol
erases the 8x8 JPEG grid) and learned from synthetic forgeries only.

| name  | what it reads                                   | method                                    |
|-------|-------------------------------------------------|-------------------------------------------|
| adq   | JPEG coefficients: aligned double compression   | Lin et al. 2009; Bianchi, De Rosa & Piva 2011 |
| grid  | pixels: where the 8x8 JPEG grid is shifted      | ZERO, Nikoukhah et al. 2019 (a-contrario) |
| ghost | re-compressions at several qualities            | Farid 2009                                |
| noise | local noise level                               | Mahdian & Saic 2009                       |
| ela   | one re-compression (a view, never fused)        | error level analysis                      |
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module

import cv2

from imlscan.errors import UsageError
from imlscan.scanning.traces.base import Photo, TraceResult

# name -> (module, function); imported on first use.
TRACES: dict[str, tuple[str, str]] = {
    "adq": ("imlscan.scanning.traces.adq", "trace_adq"),
    "grid": ("imlscan.scanning.traces.grid", "trace_grid"),
    "ghost": ("imlscan.scanning.traces.ghost", "trace_ghost"),
    "noise": ("imlscan.scanning.traces.noise", "trace_noise"),
    "ela": ("imlscan.scanning.traces.ela", "trace_ela"),
}
DEFAULT_TRACES = tuple(TRACES)
# Raised when a trace's map changes for the same file (adq 2: 27 frequencies, a margin of 0.15 nats
# on 3 of them, evidence averaged over 3 x 3 blocks). Reports give each trace's version, a fusion rule
# records the versions it was fitted on (a file fitted on an older one is applied with a note, not
# silently), and batch rescans results made with another version.
TRACE_VERSIONS: dict[str, int] = {"adq": 2, "grid": 1, "ghost": 1, "noise": 1, "ela": 1}


def parse_trace_names(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"adq,grid"`` (or a list) -> ``("adq", "grid")``; ``None`` or ``"all"``: every trace;
    ``"none"``: no trace. Unknown names are a usage error naming the known ones."""
    if text is None:
        return DEFAULT_TRACES
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items in (["all"], []):
        return DEFAULT_TRACES if items else ()
    if items == ["none"]:
        return ()
    unknown = [t for t in items if t not in TRACES]
    if unknown:
        raise UsageError(f"unknown trace(s): {', '.join(unknown)}", hint=f"known: {', '.join(TRACES)}, all, none")
    return tuple(dict.fromkeys(items))


def compute_traces(photo: Photo, names: Iterable[str] = DEFAULT_TRACES) -> dict[str, TraceResult]:
    """Run the named traces on one photo, in the order given.

    Arguments:
        photo: the file as the traces read it (bytes + decoded pixels).
        names: trace names from ``TRACES``.

    Returns:
        name -> ``TraceResult``. A trace that fails on a hostile or unusual file answers
        "not applicable" with the reason instead of raising.
    """
    results: dict[str, TraceResult] = {}
    for name in names:
        module, fn = TRACES[name]
        trace = getattr(import_module(module), fn)
        try:
            results[name] = trace(photo)
            results[name].version = TRACE_VERSIONS[name]
        except (
            ValueError,
            RuntimeError,
            MemoryError,
            OverflowError,
            cv2.error,
        ) as e:  # a file no trace should crash on
            results[name] = TraceResult(
                name=name,
                applies=False,
                reason=f"trace failed on this file: {e}"[:300],
                explanation="",
                version=TRACE_VERSIONS[name],
            )
    return results


__all__ = ["DEFAULT_TRACES", "TRACES", "TRACE_VERSIONS", "Photo", "TraceResult", "compute_traces", "parse_trace_names"]
