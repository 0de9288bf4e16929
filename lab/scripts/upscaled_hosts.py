# Frozen lab record: ran at commit b436b08 (2026-11-27); kept as run, not maintained. See lab/README.md.
"""Write the validation-split host photos re-saved (x1) or upsampled (x2) as JPEG q95, so that a
synthetic set made from them is forged at that size and then downsampled by the paper protocol's
512 resize, as forgeries in real photos larger than 512 px are (v24's probe, model card).

    python scripts/upscaled_hosts.py ../shared/data/hosts 2 data/hosts-val-x2
    imlscan synth data/hosts-val-x2 data/synth-x2 -n 200 --split all --seed 1 --regions ../shared/data/regions
    imlscan eval data/synth-x2/pairs.json --protocol paper --no-copy-move --out eval/x2

The control is the same with factor 1: the photos re-saved alike, so only the size differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from imlscan.data.synth import list_images, load_rgb, split_hosts
from imlscan.errors import ImlscanError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hosts", help="the development photos (searched recursively)")
    ap.add_argument("factor", type=float, help="1 to re-save, 2 to upsample twice (bicubic)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--split", default="val", choices=("train", "val", "all"))
    a = ap.parse_args()
    if not a.factor > 0:
        ap.error(f"factor must be positive, not {a.factor}")
    try:
        photos = split_hosts(list_images(a.hosts), a.split)
    except ImlscanError as e:
        sys.exit(f"error: {e}")
    seen: dict[str, Path] = {}
    for p in photos:  # outputs are named by stem: two photos of one name would overwrite each other
        if p.stem in seen:
            sys.exit(f"error: {seen[p.stem]} and {p} would both be written as {p.stem}.jpg; rename one")
        seen[p.stem] = p
    a.out.mkdir(parents=True, exist_ok=True)
    n, skipped = 0, []
    for p in photos:
        try:
            rgb = load_rgb(p)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            skipped.append(p)
            print(f"skipped {p}: not a readable image ({type(e).__name__})", file=sys.stderr)
            continue
        h, w = rgb.shape[:2]
        if a.factor != 1:
            rgb = cv2.resize(rgb, (round(w * a.factor), round(h * a.factor)), interpolation=cv2.INTER_CUBIC)
        Image.fromarray(np.ascontiguousarray(rgb)).save(a.out / f"{p.stem}.jpg", quality=95)
        n += 1
    print(f"wrote {n} photos to {a.out}" + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    if n == 0:
        sys.exit(f"error: no readable photo in the {a.split} split of {a.hosts}")


if __name__ == "__main__":
    main()
