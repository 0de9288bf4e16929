"""Choose the keypoint copy-move detector's settings on a calibration set, by a rule fixed in advance.

For every image of a pairs.json (paper protocol: the image resized to 512x512), the weights' own
map (the network fused with the dense matcher, keypoints off) and the keypoint matches are
computed once; then every setting on the grid is scored by the mean per-image F1 at 0.5 over the
manipulated images, with the keypoint map fused in, and the mean share of an authentic image's
pixels flagged. The rule, fixed before any of its numbers were seen: the best F1 among the
settings that flag at most ``--max-authentic-fpr`` (the calibration's limit), and only if it beats
the weights without keypoints. Calibrate on training-split forgeries, never on the set you report.

    git show 6b66f6d:weights/imlscan-sparsevit-t-v19.safetensors > runs/v19.safetensors   # v20 was made from v19
    python scripts/select_copy_move_keypoints.py runs/v19.safetensors data/synth-calib/pairs.json \
        --out weights/imlscan-sparsevit-t-v20.safetensors

With ``--out``, the chosen settings are attached (tensors and every other entry unchanged) and a
calibrated input gets its authentic reference scores recomputed with the detector on.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from selection_rule import calibration_images, choose, parser, score_maps

from imlscan.copymove import attach_keypoints
from imlscan.copymove_keypoints import KeypointConfig, KeypointMatcher, both_ways
from imlscan.predict import Predictor
from imlscan.weights import load_model, read_metadata

MIN_INLIERS = (5, 10, 20)
CORR = (0.7, 0.8, 0.9)
MIRROR = (False, True)


def prepare(weights: str, pairs: Path, size: int) -> list[dict]:
    """Per image: the weights' map without keypoints, the grey image, its one-way matches
    (direct and mirrored) and the mask, at ``size``."""
    predictor = Predictor(load_model(weights, device="cpu"), mode="resize", size=size)
    if predictor.copy_move is not None:  # the input's own keypoint settings, if any, are off while measuring
        predictor.copy_move.keypoints = None
    matcher = KeypointMatcher(KeypointConfig(mirror=True))
    rows = []
    for rgb, mask in calibration_images(pairs, size):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        rows.append(
            {"prob": predictor.predict_prob(rgb), "gray": gray, "searches": matcher.searches(gray), "mask": mask}
        )
    return rows


def score(rows: list[dict], config: KeypointConfig | None) -> dict[str, float]:
    """Mean F1 at 0.5 over manipulated images and mean authentic pixel rate, keypoints on or off."""
    matcher = KeypointMatcher(config) if config is not None else None

    def fused(r: dict) -> np.ndarray:
        if matcher is None:
            return r["prob"]
        searches = r["searches"] if matcher.config.mirror else r["searches"][:1]
        found = matcher.transforms(*both_ways(searches))
        return np.maximum(r["prob"], matcher.region_map(r["gray"], found))

    return score_maps((fused(r), r["mask"]) for r in rows)


def grid() -> list[KeypointConfig]:
    base = KeypointConfig()
    return [replace(base, min_inliers=n, corr=c, mirror=m) for m in MIRROR for n in MIN_INLIERS for c in CORR]


def select(rows: list[dict], max_authentic_fpr: float) -> tuple[dict | None, list[dict]]:
    """(the chosen setting or None, every setting's scores, keypoints off first)."""
    table = [{"config": None, **score(rows, None)}]
    table += [{"config": c.to_dict(), **score(rows, c)} for c in grid()]
    return choose(table, max_authentic_fpr), table


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--cache", type=Path, help="keep the prepared maps and matches here (a pickle), to re-score")
    a = ap.parse_args(argv)
    if a.cache is not None and a.cache.exists():
        rows = pickle.loads(a.cache.read_bytes())
    else:
        rows = prepare(a.weights, a.pairs, a.size)
        if a.cache is not None:
            a.cache.write_bytes(pickle.dumps(rows))
    chosen, table = select(rows, a.max_authentic_fpr)
    for s in table:
        c = s["config"]
        name = (
            "keypoints off"
            if c is None
            else f"mirror {c['mirror']!s:5s} inliers {c['min_inliers']:2d} corr {c['corr']}"
        )
        print(f"{name:34s} F1 {s['f1']:.4f}  authentic {s['authentic_fpr']:.6f}")
    print("chosen:", json.dumps(chosen))
    if chosen and a.out:
        note = {
            "selected_on": str(a.pairs),
            "selected_f1": round(chosen["f1"], 4),
            "keypoints_off_f1": round(table[0]["f1"], 4),
        }
        calibrated = bool(read_metadata(a.weights).get("calibration"))
        config = KeypointConfig.from_dict(chosen["config"])
        attach_keypoints(a.weights, a.out, config, note=note, references=a.pairs if calibrated else None)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
