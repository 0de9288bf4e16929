"""Command-line interface: a thin Typer layer over the Python API.

Each command lives in its own module and registers itself on the shared ``app``.
"""

from __future__ import annotations

from imlscan.cli import (  # noqa: F401  (registers the commands)
    bench_cmd,
    env_cmd,
    eval_cmd,
    meta_cmd,
    models_cmd,
    scan_cmd,
    traces_cmd,
    train_cmd,
    weights_cmd,
)
from imlscan.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
