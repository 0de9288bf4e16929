# Frozen lab record: ran at commit b6442c3 (2026-12-06) with the provenance reader uncommitted on top; kept as run, not maintained. See lab/README.md.
"""How long does ``read_provenance`` take per photo? (issue 37: under 50 ms on 2 cores)

Files: the example photos, the test suite's fixtures (camera EXIF with thumbnail, editor re-save
with IPTC, XMP history, C2PA-signed and the same file changed after signing, a PNG with 1 MB
fields) and a 12-megapixel camera-like JPEG with an EXIF thumbnail. Each is read once to warm up
(imports: c2pa's native library loads on the first manifest), then timed as the median of
``--repeat`` reads: as ``imlscan meta`` reads it (no decoded pixels: the reader decodes a
reduced preview when there is a thumbnail to compare) and as ``scan``/``batch`` read it (the
decoded pixels passed in).

    .venv/bin/python lab/scripts/provenance_timing.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import glob
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_provenance import (  # noqa: E402
    CAMERA_EXIF,
    CAMERA_IFD0,
    GPS,
    HISTORY_XMP,
    camera_jpeg,
    editor_jpeg,
    exif_segment,
    jpeg,
    make_credentials,
    png,
    scene,
    sign_jpeg,
    tampered,
    thumbnail_of,
    with_segments,
    xmp_segment,
)

from imlscan.imageio import decode_bytes  # noqa: E402
from imlscan.scanning.provenance import read_provenance  # noqa: E402


def fixtures() -> dict[str, bytes]:
    from PIL import PngImagePlugin

    files = {Path(p).name: Path(p).read_bytes() for p in sorted(glob.glob(str(ROOT / "examples" / "*.jpg")))}
    files["camera.jpg"] = camera_jpeg()
    files["editor.jpg"] = editor_jpeg()
    files["xmp-history.jpg"] = with_segments(jpeg(scene(1)), xmp_segment(HISTORY_XMP))
    chain, key, _ = make_credentials()
    files["c2pa-signed.jpg"] = sign_jpeg(jpeg(scene(1, 480, 640)), chain, key)
    files["c2pa-changed.jpg"] = tampered(files["c2pa-signed.jpg"])
    meta = PngImagePlugin.PngInfo()
    meta.add_itxt("XML:com.adobe.xmp", HISTORY_XMP.replace("Jane Doe", "A" * 1_000_000))
    meta.add_text("Comment", "B" * 1_000_000)
    files["huge-fields.png"] = png(scene(1), pnginfo=meta)
    big = np.asarray(Image.fromarray(scene(5, 750, 1000)).resize((4000, 3000), Image.BICUBIC))
    noise = np.random.default_rng(0).normal(0, 6, big.shape)
    big = np.clip(big + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=92)
    exif = {**CAMERA_EXIF, 0xA002: ("L", 4000), 0xA003: ("L", 3000)}
    files["camera-12mp.jpg"] = with_segments(buf.getvalue(), exif_segment(CAMERA_IFD0, exif, GPS, thumbnail_of(big)))
    return files


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    files = fixtures()
    t0 = time.perf_counter()
    read_provenance(files["c2pa-signed.jpg"])
    print(f"first read in the process (imports, c2pa library): {1000 * (time.perf_counter() - t0):.0f} ms")
    print(f"{'file':24s} {'bytes':>10s} {'meta (ms)':>10s} {'scan (ms)':>10s}  findings")
    for name, data in files.items():
        rgb = decode_bytes(data).rgb
        read_provenance(data)
        meta = median_ms(lambda data=data: read_provenance(data), args.repeat)
        scan = median_ms(lambda data=data, rgb=rgb: read_provenance(data, decoded_rgb=rgb), args.repeat)
        n = len(read_provenance(data).findings)
        print(f"{name:24s} {len(data):10,d} {meta:10.2f} {scan:10.2f}  {n}")


if __name__ == "__main__":
    main()
