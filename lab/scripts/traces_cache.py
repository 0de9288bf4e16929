# Traces (issue 36), 2026-12-06: cache, per image, what every fusion rule reads (the weights' map as
# `imlscan eval --protocol paper` makes it, each trace's map brought to 512 x 512 the same way, the mask),
# downsampled to 256 x 256, so that rule forms can be compared in seconds instead of a 15-minute scan
# each (lab/scripts/traces_rules.py). One thread per process (on a shared, oversubscribed machine torch's
# OpenMP barriers made two threads 20x slower); shards in parallel, merged by traces_rules.py. Run from
# the checkout root:
#   .venv/bin/python lab/scripts/traces_cache.py data/synth-hist-fit/pairs.json data/cache/fit-0.npz 0 200
# Extended 2026-12-06 (third study, traces_rules_robust.py): an optional 5th argument, a perturbation as
# `eval --perturb` takes it (e.g. jpeg:70), caches the perturbed photos as `eval` makes them.
"""Cache maps for fusion-rule studies (frozen lab script; see the header)."""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import torch

from imlscan.data.datasets import load_dataset
from imlscan.defaults import PAPER_SIZE
from imlscan.eval.evaluate import prepare_item
from imlscan.scanning.predict import Predictor
from imlscan.weights.store import load_model

NAMES = ("adq", "grid", "ghost", "noise")
SIDE = 256


def small(a: np.ndarray) -> np.ndarray:
    return cv2.resize(np.asarray(a, np.float32), (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def main(dataset: str, out: str, start: str = "0", stop: str = "1000000", perturb: str = "") -> None:
    from imlscan.eval.perturb import parse_perturbation

    pert = parse_perturbation(perturb)[0] if perturb else None
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    weights = "weights/imlscan-sparsevit-t-v26.safetensors"
    items = load_dataset(dataset).items[int(start) : int(stop)]
    predictor = Predictor(load_model(weights, "cpu", "fp32"), mode="resize", size=PAPER_SIZE, traces=NAMES)
    n = len(items)
    prob = np.zeros((n, SIDE, SIDE), np.float16)
    maps = np.zeros((n, len(NAMES), SIDE, SIDE), np.uint8)
    applies = np.zeros((n, len(NAMES)), bool)
    prior = np.full(n, np.nan, np.float32)
    mask = np.zeros((n, SIDE, SIDE), bool)
    label = np.zeros(n, bool)
    t0 = time.perf_counter()
    for i, s in enumerate(items):
        task = {
            "index": i,
            "image": str(s.image_path),
            "mask": str(s.mask_path) if s.mask_path else None,
            "perturbation": pert,
            "protocol": "paper",
            "size": PAPER_SIZE,
            "seed": 0,
            "keypoints": None,
            "traces": NAMES,
        }
        it = prepare_item(task)
        if it["error"]:
            print("skip", s.image_path, it["error"], flush=True)
            continue
        p = predictor.predict_batch([it["rgb"]])[0]
        prob[i] = small(p)
        mask[i] = small(it["mask"].astype(np.float32)) > 0.5
        label[i] = s.manipulated
        for k, name in enumerate(NAMES):
            r = it["traces"].get(name)
            if r is not None and r.applies and r.map is not None:
                applies[i, k] = True
                maps[i, k] = np.round(np.clip(small(r.map), 0, 1) * 255).astype(np.uint8)
                if name == "adq":
                    prior[i] = float(r.details.get("prior", np.nan))
        if (i + 1) % 25 == 0:
            print(f"{i + 1}/{n} {time.perf_counter() - t0:.0f}s", flush=True)
    np.savez_compressed(out, prob=prob, maps=maps, applies=applies, prior=prior, mask=mask, label=label, names=NAMES)


if __name__ == "__main__":
    main(*sys.argv[1:])
