"""Compose docs/images/overlay-example.jpg: the overlay `make demo` writes for an example, next to
its ground-truth mask, both scaled to one height.

    make demo && python tools/overlay_example.py outputs/splice-lighthouse.overlay.png \
        examples/masks/splice-lighthouse.png docs/images/overlay-example.jpg
"""

from __future__ import annotations

import argparse

from PIL import Image

from imlscan.fsutil import atomic_path

HEIGHT, GAP = 360, 6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overlay")
    ap.add_argument("mask")
    ap.add_argument("out")
    args = ap.parse_args()
    panels = [Image.open(args.overlay).convert("RGB"), Image.open(args.mask).convert("RGB")]
    panels = [p.resize((round(p.width * HEIGHT / p.height), HEIGHT), Image.LANCZOS) for p in panels]
    sheet = Image.new("RGB", (sum(p.width for p in panels) + GAP, HEIGHT), "white")
    sheet.paste(panels[0], (0, 0))
    sheet.paste(panels[1], (panels[0].width + GAP, 0))
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format="JPEG", quality=85)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
