# Frozen lab record: ran at commit 21a78f3 (2026-11-26); kept as run, not maintained. See lab/README.md.
"""How a model scores the two halves of a copy-move whose ground truth marks both.

    python scripts/copymove_components.py ../shared/data/real-val/noso/pairs.json \
        --weights weights/imlscan-sparsevit-t-v23.safetensors --weights runs/v5-cal.safetensors

Conventions differ: imlscan's generator (and the masks of several public benchmarks) mark only
the pasted copy of a copy-move, while NoSo marks the source and the copy. A model that learns to
tell the copy from its source then scores one half of such a mask low, and both-halves metrics
punish exactly what it learned. For every image whose mask is two connected regions of about the
same area, this reports per model: the mean probability of the higher-scoring half, of the other
half and of the background, and pixel AUC three ways: both halves positive (the dataset's
convention), the higher half alone positive with the other half left out (the copy-only
convention, reading the model's preferred half as the copy: an upper bound, the same for every
model), and the lower half alone likewise.
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from imlscan.data.datasets import load_dataset, read_mask, read_rgb
from imlscan.metrics import pixel_auc
from imlscan.predict import Predictor
from imlscan.weights import load_model


def halves(mask: np.ndarray, tolerance: float = 0.2) -> tuple[np.ndarray, np.ndarray] | None:
    """The two regions of a source-plus-copy mask, or None when the mask is not two regions of
    about the same area (within ``tolerance``)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n != 3:
        return None
    a, b = stats[1, cv2.CC_STAT_AREA], stats[2, cv2.CC_STAT_AREA]
    if abs(int(a) - int(b)) > tolerance * max(a, b):
        return None
    return labels == 1, labels == 2


def component_scores(prob: np.ndarray, mask: np.ndarray) -> dict | None:
    parts = halves(mask)
    if parts is None:
        return None
    means = [float(prob[p].mean()) for p in parts]
    hi, lo = (parts[0], parts[1]) if means[0] >= means[1] else (parts[1], parts[0])
    background = ~(hi | lo)
    keep_hi, keep_lo = ~lo, ~hi
    return {
        "mean_high": max(means),
        "mean_low": min(means),
        "mean_background": float(prob[background].mean()),
        "auc_both": pixel_auc(prob, hi | lo),
        "auc_high_only": pixel_auc(prob[keep_hi], hi[keep_hi]),
        "auc_low_only": pixel_auc(prob[keep_lo], lo[keep_lo]),
    }


def predictor_for(weights: str, mode: str, network_only: bool) -> Predictor:
    """A CPU predictor of ``weights``; ``network_only`` switches off the copy-move detectors that
    the file may carry (otherwise they run as the file says)."""
    return Predictor(
        load_model(weights, device="cpu"), precision="fp32", mode=mode, copy_move=False if network_only else None
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--weights", action="append", required=True)
    ap.add_argument("--mode", choices=("resize", "native"), default="resize")
    ap.add_argument(
        "--no-copy-move", action="store_true", help="the network alone, also for weights with copy-move detectors"
    )
    args = ap.parse_args()
    items = [s for s in load_dataset(args.dataset).items if s.mask_path is not None]
    out = {}
    for w in args.weights:
        predictor = predictor_for(w, args.mode, args.no_copy_move)
        rows = []
        for s in items:
            mask = read_mask(s.mask_path).astype(bool)
            prob = predictor.predict_prob(read_rgb(s.image_path))
            r = component_scores(prob, mask)
            if r is not None:
                rows.append(r)
        out[w] = {"images": len(rows), **{k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}}
    print(json.dumps({"dataset": args.dataset, "mode": args.mode, "of": len(items), "models": out}, indent=2))


if __name__ == "__main__":
    main()
