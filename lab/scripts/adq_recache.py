# Frozen lab record: ran at commit 304b58c (2026-12-06) and the working tree just before it; kept as run, not maintained. See lab/README.md.
# Traces (issue 36), 2026-12-06, fourth study (adq_detection.py): recompute only adq's maps of an
# existing cache of traces_cache.py (same dataset, same range, same perturbation), with adq's
# per-frequency gain margin set to GAIN, and write a copy of the cache with those maps; the network's
# maps and the other traces are copied unchanged, so rule comparisons differ in adq alone.
#   .venv/bin/python lab/scripts/adq_recache.py GAIN DATASET OLD.npz NEW.npz START STOP [PERTURB]
# Knobs by environment: ADQ_POOL, ADQ_FREQUENCIES, ADQ_MIN_FREQUENCIES. ADQ_POOL set a temporary
# module constant adq.POOL ("median" as version 1, or "mean:K:S": the log likelihood ratios averaged
# over K x K blocks times S) that existed only in the working tree before 304b58c; at 304b58c adq has
# the chosen mean over 3 x 3 blocks (POOL_BLOCKS), so the other pooling candidates do not reproduce there.
"""Recompute adq's maps of a fusion-study cache (lab script; see the header)."""

from __future__ import annotations

import os
import sys
import time

import cv2
import numpy as np

import imlscan.scanning.traces.adq as adq
from imlscan.data.datasets import load_dataset
from imlscan.defaults import PAPER_SIZE
from imlscan.eval.evaluate import prepare_item

SIDE = 256


def main(gain: str, dataset: str, old: str, new: str, start: str, stop: str, perturb: str = "") -> None:
    from imlscan.eval.perturb import parse_perturbation

    adq.MIN_GAIN = float(gain)
    adq.POOL = os.environ.get("ADQ_POOL", "median")
    adq.FREQUENCIES = int(os.environ.get("ADQ_FREQUENCIES", "15"))
    adq.MIN_FREQUENCIES = int(os.environ.get("ADQ_MIN_FREQUENCIES", "2"))
    cv2.setNumThreads(1)
    pert = parse_perturbation(perturb)[0] if perturb else None
    d = dict(np.load(old))
    items = load_dataset(dataset).items[int(start) : int(stop)]
    assert len(items) == len(d["label"]), (len(items), len(d["label"]))
    k = [str(n) for n in d["names"]].index("adq")
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
            "traces": ("adq",),
        }
        it = prepare_item(task)
        d["applies"][i, k] = False
        d["maps"][i, k] = 0
        d["prior"][i] = np.nan
        if it["error"]:
            continue
        assert bool(s.manipulated) == bool(d["label"][i])
        r = it["traces"].get("adq")
        if r is not None and r.applies and r.map is not None:
            d["applies"][i, k] = True
            small = cv2.resize(np.asarray(r.map, np.float32), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
            d["maps"][i, k] = np.round(np.clip(small, 0, 1) * 255).astype(np.uint8)
            d["prior"][i] = float(r.details.get("prior", np.nan))
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(items)} {time.perf_counter() - t0:.0f}s", flush=True)
    np.savez_compressed(new, **d)


if __name__ == "__main__":
    main(*sys.argv[1:])
