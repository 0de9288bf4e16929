"""Fit the keypoint detector's verification thresholds: true copies kept, lookalikes dropped.

Each photo is resized to 512x512 (as scans do) and the keypoint detector's findings are computed
with verification off (``KeypointConfig(mirror=True, min_inliers=5, corr=0.8)`` by default, v22's
settings). A finding on an authentic photo is a lookalike; on a synthetic copy-move it is the
copy when at least a quarter of its pixels lie in the mask (the other side is its source), a
lookalike when under 5% do, and left out otherwise. The thresholds chosen (a rule fixed before
the numbers were seen) are the pair (``min_region_corr``, ``max_fit_error``) that keeps at least
``--keep`` of the true copies of the training sets and lets the fewest lookalikes through; the
loosest such pair on ties. Validation sets, when given, are only reported.

    imlscan synth ../shared/data/hosts data/cm-train -n 800 --split train --seed 11 --kinds 0,1,0 \\
        --negatives 0 --regions ../shared/data/regions
    imlscan synth ../shared/data/hosts data/cm-val -n 300 --split val --seed 12 --kinds 0,1,0 \\
        --negatives 0 --regions ../shared/data/regions
    python tools/fit_keypoint_verifier.py --train data/cm-train/pairs.json ../shared/data/hosts:train \\
        --val data/cm-val/pairs.json ../shared/data/hosts:val --workers 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from imlscan.data import load_dataset
from imlscan.data.datasets import read_mask
from imlscan.data.synth import host_split
from imlscan.imageio import load_image
from imlscan.scanning.bench import IMAGE_SUFFIXES
from imlscan.scanning.copymove_keypoints import KeypointConfig, KeypointMatcher
from imlscan.scanning.workers import decoding_pool

SIZE = 512
COPY, LOOKALIKE = 0.25, 0.05  # share of a finding's pixels in the mask
REGION_CORR = np.round(np.arange(0.70, 0.951, 0.005), 3)
FIT_ERROR = (0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0, 3.0)
BASE = KeypointConfig(mirror=True, min_inliers=5, corr=0.8)


def sources(spec: str) -> list[tuple[Path, Path | None]]:
    """(image, mask or None) of a pairs.json, or of a folder of authentic photos (``FOLDER:SPLIT``)."""
    if spec.endswith(".json"):
        return [(i.image_path, i.mask_path if i.manipulated else None) for i in load_dataset(Path(spec)).items]
    folder, _, split = spec.partition(":")
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, None) for p in files if not split or split == "all" or host_split(p) == split]


def evidence(item: tuple[Path, Path | None]) -> list[dict]:
    """Each finding of one photo: its evidence and its label (1 copy, 0 lookalike, -1 unclear)."""
    image, mask = item
    rgb = cv2.resize(load_image(image).rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gt = None
    if mask is not None:
        gt = cv2.resize(read_mask(mask).astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST) > 0
    matcher = KeypointMatcher(BASE)
    rows = []
    for f in matcher.findings(gray, matcher.transforms(*matcher.matches(gray))):
        flagged = f.map > 0
        inside = 0.0 if gt is None else float((flagged & gt).sum() / max(flagged.sum(), 1))
        label = 1 if inside >= COPY else 0 if inside < LOOKALIKE else -1
        rows.append({"image": str(image), "region_corr": f.region_corr, "fit_error": f.fit_error, "label": label})
    return rows


def collect(specs: list[str], workers: int) -> list[dict]:
    """Every labelled finding of the photos ``specs`` name; ``workers`` spawned processes (0: here)."""
    items = [it for spec in specs for it in sources(spec)]
    pool = decoding_pool(workers, len(items))
    try:
        found = [pool.submit(evidence, it) for it in items]
        return [r for f in found for r in f.result() if r["label"] >= 0]
    finally:
        pool.shutdown(cancel_futures=True)


def passing(rows: list[dict], min_region_corr: float, max_fit_error: float) -> tuple[float, float]:
    """(share of copies kept, share of lookalikes passing); NaN where there are none."""
    ok = np.array([r["region_corr"] >= min_region_corr and r["fit_error"] <= max_fit_error for r in rows], bool)
    label = np.array([r["label"] for r in rows])
    return tuple(float(ok[label == k].mean()) if (label == k).any() else float("nan") for k in (1, 0))


def fit(rows: list[dict], keep: float) -> tuple[float, float]:
    """The rule of the module docstring: (min_region_corr, max_fit_error)."""
    best: tuple[float, float, float] | None = None
    for c in REGION_CORR:
        for e in FIT_ERROR:
            kept, passed = passing(rows, float(c), e)
            if kept >= keep and (best is None or (passed, -e, c) < (best[0], -best[2], best[1])):
                best = (passed, float(c), e)
    if best is None:
        raise SystemExit(f"no pair keeps {keep:.0%} of the copies")
    return best[1], best[2]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", nargs="+", required=True, help="pairs.json files and FOLDER:SPLIT host folders")
    ap.add_argument("--val", nargs="*", default=[], help="the same, only reported")
    ap.add_argument("--keep", type=float, default=0.97, help="share of the training copies to keep")
    ap.add_argument("--workers", type=int, default=0, help="spawned processes (0: the main process)")
    ap.add_argument("--json", type=Path, help="write the evidence and the result here")
    a = ap.parse_args(argv)
    train = collect(a.train, a.workers)
    labels = {r["label"] for r in train}
    if labels != {0, 1}:
        raise SystemExit(
            "the training sets gave no " + ("true copies" if 1 not in labels else "lookalikes") + " to fit on"
        )
    c, e = fit(train, a.keep)
    result: dict = {"min_region_corr": c, "max_fit_error": e, "keep": a.keep}
    for name, rows in (("train", train), ("val", collect(a.val, a.workers) if a.val else [])):
        if not rows:
            continue
        kept, passed = passing(rows, c, e)
        n_copies = sum(r["label"] == 1 for r in rows)
        shares = {"kept": None if np.isnan(kept) else kept, "passed": None if np.isnan(passed) else passed}
        result[name] = {"copies": n_copies, "lookalikes": len(rows) - n_copies, **shares}
        print(
            f"{name}: {n_copies} copies, {len(rows) - n_copies} lookalike findings; "
            f"kept {kept:.3f} of the copies, {passed:.3f} of the lookalikes pass"
        )
        result[f"{name}_rows"] = rows
    print(f"chosen: min_region_corr {c} max_fit_error {e}")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
