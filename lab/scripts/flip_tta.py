# Frozen lab record: ran at commit 77816ba (2026-11-26); kept as run, not maintained. See lab/README.md.
"""Measure flip test-time augmentation: average the logits of flipped copies of each image.

Forensic traces survive a mirror image, so averaging the maps of flipped inputs is the usual
cheap ensemble. This script asks whether it helps the shipped weights before anyone builds a
``--tta`` option: it runs ``imlscan eval``'s own code with a predictor that averages the views.

    python scripts/flip_tta.py weights/imlscan-sparsevit-t-v23.safetensors data/synth-val/pairs.json \
        --views id --views id,h --views id,h,v,hv

One JSON line per view set: the headline metrics (threshold 0.5) and the seconds taken.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from imlscan.data.datasets import load_dataset
from imlscan.evaluate import EvalOptions, evaluate_dataset
from imlscan.predict import Predictor
from imlscan.weights import load_model

FLIPS = {"id": (), "h": (3,), "v": (2,), "hv": (2, 3)}
KEYS = ("pixel_f1", "pixel_f1_best", "pixel_auc", "pixel_iou", "pixel_fpr_authentic", "image_auc")


class FlipPredictor(Predictor):
    """A ``Predictor`` whose maps are the sigmoid of the mean logit over flipped views."""

    def __init__(self, *args, views: tuple[str, ...], **kwargs):
        super().__init__(*args, **kwargs)
        unknown = set(views) - set(FLIPS)
        if unknown or not views:
            raise SystemExit(f"unknown view(s) {sorted(unknown)}: use {', '.join(FLIPS)}")
        self.views = views

    def _probs(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        maps: list[np.ndarray] = []
        for k in range(0, len(arrays), self.batch_size):
            x = self.to_tensor(arrays[k : k + self.batch_size])
            total = torch.zeros_like(x[:, :1])
            for view in self.views:
                dims = FLIPS[view]
                logits = self.logits(torch.flip(x, dims) if dims else x)
                total += torch.flip(logits, dims) if dims else logits
            maps.extend(torch.sigmoid(total / len(self.views))[:, 0].cpu().numpy())
        return maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("dataset")
    ap.add_argument("--views", action="append", help="comma-separated views among id,h,v,hv (repeatable)")
    ap.add_argument("--protocol", default="paper", choices=("paper", "native"))
    ap.add_argument("--bootstrap", type=int, default=0)
    args = ap.parse_args()
    model = load_model(args.weights, "cpu", None)
    dataset = load_dataset(args.dataset)
    paper = args.protocol == "paper"
    for spec in args.views or ["id", "id,h"]:
        views = tuple(v.strip() for v in spec.split(","))
        predictor = FlipPredictor(
            model, mode="resize" if paper else "native", size=512 if paper else None, batch_size=4, views=views
        )
        report, _ = evaluate_dataset(
            dataset, predictor, EvalOptions(protocol=args.protocol, bootstrap=args.bootstrap, batch_size=4)
        )
        m = report["metrics"]
        row = {k: round(m[k], 4) for k in KEYS if m.get(k) is not None}
        print(json.dumps({"views": spec, "protocol": args.protocol, **row, "seconds": report["timing"]["seconds"]}))


if __name__ == "__main__":
    main()
