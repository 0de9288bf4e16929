"""``imlscan bench``."""

from __future__ import annotations

from imlscan.cli.app import app, not_built


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench() -> None:
    """Benchmark inference speed and memory.

    Example: imlscan bench --model sparsevit-b --batch 1,8
    """
    not_built("bench", 9)
