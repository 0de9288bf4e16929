"""``imlscan scan`` and ``imlscan batch``."""

from __future__ import annotations

from imlscan.cli.app import app, not_built


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def scan() -> None:
    """Scan images for manipulated regions.

    Example: imlscan scan photo.jpg --overlay
    """
    not_built("scan", 5)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def batch() -> None:
    """Scan a folder of images, resumably.

    Example: imlscan batch photos/ --out results/
    """
    not_built("batch", 5)
