"""Copy a size-capped subset of the development photos and region maps into a folder that can
travel with the checkout to the GPU machine (its working tree is limited to 64 MiB).

    python tools/travel_subset.py ../shared/data .gpu-data          # the default weights' v8 stage
    # .gpu-data/ is in .gitignore: never commit it

Why not one shard (the data README's suggestion): one shard plus the regions is 32 MB, which
leaves ~24 MB of the budget unused. A seeded draw over all shards that fills ~48 MB with photos
(and half the region maps) brings 517 photos instead of ~200. PNG photos (Kodak, ~600 kB each)
are left out: five JPEG photos fit in the room of one.

The draw keeps the train/validation split of ``imlscan.data.synth.host_split`` (by file name),
so a run over the subset never trains on a validation photo, and brings a few validation photos
so that training can validate on forgeries of photos it never sees.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from imlscan.data.synth import host_split, list_images


def select(photos: list[Path], budgets: dict[str, int], seed: int) -> list[Path]:
    """A seeded shuffle, then first-fit under a byte budget per split (train, val)."""
    order = sorted(photos)
    random.Random(seed).shuffle(order)
    used = dict.fromkeys(budgets, 0)
    chosen = []
    for p in order:
        split, size = host_split(p.name), p.stat().st_size
        if split in budgets and used[split] + size <= budgets[split]:
            used[split] += size
            chosen.append(p)
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shared_data", help="the folder holding hosts/ and regions/")
    ap.add_argument("out")
    ap.add_argument("--train-mb", type=float, default=44.0)
    ap.add_argument("--val-mb", type=float, default=4.5)
    ap.add_argument("--region-every", type=int, default=2, help="keep every Nth region map (sorted)")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    src, out = Path(args.shared_data), Path(args.out)
    photos = [p for p in list_images(src / "hosts") if p.suffix.lower() != ".png"]
    budgets = {"train": int(args.train_mb * 1e6), "val": int(args.val_mb * 1e6)}
    chosen = select(photos, budgets, args.seed)
    (out / "hosts").mkdir(parents=True, exist_ok=True)
    for p in chosen:
        shutil.copy2(p, out / "hosts" / p.name)
    regions = sorted((src / "regions").glob("*.png"))[:: args.region_every]
    (out / "regions").mkdir(parents=True, exist_ok=True)
    for r in regions:
        shutil.copy2(r, out / "regions" / r.name)
    n_val = sum(host_split(p.name) == "val" for p in chosen)
    size = sum(p.stat().st_size for p in chosen) + sum(r.stat().st_size for r in regions)
    print(
        f"{len(chosen) - n_val} training and {n_val} validation photos, {len(regions)} region maps, "
        f"{size / 1e6:.1f} MB -> {out}"
    )


if __name__ == "__main__":
    main()
