"""The one way the commands build a ``Predictor``, and the one warning before any result.

``scan``, ``batch`` and ``eval`` check their cheap options first, then load the model once, and
say loudly, before any result, when the weights are untrained or run off their protocol.
"""

from __future__ import annotations

from typing import Any

from imlscan.cli.app import err_console
from imlscan.defaults import DEFAULT_OVERLAP, DEFAULT_TILE, MODES
from imlscan.errors import UsageError


def load_predictor(
    weights: str | None,
    device: str,
    precision: str,
    *,
    mode: str | None = None,
    size: int | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    compile: str = "off",
    **kw: Any,
) -> Any:
    """Load ``weights`` on ``device`` and wrap them in a ``Predictor``.

    Arguments:
        weights: a file, a registered name, ``hf-hub:...`` or ``None`` for the default weights.
        mode, size: the preprocessing; ``None`` keeps the weights' own protocol.
        tile, overlap: native-resolution tiling (``tile=0``: never tile).
        compile: ``off`` or a compile variant of ``imlscan.models.fuse.COMPILE_VARIANTS``.
        kw: the rest of ``Predictor``'s options (``batch_size``, ``copy_move``, ``keypoints``).

    Returns:
        The ``Predictor``; a bad ``mode``, tiling or compile variant is refused before the model is
        loaded.
    """
    if mode is not None and mode not in MODES:
        raise UsageError(f"unknown --mode {mode!r}", hint="use resize or native")
    from imlscan.models.fuse import compile_variant
    from imlscan.scanning.predict import Predictor, check_tiling
    from imlscan.weights.store import load_model

    if tile:
        check_tiling(tile, overlap)
    variant = compile_variant(compile)
    model = load_model(weights, device, precision)
    return Predictor(model, mode=mode, size=size, tile=tile or None, overlap=overlap, compile=variant, **kw)


def announce(predictor: Any, *, protocol_notes: bool = True) -> None:
    """Warn before any result when the weights are untrained; with ``protocol_notes``, also when
    the run departs from the weights' protocol or precision (``eval`` reports those itself)."""
    from imlscan.scanning.predict import UNTRAINED_WARNING

    info = predictor.weights_info
    if info is not None and not info.trained:
        err_console.print(f"[bold red]WARNING: {UNTRAINED_WARNING}[/]", soft_wrap=True)
    if not protocol_notes:
        return
    note = predictor.describe((1, 1))["override_note"]
    if note:
        err_console.print(f"[yellow]note: {note}[/]", soft_wrap=True)
    elif info is not None:
        from imlscan.scanning.result import rank_precision_note

        if mismatch := rank_precision_note((info.metadata or {}).get("calibration"), predictor.precision):
            err_console.print(f"[yellow]note: {mismatch}[/]", soft_wrap=True)
