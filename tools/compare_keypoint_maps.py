"""Compare a copy-move detector of this checkout with another version's, photo by photo: are
the results identical, and how long does each take? For changes meant to be exact (speed-ups),
run on a few hundred photos before trusting them. ``--detector keypoints`` (the default)
compares the keypoint detector's maps; ``--detector dense`` the dense matcher's search (its best
match and offset for every cell, which decide its map).

    git archive c83892d imlscan | tar -x -C /tmp/old     # the version to compare with
    python tools/compare_keypoint_maps.py /tmp/old data/synth-calib/pairs.json \
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

from imlscan.data.datasets import load_dataset
from imlscan.imageio import load_image
from imlscan.scanning import copymove as current_dense
from imlscan.scanning import copymove_keypoints as current

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _load_other(package_dir: Path, module: str = "copymove_keypoints"):
    """The other version's detector module: ``imlscan/NAME.py``, or one subpackage down, where
    later versions keep it. Its own ``imlscan`` imports resolve against this checkout's package."""
    package = package_dir / "imlscan"
    found = [package / f"{module}.py", *sorted(package.glob(f"*/{module}.py"))]
    path = next((p for p in found if p.is_file()), found[0])
    spec = importlib.util.spec_from_file_location(f"other_{module}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise SystemExit(f"no detector at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _keypoint_map(detector):
    return lambda rgb: [detector.prob_map(rgb)]


def _dense_search(matcher):
    """The dense matcher's search on the image normalized as the predictor normalizes it."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0

    def run(rgb: np.ndarray) -> list[np.ndarray]:
        x = (torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() - mean) / std
        return [t.numpy() for t in matcher.best_matches(x)]

    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, help="folder holding the other version's imlscan/ package")
    ap.add_argument("datasets", nargs="+", help="pairs.json files (or Tp/Gt folders)")
    ap.add_argument("--limit", help="comma-separated: at most this many photos of each dataset")
    ap.add_argument("--size", type=int, default=512, help="side the detector sees (the shipped size)")
    ap.add_argument("--threads", type=int, help="torch and OpenCV threads (default: theirs)")
    ap.add_argument("--detector", choices=("keypoints", "dense"), default="keypoints", help="which detector")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    limits = [int(x) for x in args.limit.split(",")] if args.limit else [None] * len(args.datasets)
    paths = [s.image_path for spec, n in zip(args.datasets, limits) for s in load_dataset(spec).items[:n]]
    if args.detector == "dense":
        dense = current_dense.CopyMoveMatcher()
        other_dense = _load_other(args.other, "copymove").CopyMoveMatcher()
        detectors = {"this": _dense_search(dense), "other": _dense_search(other_dense)}
    else:
        other = _load_other(args.other).KeypointMatcher()
        detectors = {"this": _keypoint_map(current.KeypointMatcher()), "other": _keypoint_map(other)}
    seconds = dict.fromkeys(detectors, 0.0)
    differing, fired = [], 0
    for path in paths:
        rgb = cv2.resize(load_image(path).rgb, (args.size, args.size), interpolation=cv2.INTER_LINEAR)
        out = {}
        for name, run in detectors.items():  # alternating, so that load affects both alike
            t0 = time.perf_counter()
            out[name] = [np.asarray(a) for a in run(rgb)]
            seconds[name] += time.perf_counter() - t0
        if args.detector == "dense":
            zncc, offsets = (torch.from_numpy(a) for a in out["this"])
            fired += bool(dense.map_from_matches(zncc, offsets, rgb.shape[:2]).max() > 0)
        else:
            fired += bool(out["this"][0].max() > 0)
        if not all(np.array_equal(a, b) for a, b in zip(out["this"], out["other"])):
            differing.append(str(path))
    print(
        json.dumps(
            {
                "photos": len(paths),
                "detector_fired_on": fired,
                "detector": args.detector,
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
