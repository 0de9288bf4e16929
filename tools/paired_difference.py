"""How much two evaluations of the same images differ, with a paired bootstrap interval.

Every release decision compares two weights files on the same images. Each file's own interval
(``metrics.json``'s ``ci``) is wide because the images differ in difficulty; the models' per-image
differences vary far less, so the interval of their mean says whether a gap is more than noise.
Images are resampled (the honest unit, as in ``eval``); the per-image metrics are ``eval``'s own,
read from the two runs' ``per_image.csv``, over the manipulated images of one setting.

    python tools/paired_difference.py eval/v25-noso-paper-net eval/v26-noso-paper-net

prints, per metric, A's mean, B's mean, B - A and its 95% interval, and the share of images on
which B is higher.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path, PurePath

import numpy as np

from imlscan.eval.metrics import mean_ci

METRICS = ("pixel_f1", "pixel_f1_best", "pixel_auc", "pixel_iou")


def read_rows(run: Path, setting: str) -> dict[tuple[str, str], dict[str, str]]:
    """The manipulated images' rows of one setting of an eval run, keyed by (index, file name):
    a dataset that lists one image twice keeps both rows, and two checkouts' runs of one dataset
    pair although ``eval`` records absolute paths."""
    path = run / "per_image.csv" if run.is_dir() else run
    if not path.is_file():
        raise SystemExit(f"error: {path}: no per_image.csv (give an `imlscan eval --out` folder)")
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("setting") == setting and r.get("label") == "manipulated"]
    if not rows:
        raise SystemExit(f"error: {path}: no manipulated images in setting {setting!r}")
    return {(r["index"], PurePath(r["image"]).name): r for r in rows}


def _value(row: dict[str, str], metric: str) -> float:
    text = row.get(metric, "")
    return float(text) if text not in ("", "nan", "None") else math.nan


def paired(
    a: dict[tuple[str, str], dict[str, str]],
    b: dict[tuple[str, str], dict[str, str]],
    metric: str,
    *,
    n_resamples: int = 10000,
    seed: int = 0,
) -> dict[str, float]:
    """Means of A and B, the mean of B - A with its bootstrap interval, and the share of images
    where B is higher, over the images both runs scored (a metric undefined in either is left out)."""
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())
        raise SystemExit(
            f"error: the runs scored different images ({len(only)} in one only, e.g. {only[0][1]}, index {only[0][0]})"
        )
    # in A's image-path order, the order the model card's intervals were drawn in (the resamples depend on it)
    order = sorted(a, key=lambda k: (a[k]["image"], k[0]))
    pairs = np.array([(_value(a[k], metric), _value(b[k], metric)) for k in order], np.float64)
    pairs = pairs[np.isfinite(pairs).all(axis=1)]
    d = pairs[:, 1] - pairs[:, 0]
    lo, hi = mean_ci(d, n_resamples=n_resamples, seed=seed)
    return {
        "n": int(d.size),
        "a": float(pairs[:, 0].mean()) if d.size else math.nan,
        "b": float(pairs[:, 1].mean()) if d.size else math.nan,
        "diff": float(d.mean()) if d.size else math.nan,
        "lo": lo,
        "hi": hi,
        "b_higher": float((d > 0).mean()) if d.size else math.nan,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="eval --out folder (or its per_image.csv): the reference")
    ap.add_argument("b", type=Path, help="eval --out folder (or its per_image.csv): the candidate")
    ap.add_argument("--metric", action="append", choices=METRICS, help="repeatable (default: all four)")
    ap.add_argument("--setting", default="clean", help="per_image.csv's setting column (default: clean)")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    a, b = read_rows(args.a, args.setting), read_rows(args.b, args.setting)
    print(f"B - A over {args.setting!r} manipulated images; A = {args.a}, B = {args.b}")
    for metric in args.metric or METRICS:
        r = paired(a, b, metric, n_resamples=args.resamples, seed=args.seed)
        print(
            f"{metric:14s} n {r['n']:4d}  A {r['a']:.4f}  B {r['b']:.4f}  B-A {r['diff']:+.4f} "
            f"[{r['lo']:+.4f}, {r['hi']:+.4f}]  B higher on {r['b_higher']:.0%}"
        )


if __name__ == "__main__":
    main()
