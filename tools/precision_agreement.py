"""Do bf16 masks agree with fp32 masks, and does the fast path equal the plain path?

    python tools/precision_agreement.py data/synth-val/pairs.json --limit 200

For each image of a dataset (paper protocol: resized to the model's size) it compares the
threshold-0.5 masks of the bf16 fast path with the fp32 plain model (IoU over the union of the
two masks, pooled over the set) and reports the largest |probability| difference between the
fp32 fast path and the fp32 plain model. It also compares the image scores, and their ranks
among the weights' authentic references (``score_vs_authentic``, scored in fp32), between bf16
and fp32: how far a ``--precision bf16`` scan's percentage can drift.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from imlscan.data.datasets import load_dataset, read_rgb
from imlscan.scanning.predict import Predictor
from imlscan.scanning.result import authentic_rank, image_score
from imlscan.weights.store import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    model = load_model(args.weights, device="cpu")
    plain = Predictor(model, precision="fp32", fast=False)
    fast32 = Predictor(model, precision="fp32", fast=True)
    fast16 = Predictor(model, precision="bf16", fast=True)
    items = load_dataset(args.dataset).items[: args.limit]
    inter = union = 0
    max_diff = 0.0
    per_image = []
    score_diff, rank_diff = [], []
    calibration = (model.weights_info.metadata or {}).get("calibration")
    for s in items:
        rgb = read_rgb(s.image_path)
        p = plain.predict_prob(rgb)
        f = fast32.predict_prob(rgb)
        b = fast16.predict_prob(rgb)
        max_diff = max(max_diff, float(np.abs(p - f).max()))
        a, c = p > 0.5, b > 0.5
        i, u = int((a & c).sum()), int((a | c).sum())
        inter, union = inter + i, union + u
        per_image.append(1.0 if u == 0 else i / u)
        s32, s16 = image_score(p), image_score(b)
        score_diff.append(abs(s32 - s16))
        r32, r16 = authentic_rank(s32, calibration), authentic_rank(s16, calibration)
        if r32 and r16:
            rank_diff.append(abs(r32["percent_lower"] - r16["percent_lower"]))
    print(
        json.dumps(
            {
                "images": len(items),
                "bf16_vs_fp32_mask_iou_pooled": inter / union if union else 1.0,
                "bf16_vs_fp32_mask_iou_mean": float(np.mean(per_image)),
                "bf16_vs_fp32_mask_iou_min": float(np.min(per_image)),
                "fast_vs_plain_fp32_max_abs_prob_diff": max_diff,
                "bf16_vs_fp32_score_abs_diff_mean": float(np.mean(score_diff)),
                "bf16_vs_fp32_score_abs_diff_max": float(np.max(score_diff)),
                "bf16_vs_fp32_authentic_rank_points_diff": {
                    "mean": float(np.mean(rank_diff)),
                    "p95": float(np.percentile(rank_diff, 95)),
                    "max": float(np.max(rank_diff)),
                }
                if rank_diff
                else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
