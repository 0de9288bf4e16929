"""Per-image metrics of an evaluation, broken down by the shorter side of each image in pixels.

Why: ``imlscan scan`` warns on small images (``imlscan.scanning.predict.SMALL_IMAGE_SIDE``); this prints the
measurement behind that warning. Reads ``per_image.csv`` of ``imlscan eval --out`` runs (their
``width``/``height`` columns, the decoded image's size); prints, per size band, the manipulated
images' mean F1 at the threshold, best-threshold F1 and AUC, and the authentic images' mean share of
pixels flagged.

    python tools/breakdown_by_size.py eval/v26-val-paper --edges 192 256 384
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

METRICS = ("pixel_f1", "pixel_f1_best", "pixel_auc")


def _float(text: str | None) -> float:
    return float(text) if text not in (None, "", "nan", "None") else math.nan


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def band_names(edges: list[int]) -> list[str]:
    bounds = [0, *edges]
    names = [f"{lo}-{hi - 1} px" for lo, hi in zip(bounds, edges)]
    return [*names, f"{edges[-1]}+ px"]


def breakdown(eval_dir: Path, edges: list[int], setting: str = "clean") -> dict[str, dict[str, float]]:
    """Means per band of the shorter side; bands are [0, e1), [e1, e2), ..., [ek, inf)."""
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] <= 0:
        raise SystemExit("error: --edges must be positive and increasing")
    path = eval_dir / "per_image.csv" if eval_dir.is_dir() else eval_dir
    if not path.is_file():
        raise SystemExit(f"error: {path}: no per_image.csv (give an `imlscan eval --out` folder)")
    names = band_names(edges)
    manip: dict[str, list[dict[str, str]]] = {n: [] for n in names}
    auth: dict[str, list[dict[str, str]]] = {n: [] for n in names}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("setting", "clean") != setting:
                continue
            side = min(int(row["width"]), int(row["height"]))
            band = names[sum(side >= e for e in edges)]
            (manip if row["label"] == "manipulated" else auth)[band].append(row)
    out = {}
    for name in names:
        m, a = manip[name], auth[name]
        out[name] = {"n_manipulated": len(m), "n_authentic": len(a)}
        out[name].update({k: _mean([_float(r.get(k)) for r in m]) for k in METRICS})
        out[name]["authentic_pixels_flagged"] = _mean([_float(r.get("pixel_fpr")) for r in a])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="eval --out folders (or their per_image.csv)")
    ap.add_argument("--edges", type=int, nargs="+", default=[192, 256, 384], help="band edges in px")
    ap.add_argument("--setting", default="clean", help="per_image.csv's setting column (default: clean)")
    args = ap.parse_args(argv)
    for run in args.runs:
        for band, r in breakdown(run, args.edges, args.setting).items():
            print(
                f"{run.name:24s} shorter side {band:>11s}  manipulated {r['n_manipulated']:4d}  "
                f"F1 {r['pixel_f1']:.3f}  best-threshold F1 {r['pixel_f1_best']:.3f}  AUC {r['pixel_auc']:.3f}  "
                f"authentic {r['n_authentic']:3d}  pixels flagged {r['authentic_pixels_flagged']:.2%}"
            )


if __name__ == "__main__":
    main()
