# Frozen lab record: ran at commit 58b670f (2026-11-26); kept as run, not maintained. See lab/README.md.
"""What the duplication cue contributes: per-image pixel AUC of a ``sparsevit-*-dup`` model with
its cue and with the cue switched off, and of the cue's raw top-1 ZNCC alone, at the paper
protocol's 512x512 input. Runs on a synthetic set's pure-translation copy-moves (a
``manifest.json`` written by ``imlscan synth``) or on every manipulated pair of a ``pairs.json``.

    python scripts/dup_cue_probe.py data/synth-val/manifest.json runs/v16-cal.safetensors
    python scripts/dup_cue_probe.py ../shared/data/real-val/noso/pairs.json runs/v16-cal.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from imlscan.data.datasets import NEGATIVE
from imlscan.imageio import load_image
from imlscan.metrics import pixel_auc
from imlscan.models.sparsevit import IMAGENET_MEAN, IMAGENET_STD
from imlscan.weights import model_from_file

SIZE = 512


def pairs_of(path: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths: every pair of a pairs.json, or a manifest's translated copy-moves."""
    data = json.loads(path.read_text())
    root = path.parent
    if isinstance(data, list):
        return [(root / a, root / b) for a, b in data if b != NEGATIVE]
    return [
        (root / s["image"], root / s["mask"])
        for s in data["samples"]
        if s["kind"] == "copymove" and s.get("scale") == 1.0 and s.get("angle") == 0.0 and not s.get("flip")
    ]


def probe(model: torch.nn.Module, pairs: list[tuple[Path, Path]]) -> dict[str, float]:
    cue = model.head.dup
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rows = []
    for image, mask_path in pairs:
        rgb = cv2.resize(load_image(image).rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
        mask = cv2.resize(mask.astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST) > 0
        x = ((torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std)[None]
        with torch.no_grad():
            with_cue = model(x)[0, 0].numpy()
            model.head.dup = None
            without = model(x)[0, 0].numpy()
            model.head.dup = cue
            top1 = cue.scores(x)[0][0, ..., 0].numpy()
        top1 = cv2.resize(top1, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        rows.append((pixel_auc(with_cue, mask), pixel_auc(without, mask), pixel_auc(top1, mask)))
    r = np.nanmean(np.array(rows, dtype=float), axis=0)
    return {"n": len(rows), "auc_with_cue": r[0], "auc_without_cue": r[1], "auc_top1_zncc": r[2]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="a synth manifest.json or a pairs.json")
    ap.add_argument("weights")
    a = ap.parse_args(argv)
    model, _ = model_from_file(a.weights)
    model.eval()
    if model.head.dup is None:
        raise SystemExit(f"{a.weights}: no duplication cue in this model")
    res = probe(model, pairs_of(a.data))
    print(
        f"{res['n']} images; mean pixel AUC: with the cue {res['auc_with_cue']:.4f}, "
        f"cue off {res['auc_without_cue']:.4f}, top-1 ZNCC alone {res['auc_top1_zncc']:.4f}"
    )


if __name__ == "__main__":
    main()
