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

# The largest input file read, checked from the file system before reading: 1 GiB holds any
# compressed photo and an uncompressed 8-bit RGB TIFF or BMP at the 250 MP pixel limit (750 MB),
# and stops a disk image, a video or a device renamed .jpg before its bytes fill the memory.
# Python: read_file(path, max_bytes=N).
DEFAULT_MAX_FILE_BYTES = 1 << 30

# Benchmark datasets and synthetic hosts are the user's own files, where large scans are
# legitimate: they are decoded under this explicit limit (1 gigapixel) instead of DEFAULT_MAX_PIXELS,
# and the memory check below still applies.
DATASET_MAX_PIXELS = 1_000_000_000

# Peak memory a decode plus a scan needs per pixel, to refuse an image from its header when the
# machine does not have it. Measured with the peak RSS of `imlscan scan` (defaults: traces, overlay)
# on PNGs of smooth noise: 644 MB at 4 MP, 2,473 MB at 36 MP, so 60 bytes per pixel; the decode
# alone (imageio.decode_bytes) 12 bytes per pixel (477 MB at 36 MP, 805 MB at 64 MP). Rounded up.
DECODE_SCAN_BYTES_PER_PIXEL = 64

# How `weights fuse` reads each trace's map by default (imlscan.scanning.fusion.FORMS).
DEFAULT_FUSION_FORM = "llr"
# The traces `weights fuse` fits terms for by default. adq alone: its term has no bias, so it moves no
# pixel unless the file shows double quantization there. Fitted on the training split it also had the
# best cross-validated F1 (adq version 1: 0.496 against 0.481 with grid, ghost and noise), and with
# those three the fused map fell below the network's on photos re-saved at JPEG q70
# (lab/scripts/traces_rules_robust.py).
DEFAULT_FUSION_TRACES = ("adq",)

# Parts of the network that bf16 scans on a CPU keep in fp32 (imlscan.models.fuse.FP32_PARTS). The
# stem: rounding the normalized photo to bf16 moves masks the most. On 200 synthetic validation photos
# bf16 masks agreed with fp32 masks at IoU 0.974 (pooled), 0.986 with the stem in fp32, for about 5% of
# the network's time (lab/scripts/bf16_agreement.py; docs/performance.md, same results).
CPU_BF16_FP32_PARTS = ("stem",)
