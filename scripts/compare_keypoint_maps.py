"""Compare the keypoint copy-move detector of this checkout with another version's, photo by
photo: are the maps identical, and how long does each take? For changes meant to be exact
(speed-ups), run on a few hundred photos before trusting them.

    git archive c83892d imlscan | tar -x -C /tmp/old     # the version to compare with
    python scripts/compare_keypoint_maps.py /tmp/old data/synth-calib/pairs.json \
        ../shared/data/real-val/noso/pairs.json data/synth-val/pairs.json --limit 300,18,100 --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from imlscan import copymove_keypoints as current
from imlscan.data.datasets import load_dataset
from imlscan.imageio import load_image


def _load_other(package_dir: Path):
    path = package_dir / "imlscan" / "copymove_keypoints.py"
    spec = importlib.util.spec_from_file_location("other_copymove_keypoints", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no detector at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, help="folder holding the other version's imlscan/ package")
    ap.add_argument("datasets", nargs="+", help="pairs.json files (or Tp/Gt folders)")
    ap.add_argument("--limit", help="comma-separated: at most this many photos of each dataset")
    ap.add_argument("--size", type=int, default=512, help="side the detector sees (the shipped size)")
    ap.add_argument("--threads", type=int, help="torch and OpenCV threads (default: theirs)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    limits = [int(x) for x in args.limit.split(",")] if args.limit else [None] * len(args.datasets)
    paths = [s.image_path for spec, n in zip(args.datasets, limits) for s in load_dataset(spec).items[:n]]
    other = _load_other(args.other)
    detectors = {"this": current.KeypointMatcher(), "other": other.KeypointMatcher()}
    seconds = dict.fromkeys(detectors, 0.0)
    differing, fired = [], 0
    for path in paths:
        rgb = cv2.resize(load_image(path).rgb, (args.size, args.size), interpolation=cv2.INTER_LINEAR)
        maps = {}
        for name, det in detectors.items():  # alternating, so that load affects both alike
            t0 = time.perf_counter()
            maps[name] = det.prob_map(rgb)
            seconds[name] += time.perf_counter() - t0
        fired += bool(maps["this"].max() > 0)
        if not np.array_equal(maps["this"], maps["other"]):
            differing.append(str(path))
    print(
        json.dumps(
            {
                "photos": len(paths),
                "detector_fired_on": fired,
                "maps_differing": len(differing),
                "differing": differing[:20],
                "seconds_per_photo": {k: round(v / max(1, len(paths)), 4) for k, v in seconds.items()},
                "threads": args.threads or "default",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
