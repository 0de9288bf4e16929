"""``imlscan eval``."""

from __future__ import annotations

from imlscan.cli.app import app, not_built


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def eval_() -> None:
    """Evaluate a model on a dataset with pixel F1/AUC/IoU.

    Example: imlscan eval data/pairs.json --out eval/
    """
    not_built("eval", 6)
