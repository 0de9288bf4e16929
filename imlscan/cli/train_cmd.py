"""``imlscan train`` and ``imlscan synth``."""

from __future__ import annotations

from imlscan.cli.app import app, not_built


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train() -> None:
    """Train or fine-tune a model.

    Example: imlscan train --data photos/ --model sparsevit-t --out runs/exp1
    """
    not_built("train", 7)
