# Frozen lab record: ran at commit b3a3976 (2026-11-27); kept as run, not maintained. See lab/README.md.
"""Which image-level score separates forgeries from authentic photos best?

    python scripts/image_score_candidates.py data/synth-calib/pairs.json data/synth-val/pairs.json
    python scripts/image_score_candidates.py eval/v26-calib-paper eval/v26-val-paper

Each argument is a dataset (the weights are run once per image the way ``imlscan scan`` does: the
weights' mode, the map at the original resolution) or a folder written by ``imlscan eval
--save-predictions`` (its saved maps are scored, no model is run). Several candidate image scores
are computed from the same maps. For each input it prints every candidate's image AUC, the share of
forgeries found at the cuts that 90% and 95% of that set's authentic photos stay below, and the
paired difference in image AUC against the current score with a 95% bootstrap interval over images.
Choose on the first input (training-split photos) and confirm on the second: choosing on the set
you report is tuning on the test.

With ``--reference FOLDER`` (the calibration set's saved maps), each candidate's authentic scores
there act as ``score_vs_authentic``'s reference does in a scan: every input also reports the share
of its forgeries and of its authentic photos scoring above 90% and 95% of them. Inputs with one
class only (a set of real forgeries such as NoSo) are then accepted and give those shares alone.
With ``--area MANIFEST`` (the inputs' ``imlscan synth`` manifest), each input also gets every
candidate's image AUC by the edited share of the image (forgeries of one band against all
authentic photos), to see how each score treats small edits.

Rule written before the v26 run (2026-11-27, before any v26 number of these candidates existed):
the candidate with the highest image AUC on ``eval/v26-calib-paper`` (v26, paper protocol, the
300-image calibration set) replaces the current score only if its paired AUC difference against
the current score on ``eval/v26-val-paper`` (500 validation images) has a 95% interval wholly above
zero. Otherwise the score stays. The mean of the top 1% won and was confirmed (model card, "The
image score"), so it is now the shipped score, the first row; the earlier score is "blur 1/32,
max". The rule's own run used the script as of commit 82806ba, whose first row was the earlier score.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from imlscan.metrics import bootstrap_ci, roc_auc
from imlscan.report import image_score

CURRENT = "shipped (imlscan.report.image_score)"


def _blur_max(fraction: float) -> Callable[[np.ndarray], float]:
    def score(prob: np.ndarray) -> float:
        k = max(3, round(min(prob.shape) * fraction)) | 1
        return float(cv2.blur(prob, (k, k), borderType=cv2.BORDER_REFLECT).max())

    return score


def _top_mean(share: float) -> Callable[[np.ndarray], float]:
    def score(prob: np.ndarray) -> float:
        flat = prob.ravel()
        k = max(1, int(flat.size * share))
        return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())

    return score


def largest_region_mass(prob: np.ndarray, threshold: float = 0.5) -> float:
    """Sum of the map over its largest 8-connected region above ``threshold``, per image pixel:
    a region's size and its confidence together, so one large confident region outscores scattered
    warm spots."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((prob > threshold).astype(np.uint8), connectivity=8)
    if n <= 1:
        return 0.0
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return float(prob[labels == biggest].sum() / prob.size)


CANDIDATES: dict[str, Callable[[np.ndarray], float]] = {
    CURRENT: image_score,
    "blur 1/32, max": _blur_max(1 / 32),
    "blur 1/16, max": _blur_max(1 / 16),
    "blur 1/8, max": _blur_max(1 / 8),
    "blur 1/4, max": _blur_max(1 / 4),
    "max pixel": lambda p: float(p.max()),
    "mean of top 0.5%": _top_mean(0.005),
    "mean of top 2%": _top_mean(0.02),
    "mean of top 5%": _top_mean(0.05),
    "mean of top 10%": _top_mean(0.10),
    "flagged fraction (> 0.5)": lambda p: float((p > 0.5).mean()),
    "mean": lambda p: float(p.mean()),
    "largest region's mass (> 0.5)": largest_region_mass,
}


def tpr_at_authentic_quantile(scores: np.ndarray, labels: np.ndarray, q: float = 0.9) -> float:
    """Share of forgeries scoring above the cut that a share ``q`` of authentic photos stay at or below."""
    cut = np.quantile(scores[~labels], q)
    return float((scores[labels] > cut).mean())


def saved_maps(folder: Path) -> Iterator[tuple[int, np.ndarray, bool]]:
    """The dataset indices, maps and labels of an ``eval --save-predictions`` folder (its first setting)."""
    from imlscan.imageio import read_prob_png

    rows = list(csv.DictReader((folder / "per_image.csv").open()))
    if not rows:
        raise SystemExit(f"{folder}: per_image.csv has no rows")
    setting = rows[0]["setting"]
    for r in rows:
        if r["setting"] != setting:
            continue
        name = f"{int(r['index']):06d}_{Path(r['image']).stem}.png"
        yield int(r["index"]), read_prob_png(folder / "predictions" / setting / name), r["label"] == "manipulated"


def model_maps(dataset: str, weights: str | None, limit: int | None) -> Iterator[tuple[int, np.ndarray, bool]]:
    """The maps ``imlscan scan`` would compute for a dataset's images, with their indices and labels."""
    from imlscan.data.datasets import load_dataset, read_rgb
    from imlscan.predict import Predictor
    from imlscan.weights import load_model

    predictor = Predictor(load_model(weights, device="cpu"), precision="fp32")
    for i, s in enumerate(load_dataset(dataset).items[:limit]):
        yield i, predictor.predict_prob(read_rgb(s.image_path)), s.manipulated


def compare(scores: dict[str, np.ndarray], y: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Every candidate's image AUC, forgeries found at the authentic 90%/95% cuts, and its paired
    AUC difference against the current score (the same resampled images for both)."""
    base = scores[CURRENT]
    out = {}
    for name, s in scores.items():
        row = {
            "image_auc": round(roc_auc(s, y), 4),
            "tpr_at_authentic_p90": round(tpr_at_authentic_quantile(s, y, 0.9), 4),
            "tpr_at_authentic_p95": round(tpr_at_authentic_quantile(s, y, 0.95), 4),
        }
        if name != CURRENT:
            lo, hi = bootstrap_ci(
                y.size, lambda i, s=s: roc_auc(s[i], y[i]) - roc_auc(base[i], y[i]), n_resamples=n_resamples, seed=seed
            )
            row["auc_minus_current"] = round(roc_auc(s, y) - roc_auc(base, y), 4)
            row["auc_minus_current_ci95"] = [round(lo, 4), round(hi, 4)]
        out[name] = row
    out["n_manipulated"], out["n_authentic"] = int(y.sum()), int((~y).sum())
    return out


def above_reference(scores: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> dict[str, float | None]:
    """Shares of forgeries and of authentic photos scoring above the reference's 90% and 95% cuts."""
    out: dict[str, float | None] = {}
    for q in (90, 95):
        cut = np.quantile(reference, q / 100)
        for name, group in (("forged", scores[labels]), ("authentic", scores[~labels])):
            out[f"{name}_above_reference_p{q}"] = round(float((group > cut).mean()), 4) if group.size else None
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="datasets (pairs.json, ...) or eval --save-predictions folders")
    ap.add_argument("--weights", default=None, help="for datasets: the weights to run (default: the default)")
    ap.add_argument("--limit", type=int, default=None, help="for datasets: the first N images only")
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples of the paired intervals")
    ap.add_argument("--reference", type=Path, default=None, help="saved maps whose authentic scores are the reference")
    ap.add_argument(
        "--area", type=Path, default=None, help="the synth manifest.json of the inputs: AUC by the edited share"
    )
    args = ap.parse_args(argv)
    reference = None
    if args.reference is not None:
        ref_scores, ref_y, _ = _scores(args.reference, args)
        if ref_y.all():
            raise SystemExit(f"{args.reference}: no authentic image to refer to")
        reference = {name: s[~ref_y] for name, s in ref_scores.items()}
    report = {}
    for source in args.inputs:
        scores, y, indices = _scores(Path(source), args)
        two_classes = y.any() and not y.all()
        if not two_classes and reference is None:
            raise SystemExit(f"{source}: needs both forged and authentic images (or --reference)")
        counts = {"n_manipulated": int(y.sum()), "n_authentic": int((~y).sum())}
        report[source] = compare(scores, y, n_resamples=args.bootstrap) if two_classes else counts
        if reference is not None:
            for name, s in scores.items():
                report[source].setdefault(name, {}).update(above_reference(s, y, reference[name]))
        if args.area is not None and two_classes:
            report[source]["by_area"] = by_area(scores, y, manifest_areas(args.area, indices))
    print(json.dumps(report, indent=2))


def _scores(path: Path, args: argparse.Namespace) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every candidate's score of every image of one input, the images' labels and dataset indices."""
    maps = saved_maps(path) if path.is_dir() else model_maps(str(path), args.weights, args.limit)
    rows: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    labels, indices = [], []
    for index, prob, manipulated in maps:
        labels.append(manipulated)
        indices.append(index)
        for name, fn in CANDIDATES.items():
            rows[name].append(fn(prob))
    return {k: np.asarray(v) for k, v in rows.items()}, np.asarray(labels, bool), np.asarray(indices)


AREA_BANDS = ((0.0, 0.02), (0.02, 0.05), (0.05, 0.15), (0.15, 1.0))


def by_area(scores: dict[str, np.ndarray], y: np.ndarray, areas: np.ndarray) -> dict[str, dict]:
    """Each candidate's image AUC of the forgeries whose edited share of the image falls in each of
    AREA_BANDS against all authentic photos: how the score treats small edits."""
    out = {}
    for lo, hi in AREA_BANDS:
        band = y & (areas >= lo) & (areas < hi)
        keep = band | ~y
        if not band.any() or y[keep].all():
            continue
        row: dict = {"n_forged": int(band.sum())}
        row |= {name: round(roc_auc(s[keep], y[keep]), 4) for name, s in scores.items()}
        out[f"{lo:g}-{hi:g}"] = row
    return out


def manifest_areas(manifest: Path, indices: np.ndarray) -> np.ndarray:
    """The edited share of each image (``area`` in an ``imlscan synth`` manifest; NaN when absent)."""
    samples = {int(s["index"]): s for s in json.loads(manifest.read_text())["samples"]}
    missing = [int(i) for i in indices if int(i) not in samples]
    if missing:
        raise SystemExit(f"{manifest}: no sample with index {missing[0]} (a manifest of another set?)")
    return np.asarray([samples[int(i)].get("area") or np.nan for i in indices], np.float64)


if __name__ == "__main__":
    main()
