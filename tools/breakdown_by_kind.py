"""Per-image metrics of a synthetic set, broken down by what the generator did: manipulation kind,
and for splices and copy-moves whether the paste was a plain translation (no scaling or rotation,
so no resampling trace) or not. Reads the set's ``manifest.json`` and ``per_image.csv`` files
written by ``imlscan eval --out``; prints mean best-threshold F1 / AUC / F1 per group.

    python tools/breakdown_by_kind.py data/synth-val/manifest.json eval/v9-val-paper eval/v13-val-paper
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

METRICS = ("pixel_f1_best", "pixel_auc", "pixel_f1")


def group_of(sample: dict) -> str | None:
    kind = sample["kind"]
    if kind == "negative":
        return None
    if kind in ("splice", "copymove"):
        plain = sample.get("scale") == 1.0 and sample.get("angle") == 0.0
        return f"{kind}, {'translated only' if plain else 'scaled or rotated'}"
    return kind


def breakdown(manifest: Path, eval_dir: Path) -> dict[str, dict]:
    samples = json.loads(manifest.read_text())["samples"]
    groups: dict[str, list[list[float]]] = defaultdict(list)
    with open(eval_dir / "per_image.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("setting", "clean") != "clean":
                continue
            group = group_of(samples[int(row["index"])])
            if group is not None:
                groups[group].append([float(row[m]) for m in METRICS])
    return {
        g: {"n": len(v), **{m: sum(r[i] for r in v) / len(v) for i, m in enumerate(METRICS)}}
        for g, v in sorted(groups.items())
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("eval_dirs", type=Path, nargs="+")
    args = ap.parse_args()
    for d in args.eval_dirs:
        for group, r in breakdown(args.manifest, d).items():
            print(
                f"{d.name:24s} {group:30s} n={r['n']:4d}  best-threshold F1 {r['pixel_f1_best']:.3f}  "
                f"AUC {r['pixel_auc']:.3f}  F1 {r['pixel_f1']:.3f}"
            )


if __name__ == "__main__":
    main()
