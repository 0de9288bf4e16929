"""Which image-level score separates forgeries from authentic photos best?

    python scripts/image_score_candidates.py data/synth-calib/pairs.json data/synth-val/pairs.json

Runs the weights once per image the way ``imlscan scan`` does (the weights' mode, the map at the
original resolution) and computes several candidate image scores from the same map. For each
dataset it prints the image AUC of every candidate and the share of forgeries found at the cut
that 90% of that set's authentic photos stay below. Choose on the first dataset (training-split
photos) and confirm on the second: choosing on the set you report is tuning on the test.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import cv2
import numpy as np

from imlscan.data.datasets import load_dataset, read_rgb
from imlscan.metrics import roc_auc
from imlscan.predict import Predictor
from imlscan.report import image_score
from imlscan.weights import load_model


def _blur_max(fraction: float) -> Callable[[np.ndarray], float]:
    def score(prob: np.ndarray) -> float:
        k = max(3, round(min(prob.shape) * fraction)) | 1
        return float(cv2.blur(prob, (k, k), borderType=cv2.BORDER_REFLECT).max())

    return score


def _top_mean(share: float) -> Callable[[np.ndarray], float]:
    def score(prob: np.ndarray) -> float:
        flat = prob.ravel()
        k = max(1, int(flat.size * share))
        return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())

    return score


CANDIDATES: dict[str, Callable[[np.ndarray], float]] = {
    "current (blur 1/32, max)": image_score,
    "blur 1/16, max": _blur_max(1 / 16),
    "blur 1/8, max": _blur_max(1 / 8),
    "max pixel": lambda p: float(p.max()),
    "mean of top 1%": _top_mean(0.01),
    "mean of top 5%": _top_mean(0.05),
    "flagged fraction (> 0.5)": lambda p: float((p > 0.5).mean()),
    "mean": lambda p: float(p.mean()),
}


def tpr_at_authentic_quantile(scores: np.ndarray, labels: np.ndarray, q: float = 0.9) -> float:
    cut = np.quantile(scores[~labels], q)
    return float((scores[labels] > cut).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    predictor = Predictor(load_model(args.weights, device="cpu"), precision="fp32")
    report = {}
    for dataset in args.datasets:
        items = load_dataset(dataset).items[: args.limit]
        rows = {name: [] for name in CANDIDATES}
        labels = []
        for s in items:
            prob = predictor.predict_prob(read_rgb(s.image_path))
            labels.append(s.manipulated)
            for name, fn in CANDIDATES.items():
                rows[name].append(fn(prob))
        y = np.asarray(labels, bool)
        report[dataset] = {
            name: {
                "image_auc": round(roc_auc(np.asarray(v), y), 4),
                "tpr_at_authentic_p90": round(tpr_at_authentic_quantile(np.asarray(v), y), 4),
            }
            for name, v in rows.items()
        }
        report[dataset]["n_manipulated"], report[dataset]["n_authentic"] = int(y.sum()), int((~y).sum())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
