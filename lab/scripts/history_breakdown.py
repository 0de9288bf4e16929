# Frozen lab record: ran at commit a93d28f (2026-12-06); kept as run, not maintained. See lab/README.md.
"""Pixel F1 at 0.5 on the history validation set by compression history, for two eval folders
(issue 36: "fused F1 at least 0.15 above SparseViT alone on the JPEG-history forgeries").

    python lab/scripts/history_breakdown.py data/synth-hist-val/manifest.json eval/hv-v26 eval/hv-llr

Groups: the second save's quality relative to the host's (above / equal / below) and the paste's
grid (aligned / off), manipulated images only, clean setting; mean F1 of each folder and the paired
difference with a 95% bootstrap interval (2,000 resamples, seed 0).
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def f1_by_index(folder: Path) -> dict[int, float]:
    with open(folder / "per_image.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["setting"] == "clean" and r["label"] == "manipulated"]
    return {int(r["index"]): float(r["pixel_f1"]) for r in rows}


def main(manifest: str, before: str, after: str) -> None:
    samples = json.loads(Path(manifest).read_text())["samples"]
    a, b = f1_by_index(Path(before)), f1_by_index(Path(after))
    groups: dict[str, list[int]] = defaultdict(list)
    for s in samples:
        i = s["index"]
        if i not in a or i not in b:
            continue
        h = s.get("history") or {}
        groups["all forgeries"].append(i)
        groups[f"second save {h.get('relation', 'none')}"].append(i)
        groups[f"paste grid {h.get('grid', 'none')}"].append(i)
        groups[f"kind {s['kind']}"].append(i)
    rng = np.random.default_rng(0)
    print(f"| group | n | {Path(before).name} | {Path(after).name} | paired difference [95%] |")
    print("|---|---:|---:|---:|---|")
    for name in sorted(groups, key=lambda g: (g != "all forgeries", g)):
        idx = groups[name]
        x, y = np.array([a[i] for i in idx]), np.array([b[i] for i in idx])
        d = y - x
        boot = d[rng.integers(0, len(d), (2000, len(d)))].mean(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"| {name} | {len(idx)} | {x.mean():.3f} | {y.mean():.3f} | {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
