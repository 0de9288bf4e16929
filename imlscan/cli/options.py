"""Options that several commands share, declared once so that their flags, defaults and help agree.

Defaults come from ``imlscan.defaults``, the library's own values, without importing torch.
"""

from __future__ import annotations

import typer

from imlscan.defaults import DEFAULT_MAX_PIXELS, DEFAULT_OVERLAP, DEFAULT_THRESHOLD, DEFAULT_TILE

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps."

# --- the weights and where they run ----------------------------------------------------------------

WEIGHTS = typer.Option(
    None,
    "--weights",
    "-w",
    help="A .safetensors file, a registered name or hf-hub:ORG/REPO. Default: the embedded weights.",
    show_default=False,
)
DEVICE = typer.Option("auto", "--device", help=DEVICE_HELP)
PRECISION = typer.Option("fp32", "--precision", help="fp32, bf16, fp16 or auto.")
COMPILE = typer.Option(
    "off",
    "--compile",
    help="torch.compile the network: off, freeze (weights as constants: 1.2-1.3x for sparsevit-b in bf16 on a "
    "2-core Xeon), compile, autotune or freeze-autotune. The first batch pays about a minute of compiling "
    "(cached on disk); the default weights' network is a small part of a scan, so off is the default.",
)

# --- how a photo is scanned ------------------------------------------------------------------------

THRESHOLD = typer.Option(DEFAULT_THRESHOLD, "--threshold", min=0.0, max=1.0, help="Flag pixels where p > threshold.")
MODE = typer.Option(
    None,
    "--mode",
    help="resize (the paper's protocol) or native (full resolution, tiled when large). "
    "Default: the protocol the weights were trained with.",
    show_default=False,
)
SIZE = typer.Option(None, "--size", help="Resize mode: side in pixels. Default: the weights' training size.")
TILE = typer.Option(
    DEFAULT_TILE, "--tile", help="Native resolution: tile side in pixels (multiple of 32; 0 = never tile)."
)
TILE_OVERLAP = typer.Option(DEFAULT_OVERLAP, "--tile-overlap", help="Native mode: minimum overlap between tiles.")
MAX_PIXELS = typer.Option(
    DEFAULT_MAX_PIXELS,
    "--max-pixels",
    min=0,
    help="Refuse images above this many pixels (decompression bombs). 0 = no limit.",
)
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
TRACES = typer.Option(
    True,
    "--traces/--no-traces",
    help="Compute the forensic traces from the file itself (JPEG history, grid, ghosts, noise, ELA): shown in the "
    "report, and fused with the map when the weights carry a fusion rule. --no-traces is faster.",
)
BATCH_SIZE = typer.Option(4, "--batch-size", min=1, help="Images per inference batch.")
WORKERS = typer.Option(
    2,
    "--workers",
    min=0,
    help="Decoding processes (0: the main process); on a GPU they also run the keypoint copy-move detector.",
)

# --- what scan and batch write ---------------------------------------------------------------------

OVERLAY = typer.Option(True, "--overlay/--no-overlay", help="Write NAME.overlay.png: the photo under a heat map.")
MASK = typer.Option(False, "--mask", help="Write NAME.mask.png: binary, 255 = flagged.")
PROB = typer.Option(False, "--prob", help="Write NAME.prob.png: 16-bit, value = round(p * 65535).")
HTML = typer.Option(False, "--html", help="Write NAME.html: a self-contained report to share.")
