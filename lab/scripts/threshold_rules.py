# Frozen lab record: ran at commit 93e803d (2026-11-26); kept as run, not maintained. See lab/README.md.
"""Can a smarter threshold close the gap between F1 at 0.5 and best-threshold F1?

The per-image best threshold is an oracle: it reads the ground truth. This script asks whether a
rule that does not read it gets part of the way, at no more authentic pixels flagged than the
shipped threshold. Three families, each fitted on the first evaluation folder (a calibration
set, never the validation set) and then applied unchanged to the others:

- global: one threshold for every image (what calibration already chose);
- relative: per image, ``clip(a * peak, lo, hi)``, where the peak is the image score or the map's
  maximum (weaker responses are dropped next to a strong one; a monotone change per image, so
  per-image AUC is unchanged);
- gated: ``lo`` where the image score reaches ``s0``, ``hi`` below it (more of the map where the
  image looks manipulated, less where it does not);
- hysteresis: pixels above ``low`` that are connected to a pixel above ``high`` (Canny's rule:
  grow confident regions, drop weak isolated ones).

Input: folders written by ``imlscan eval ... --save-predictions --out DIR``, one setting each.

    python scripts/threshold_rules.py eval/v20-calib-paper eval/v20-val-paper eval/v20-noso-paper
"""

from __future__ import annotations

import argparse
import csv
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from imlscan.data.datasets import read_mask
from imlscan.imageio import read_prob_png

RELATIVE_A = np.round(np.arange(0.3, 1.001, 0.1), 2)
RELATIVE_LO = (0.3, 0.4, 0.5)
RELATIVE_HI = (0.5, 0.7, 0.99)
HYST_LOW = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
HYST_HIGH = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
GLOBAL = np.round(np.arange(0.3, 0.901, 0.025), 3)
SWEEP = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55)
GATE_SCORE = np.round(np.arange(0.5, 0.976, 0.025), 3)
GATE_LO = (0.3, 0.4, 0.45, 0.5)
GATE_HI = (0.5, 0.55, 0.6, 0.7)


@dataclass
class Image:
    prob: np.ndarray
    mask: np.ndarray
    manipulated: bool
    score: float
    best_f1: float


def load(folder: Path) -> list[Image]:
    """The maps, masks (at the maps' size, as ``eval`` scores them) and scores of one folder."""
    rows = list(csv.DictReader((folder / "per_image.csv").open()))
    settings = {r["setting"] for r in rows}
    if len(settings) != 1:
        raise SystemExit(f"{folder}: one setting expected, found {sorted(settings)}")
    images = []
    for r in rows:
        name = f"{int(r['index']):06d}_{Path(r['image']).stem}.png"
        prob = read_prob_png(folder / "predictions" / r["setting"] / name)
        if r["mask"] == "Negative":
            mask = np.zeros(prob.shape, bool)
        else:
            mask = read_mask(r["mask"])
            if mask.shape != prob.shape:
                mask = cv2.resize(mask.astype(np.uint8), prob.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        best = float(r["pixel_f1_best"]) if r["pixel_f1_best"] not in ("", "nan") else float("nan")
        images.append(Image(prob, mask, r["label"] == "manipulated", float(r["image_score"]), best))
    return images


def hysteresis(prob: np.ndarray, low: float, high: float) -> np.ndarray:
    """Pixels above ``low`` in an 8-connected part that holds a pixel above ``high``."""
    n, labels = cv2.connectedComponents((prob > low).astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[prob > high])] = True
    keep[0] = False
    return keep[labels]


def score(images: list[Image], flag: Callable[[Image], np.ndarray]) -> tuple[float, float]:
    """(mean F1 over manipulated images, mean share of authentic images' pixels flagged)."""
    f1s, authentic = [], []
    for im in images:
        pred = flag(im)
        if im.manipulated:
            tp = np.count_nonzero(pred & im.mask)
            wrong = np.count_nonzero(pred ^ im.mask)
            f1s.append(2 * tp / (2 * tp + wrong) if tp or wrong else 0.0)
        else:
            authentic.append(float(pred.mean()))
    return float(np.mean(f1s)) if f1s else float("nan"), float(np.mean(authentic)) if authentic else float("nan")


def rules() -> list[tuple[str, str, Callable[[Image], np.ndarray]]]:
    """Every candidate: (family, parameters, flagging function)."""
    out: list[tuple[str, str, Callable[[Image], np.ndarray]]] = []
    for t in GLOBAL:
        out.append(("global", f"t={t:g}", lambda im, t=t: im.prob > t))
    peaks: dict[str, Callable[[Image], float]] = {"score": lambda im: im.score, "max": lambda im: float(im.prob.max())}
    for (peak, of), a, lo, hi in itertools.product(peaks.items(), RELATIVE_A, RELATIVE_LO, RELATIVE_HI):
        if lo <= hi:
            out.append(
                (
                    "relative",
                    f"{peak} a={a:g} lo={lo:g} hi={hi:g}",
                    lambda im, a=a, lo=lo, hi=hi, of=of: im.prob > min(hi, max(lo, a * of(im))),
                )
            )
    for s0, lo, hi in itertools.product(GATE_SCORE, GATE_LO, GATE_HI):
        out.append(
            (
                "gated",
                f"s0={s0:g} lo={lo:g} hi={hi:g}",
                lambda im, s0=s0, lo=lo, hi=hi: im.prob > (lo if im.score >= s0 else hi),
            )
        )
    for low, high in itertools.product(HYST_LOW, HYST_HIGH):
        if low <= high:
            out.append(
                ("hysteresis", f"low={low:g} high={high:g}", lambda im, lo=low, hi=high: hysteresis(im.prob, lo, hi))
            )
    return out


def fit(images: list[Image], cap: float) -> dict[str, tuple[str, Callable[[Image], np.ndarray], float, float]]:
    """Per family, the rule with the best mean F1 among those flagging at most ``cap``."""
    best: dict[str, tuple[str, Callable[[Image], np.ndarray], float, float]] = {}
    for family, params, flag in rules():
        f1, authentic = score(images, flag)
        if authentic <= cap + 1e-12 and (family not in best or f1 > best[family][2]):
            best[family] = (params, flag, f1, authentic)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fit", type=Path, help="eval folder the rules are fitted on (a calibration set)")
    ap.add_argument("others", type=Path, nargs="*", help="eval folders the fitted rules are applied to")
    args = ap.parse_args(argv)
    sets = {p.name: load(p) for p in [args.fit, *args.others]}
    fitting = sets[args.fit.name]
    base_f1, cap = score(fitting, lambda im: im.prob > 0.5)
    print(f"fitted on {args.fit.name}: F1 {base_f1:.4f} at 0.5, authentic pixels {cap:.4f} (the cap)")
    chosen = fit(fitting, cap)
    header = "| rule | parameters | " + " | ".join(f"{n} F1 / authentic" for n in sets) + " |"
    print(header)
    print("|" + "---|" * (2 + len(sets)))
    lines = [("0.5 (shipped)", "", lambda im: im.prob > 0.5)] + [(f, p, flag) for f, (p, flag, _, _) in chosen.items()]
    for family, params, flag in lines:
        cells = []
        for images in sets.values():
            f1, authentic = score(images, flag)
            cells.append(f"{f1:.4f} / " + ("-" if np.isnan(authentic) else f"{authentic:.4f}"))
        print(f"| {family} | {params} | " + " | ".join(cells) + " |")
    oracle = " | ".join(f"{np.nanmean([i.best_f1 for i in s if i.manipulated]):.4f} / -" for s in sets.values())
    print(f"| per-image best threshold (reads the truth) | | {oracle} |")
    print("\nthe budget's trade: one global threshold, whatever it flags")
    print("| threshold | " + " | ".join(f"{n} F1 / authentic" for n in sets) + " |")
    print("|" + "---|" * (1 + len(sets)))
    for t in SWEEP:
        cells = [score(images, lambda im, t=t: im.prob > t) for images in sets.values()]
        print(f"| {t:g} | " + " | ".join(f"{f:.4f} / " + ("-" if np.isnan(a) else f"{a:.4f}") for f, a in cells) + " |")


if __name__ == "__main__":
    main()
