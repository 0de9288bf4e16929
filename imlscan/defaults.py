"""Defaults shared by the command line and the library, in one torch-free place.

The CLI declares its options with these values without importing torch, and the library uses
the same objects, so the two cannot drift apart.
"""

from __future__ import annotations

# Preprocessing: "resize" is the paper's protocol (the whole photo at PAPER_SIZE x PAPER_SIZE),
# "native" runs at full resolution, tiled when large.
MODES = ("resize", "native")
PAPER_SIZE = 512

# Native mode runs images up to TILE x TILE whole; larger ones in overlapping tiles whose
# origins sit on multiples of TILE_ALIGN: a multiple of 8 keeps the JPEG 8x8 grid phase of
# every tile equal to the full image's, and 32 is the network's coarsest stride.
TILE_ALIGN = 32
DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 128
DEFAULT_BATCH_SIZE = 8

# A pixel is flagged when its probability is above this; calibrated weights move their
# decision point here.
DEFAULT_THRESHOLD = 0.5

# 250 megapixels: above every current camera sensor (200 MP phones), far below the
# gigapixel headers of decompression bombs. Raise it with --max-pixels / max_pixels=.
DEFAULT_MAX_PIXELS = 250_000_000

# Photos under this many pixels on the shorter side get a caveat: the default weights measured
# far lower F1 there (weights/README.md).
SMALL_IMAGE_SIDE = 192
