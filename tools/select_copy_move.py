"""Choose the copy-move fusion's settings on a calibration set, by a rule fixed in advance.

For every image of a pairs.json (paper protocol: the image resized to 512x512), the network's map
(fusion off) and the matcher's best matches are computed once; then every (radius, threshold) on
the grid is scored by the mean per-image F1 at 0.5 over the manipulated images and the mean share
of an authentic image's pixels flagged. The rule that chose the shipped default's settings: the
best F1 among the settings that flag at most ``--max-authentic-fpr`` (the calibration's limit),
and only if it beats the fusion off. Calibrate on training-split forgeries, never on the set you
report.

    git show cbd8e5f:weights/imlscan-sparsevit-t-v9.safetensors > runs/v9.safetensors   # v19 was made from v9
    python tools/select_copy_move.py runs/v9.safetensors data/synth-calib/pairs.json --out runs/v19.safetensors
    python tools/select_copy_move.py W.safetensors calib/pairs.json                     # the table only

The input's own fusion, if any, is off while measuring, so a file that already carries settings
can be re-selected. With ``--out``, a calibrated input also gets its authentic reference scores
recomputed with the chosen fusion on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from selection_rule import calibration_images, choose, parser, score_maps

from imlscan.calibrate import attach_copy_move
from imlscan.scanning.copymove import CopyMoveConfig, CopyMoveMatcher, fuse
from imlscan.scanning.predict import Predictor
from imlscan.weights.store import load_model, read_metadata

RADII = (1, 2)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def matches(weights: str, pairs: Path, size: int) -> list[dict]:
    """Per image: the network's map, the best-match ZNCC and offsets, and the mask, at ``size``."""
    predictor = Predictor(load_model(weights, device="cpu"), mode="resize", size=size, copy_move=False)
    matcher = CopyMoveMatcher(CopyMoveConfig(size=size))
    rows = []
    for rgb, mask in calibration_images(pairs, size):
        zncc, offsets = matcher.best_matches(predictor.to_tensor([rgb]))
        rows.append({"prob": predictor.predict_prob(rgb), "zncc": zncc, "offsets": offsets, "mask": mask})
    return rows


def score(rows: list[dict], radius: int | None, threshold: float) -> dict[str, float]:
    """Mean F1 at 0.5 over manipulated images and mean authentic pixel rate, fusion on or off."""

    def fused(r: dict) -> np.ndarray:
        p = r["prob"]
        if radius is None:
            return p
        matcher = CopyMoveMatcher(CopyMoveConfig(size=p.shape[0], radius=radius, threshold=threshold))
        return fuse(p, matcher.map_from_matches(r["zncc"], r["offsets"], p.shape))

    return score_maps((fused(r), r["mask"]) for r in rows)


def select(rows: list[dict], max_authentic_fpr: float) -> tuple[dict | None, list[dict]]:
    """(the chosen setting or None, every setting's scores, the fusion off first)."""
    table = [{"radius": None, "threshold": None, **score(rows, None, 0.0)}]
    table += [{"radius": r, "threshold": t, **score(rows, r, t)} for r in RADII for t in THRESHOLDS]
    return choose(table, max_authentic_fpr), table


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    a = ap.parse_args(argv)
    chosen, table = select(matches(a.weights, a.pairs, a.size), a.max_authentic_fpr)
    for s in table:
        name = "fusion off" if s["radius"] is None else f"radius {s['radius']}, threshold {s['threshold']}"
        print(f"{name:28s} F1 {s['f1']:.4f}  authentic {s['authentic_fpr']:.6f}")
    print("chosen:", json.dumps(chosen))
    if chosen and a.out:
        config = CopyMoveConfig(size=a.size, radius=chosen["radius"], threshold=chosen["threshold"])
        note = {
            "selected_on": str(a.pairs),
            "selected_f1": round(chosen["f1"], 4),
            "fusion_off_f1": round(table[0]["f1"], 4),
        }
        calibrated = bool(read_metadata(a.weights).get("calibration"))
        attach_copy_move(a.weights, a.out, config, note=note, references=a.pairs if calibrated else None)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
