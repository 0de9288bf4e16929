"""How often the copy-move detectors fire on photos that were never edited.

The calibration set has 68 authentic photos; a folder of authentic photos (any number, any size)
gives a wider look at false alarms. Each photo is resized to the detectors' size (512x512 for the
shipped settings, as every scan does) and each detector's map is thresholded at 0.5 on its own; the
network is not run. Prints, per detector, the share of photos with any flagged pixel and the mean
share of pixels flagged, and with ``--list`` the photos that fired.

    python tools/copy_move_false_alarms.py ../shared/data/hosts --split val
    python tools/copy_move_false_alarms.py ../shared/data/hosts --keypoints-only --split all --list
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from imlscan.data.synth import host_split
from imlscan.imageio import load_image
from imlscan.scanning.bench import IMAGE_SUFFIXES
from imlscan.scanning.copymove import CopyMoveConfig, CopyMoveMatcher, config_of
from imlscan.scanning.copymove_keypoints import KeypointConfig, KeypointMatcher, keypoint_config_of
from imlscan.weights.store import read_metadata, resolve_weights

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--weights", help="whose settings to use (default: the default weights)")
    ap.add_argument("--split", choices=("train", "val", "all"), default="all", help="hosts' split by file name")
    ap.add_argument("--keypoints-only", action="store_true", help="skip the dense matcher (1 s per photo on 2 cores)")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--list", action="store_true", help="print the photos that fired")
    a = ap.parse_args(argv)
    meta = read_metadata(resolve_weights(a.weights))
    dense_cfg = config_of(meta) or CopyMoveConfig()
    dense = None if a.keypoints_only else CopyMoveMatcher(dense_cfg)
    keypoints = KeypointMatcher(keypoint_config_of(meta) or KeypointConfig())
    files = sorted(p for p in a.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = [p for p in files if a.split == "all" or host_split(p) == a.split][: a.limit]
    size = dense_cfg.size
    rates: dict[str, list[float]] = {"keypoints": []} if dense is None else {"dense": [], "keypoints": []}
    fired: list[tuple[str, str, float]] = []
    for f in files:
        rgb = cv2.resize(load_image(f).rgb, (size, size), interpolation=cv2.INTER_LINEAR)
        maps = {"keypoints": keypoints.prob_map(rgb)}
        if dense is not None:
            x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() - MEAN) / STD
            maps["dense"] = dense.prob_map(x, (size, size))
        for name, m in maps.items():
            share = float((m > 0.5).mean())
            rates[name].append(share)
            if share > 0:
                fired.append((name, str(f), share))
    summary = {
        "folder": str(a.folder),
        "split": a.split,
        "photos": len(files),
        **{
            name: {
                "photos_fired": int(np.count_nonzero(r)),
                "share_of_photos": float(np.mean(np.array(r) > 0)) if r else 0.0,
                "mean_pixel_share": float(np.mean(r)) if r else 0.0,
            }
            for name, r in rates.items()
        },
        "settings": {"dense": None if dense is None else dense_cfg.to_dict(), "keypoints": keypoints.config.to_dict()},
    }
    print(json.dumps(summary, indent=1))
    if a.list:
        for name, f, share in fired:
            print(f"{name:9s} {share:.4f} {f}")


if __name__ == "__main__":
    main()
