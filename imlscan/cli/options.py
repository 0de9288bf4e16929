"""Options that several commands share, declared once so that their flags and help agree."""

from __future__ import annotations

import typer

COPY_MOVE = typer.Option(
    None,
    "--copy-move/--no-copy-move",
    help="Fuse the copy-move detectors' maps with the model's (default: as the weights say; "
    "--no-copy-move is faster on CPUs).",
    show_default=False,
)
KEYPOINTS = typer.Option(
    None,
    "--keypoints/--no-keypoints",
    help="With the copy-move fusion: also run the keypoint detector (rotated, scaled or mirrored copies; "
    "default: as the weights say). It runs on the CPU: --no-keypoints keeps the dense matcher alone, "
    "faster on GPU machines.",
    show_default=False,
)
WORKERS = typer.Option(
    2,
    "--workers",
    min=0,
    help="Decoding processes (0: the main process); on a GPU they also run the keypoint copy-move detector.",
)
