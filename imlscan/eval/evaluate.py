"""``imlscan eval``: a model on a benchmark dataset, with the field's conventions made explicit.

One evaluation = one dataset x one or more settings (the clean images, then each robustness
perturbation). Images are decoded, perturbed and brought to the protocol's resolution in worker
processes that prefetch ahead of the model; predictions run in batches; each map is scored at
once and dropped, so memory stays bounded whatever the dataset size (only one small row of
numbers per image and fixed-size histograms are kept). Nothing here imports torch at module
level, so spawned decoding workers start fast.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imlscan._version import __version__
from imlscan.data.datasets import Dataset, Sample, image_size, read_mask, read_rgb
from imlscan.defaults import PAPER_SIZE
from imlscan.errors import ImlscanError, UsageError
from imlscan.eval.metrics import (
    EXACT_MAX_PIXELS,
    HIST_BINS,
    MetricAccumulator,
    bootstrap_ci,
    f1_on_grid,
    image_level_metrics,
    roc_auc,
    roc_points,
)
from imlscan.eval.perturb import Perturbation
from imlscan.eval.plot import line_plot
from imlscan.fsutil import atomic_path, atomic_write_text
from imlscan.imageio import from_array, read_file
from imlscan.safetext import dumps_json
from imlscan.scanning.fusion import FusionRule, fuse_traces
from imlscan.scanning.traces import TRACES, Photo, compute_traces
from imlscan.scanning.workers import decoding_pool

PROTOCOLS = {
    "paper": (
        "image resized to 512x512 (bilinear), mask resized to 512x512 (nearest), prediction and "
        "metrics at 512x512: as the SparseViT paper and IMDL-BenCo score"
    ),
    "native": "prediction and mask at each image's original resolution",
}
HEADLINE = ("pixel_f1", "pixel_f1_best", "pixel_auc", "pixel_iou")
IMAGE_HEADLINE = ("image_auc", "image_acc")
METRIC_NAMES = (
    "pixel_f1",
    "pixel_f1_best",
    "pixel_auc",
    "pixel_iou",
    "pixel_precision",
    "pixel_recall",
    "pixel_f1_dataset_best",
    "dataset_best_threshold",
    "pooled_pixel_f1",
    "pooled_pixel_f1_best",
    "pooled_pixel_auc",
    "pooled_pixel_iou",
    "pooled_pixel_precision",
    "pooled_pixel_recall",
    "pixel_f1_flag_all_baseline",
    "pooled_pixel_f1_flag_all_baseline",
    "pixel_fpr_authentic",
    "image_auc",
    "image_acc",
    "image_balanced_acc",
    "image_f1",
    "image_tpr",
    "image_fpr",
    *(f"image_{k}_above_reference_p{q}" for q in (90, 95) for k in ("tpr", "fpr")),
)
REFERENCE_CUTS = (90, 95)
CSV_COLUMNS = (
    "setting",
    "index",
    "image",
    "mask",
    "label",
    "width",
    "height",
    "eval_width",
    "eval_height",
    "image_score",
    "authentic_percent_lower",
    "pixel_f1",
    "pixel_f1_best",
    "best_threshold",
    "pixel_auc",
    "pixel_iou",
    "pixel_precision",
    "pixel_recall",
    "pixel_fpr",
    "tp",
    "fp",
    "fn",
    "tn",
)


def conventions(threshold: float, protocol: str, n_resamples: int, seed: int, score_definition: str) -> dict:
    """Every convention behind the numbers, one line each (also in docs/eval.md)."""
    return {
        "threshold": f"a pixel is predicted manipulated when p > {threshold:g} (strict)",
        "averaging": "pixel_* metrics are computed per image and averaged over the manipulated images "
        "(images with a non-empty mask); authentic images do not enter them",
        "pooled": "pooled_* metrics count all pixels of all images (authentic included) as one set; "
        f"pooled AUC and pooled best F1 use {HIST_BINS:,}-bin histograms",
        "pixel_f1_best": "mean over manipulated images of each image's F1 at its own best threshold",
        "pixel_f1_dataset_best": f"mean per-image F1 at the one threshold (grid k/{HIST_BINS:,}) best for the dataset",
        "auc": "exact ROC AUC with tied scores counting half (as scikit-learn); undefined (null) for an all-0 "
        "or all-1 mask, so such images are left out of the mean",
        "large_maps": f"per-image AUC and best F1 of maps above {EXACT_MAX_PIXELS:,} pixels are computed on the "
        "map quantized to 16 bits (65,536 levels), which is O(pixels) instead of a sort",
        "pixel_f1_flag_all_baseline": "per-image F1 of flagging every pixel (2|M|/(|M|+N)), averaged like "
        "pixel_f1: the floor a useful detector must beat, since per-image F1 rewards flagging everything "
        "when regions are large",
        "zero_division": "F1, IoU, precision and recall are 0 when their denominator is 0",
        "protocol": f"{protocol}: {PROTOCOLS[protocol]}",
        "image_score": score_definition,
        "image_level": "defined only when the dataset has authentic and manipulated images; an image is "
        f"predicted manipulated when its image score > {threshold:g}; image_auc is the ROC AUC of the scores",
        "image_fpr": f"fraction of authentic images whose image score > {threshold:g}",
        "above_reference": "image_tpr_above_reference_pQ / image_fpr_above_reference_pQ: fractions of the "
        "manipulated / authentic images whose score is higher than more than Q% of the weights' authentic "
        "reference scores (score_vs_authentic.percent_lower > Q, as imlscan scan reports it; the score "
        "computed from the map at the protocol's resolution); only for calibrated weights evaluated in "
        "their own protocol, and defined for a class only when the dataset has it",
        "pixel_fpr_authentic": f"mean over authentic images of the fraction of pixels with p > {threshold:g}",
        "bootstrap": f"95% percentile intervals from {n_resamples} resamples of images with replacement "
        f"(seed {seed}); pixel metrics resample manipulated images, image metrics all images",
        "perturbations": "applied to the image as stored, before the protocol's resize; the mask follows "
        "geometric changes (nearest)",
        "exif": "images and masks are read as stored, without EXIF rotation (masks follow the stored grid)",
        "traces": "forensic traces read each file at its own resolution (under a perturbation: the perturbed "
        "file, JPEG when the chain ends with a JPEG step, else PNG); their maps are resized to the protocol's "
        "size and fused by the weights' fusion rule (metrics.json 'traces'), or scored alone with --trace-alone",
    }


def _image_score_fn() -> tuple[Callable[[np.ndarray], float], str]:
    """The image-level score of ``imlscan scan`` when available, else the map's maximum."""
    try:
        from imlscan.scanning.result import SCORE_DEFINITION, image_score

        return image_score, "the image score of 'imlscan scan': " + SCORE_DEFINITION
    except ImportError:  # pragma: no cover - scan's module is part of the package
        return (lambda p: float(p.max()) if p.size else 0.0), "maximum of the probability map"


@dataclass
class EvalOptions:
    protocol: str = "paper"
    threshold: float = 0.5
    batch_size: int = 4
    workers: int = 2
    limit: int | None = None
    perturbations: list[Perturbation] = field(default_factory=list)
    bootstrap: int = 1000
    seed: int = 0
    save_predictions: bool = False
    # Forensic traces: None = as the weights' fusion rule says; () = none (the network alone);
    # names = the rule's terms for those traces only. trace_alone: score one trace's own map.
    traces: tuple[str, ...] | None = None
    trace_alone: str | None = None

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"unknown protocol {self.protocol!r}", hint="use paper or native")
        if not (0.0 <= self.threshold <= 1.0) or math.isnan(self.threshold):
            raise UsageError(f"threshold {self.threshold} is outside [0, 1]")
        if self.batch_size < 1 or self.workers < 0 or self.bootstrap < 0:
            raise UsageError("--batch-size must be >= 1, --workers >= 0 and --bootstrap >= 0")
        if self.limit is not None and self.limit < 1:
            raise UsageError("--limit must be >= 1")
        if self.trace_alone is not None and self.trace_alone not in TRACES:
            raise UsageError(f"unknown trace {self.trace_alone!r}", hint=f"known: {', '.join(TRACES)}")

    def trace_names(self, rule: FusionRule | None) -> tuple[str, ...]:
        """The traces each image needs: the one scored alone, or the rule's (restricted to
        ``traces`` when given); none without a rule."""
        if self.trace_alone is not None:
            return (self.trace_alone,)
        if rule is None:
            return ()
        return tuple(n for n in rule.traces if self.traces is None or n in self.traces)


# ---------------------------------------------------------------------------------------------
# Gates


def parse_gates(specs: list[str]) -> list[tuple[str, float]]:
    """``METRIC=VALUE`` strings of ``--fail-under``; unknown metric names are usage errors."""
    gates = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"bad --fail-under {spec!r}", hint="use METRIC=VALUE, e.g. pixel_f1=0.45")
        if name not in METRIC_NAMES:
            raise UsageError(f"unknown metric {name!r} in --fail-under", hint="metrics: " + ", ".join(METRIC_NAMES))
        try:
            v = float(value)
        except ValueError:
            raise UsageError(f"bad --fail-under {spec!r}: {value!r} is not a number") from None
        gates.append((name, v))
    return gates


def check_gates(report: dict, gates: list[tuple[str, float]]) -> list[str]:
    """Failure messages (empty when every gate passes); an undefined metric fails its gate."""
    failures = []
    for name, limit in gates:
        v = report["metrics"].get(name)
        if v is None:
            failures.append(f"{report['dataset']['name']}: {name} is undefined, cannot check >= {limit:g}")
        elif v < limit:
            failures.append(f"{report['dataset']['name']}: {name} = {v:.4f} < {limit:g}")
    return failures


# ---------------------------------------------------------------------------------------------
# Preflight and decoding (worker side)


def preflight(dataset: Dataset, items: list[Sample]) -> None:
    """Fail before any model time is spent when files are missing or image/mask sizes differ."""
    problems = []
    for s in items:
        for p in (s.image_path, s.mask_path):
            if p is not None and not p.exists():
                problems.append(f"missing {p}")
        if s.mask_path is not None and s.image_path.exists() and s.mask_path.exists():
            try:
                if image_size(s.image_path) != image_size(s.mask_path):
                    problems.append(f"image/mask size mismatch: {s.mask_path}")
            except ImlscanError as e:
                problems.append(f"unreadable: {e.message}")
        if len(problems) > 3:
            break
    if problems:
        raise ImlscanError(
            f"dataset {dataset.name}: {'; '.join(problems[:3])}",
            hint=f"run 'imlscan eval --check {dataset.source}' (and --fix-masks to fix masks into a new folder)",
        )


def prepare_item(task: dict[str, Any]) -> dict[str, Any]:
    """Decode, perturb and bring one sample to the protocol's resolution (runs in a worker)."""
    try:
        rgb = read_rgb(task["image"])
        h, w = rgb.shape[:2]
        mask = read_mask(task["mask"]) if task["mask"] else None
        if mask is not None and mask.shape != (h, w):
            raise ImlscanError(
                f"mask {task['mask']} is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h}",
                hint="run 'imlscan eval --check DATASET --fix-masks'",
            )
        pert: Perturbation | None = task["perturbation"]
        names = task.get("traces") or ()
        data = read_file(task["image"]) if names and pert is None else None
        if pert is not None:
            if names:
                rgb, mask, data = pert.apply_file(rgb, mask, seed=task["seed"], index=task["index"])
            else:
                rgb, mask = pert.apply(rgb, mask, seed=task["seed"], index=task["index"])
        # Traces read the file at its own resolution, as stored (eval's masks follow the stored grid).
        traces = compute_traces(Photo(data, from_array(rgb)), names) if names else {}
        if task["protocol"] == "paper":
            size = task["size"]
            rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
            for r in traces.values():
                if r.map is not None:
                    r.map = cv2.resize(r.map, (size, size), interpolation=cv2.INTER_LINEAR)
            if mask is not None:
                mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
        if mask is None:
            mask = np.zeros(rgb.shape[:2], bool)
        kp = None
        if task.get("keypoints") is not None:
            from imlscan.scanning.copymove_keypoints import map_ahead

            kp = map_ahead(task["keypoints"], rgb)
        return {
            "index": task["index"],
            "rgb": rgb,
            "mask": mask,
            "width": w,
            "height": h,
            "error": None,
            "keypoints": kp,
            "traces": traces,
        }
    except ImlscanError as e:
        return {"index": task["index"], "error": e.message, "hint": e.hint}


def stream_items(tasks: list[dict[str, Any]], workers: int, window: int) -> Iterator[dict[str, Any]]:
    """Prepared items in order, with up to ``window`` decodes in flight ahead of the consumer."""
    pool: Any = decoding_pool(workers, len(tasks))
    pending: deque[Future] = deque()
    todo = iter(tasks)
    try:
        for t in todo:
            pending.append(pool.submit(prepare_item, t))
            if len(pending) >= window:
                break
        while pending:
            fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(prepare_item, nxt))
            yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class SettingResult:
    """Everything kept about one setting: per-image rows, histograms, image scores."""

    label: str
    perturbation: Perturbation | None
    acc: MetricAccumulator
    scores: list[float] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)
    ci: dict = field(default_factory=dict)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "setting"


def run_setting(
    items: list[Sample],
    predictor: Any,
    opts: EvalOptions,
    perturbation: Perturbation | None,
    *,
    score_fn: Callable[[np.ndarray], float],
    pred_dir: Path | None = None,
    advance: Callable[[int], None] | None = None,
    reference: dict[str, Any] | None = None,
) -> SettingResult:
    """Evaluate one setting over ``items``, streaming; with ``reference`` (the weights' calibration),
    each image's score is also ranked among its authentic reference scores as a scan ranks it."""
    from imlscan.scanning.result import authentic_rank

    label = "clean" if perturbation is None else perturbation.label
    res = SettingResult(label, perturbation, MetricAccumulator(threshold=opts.threshold))
    keypoint_job = predictor.keypoint_job()
    rule = fusion_rule(predictor, opts)
    trace_names = opts.trace_names(rule)
    tasks = [
        {
            "index": i,
            "image": str(s.image_path),
            "mask": str(s.mask_path) if s.mask_path else None,
            "perturbation": perturbation,
            "protocol": opts.protocol,
            "size": PAPER_SIZE,
            "seed": opts.seed,
            "keypoints": keypoint_job,
            "traces": trace_names,
        }
        for i, s in enumerate(items)
    ]
    t0 = time.perf_counter()
    batch: list[dict[str, Any]] = []

    def score(done: list[dict[str, Any]], probs: list[np.ndarray]) -> None:
        for it, prob in zip(done, probs):
            s = items[it["index"]]
            image_score = float(score_fn(prob))
            rank = authentic_rank(image_score, reference) if reference else None
            res.scores.append(image_score)
            res.labels.append(s.manipulated)
            res.acc.update(
                prob,
                it["mask"],
                setting=label,
                index=it["index"],
                image=str(s.image_path),
                mask=str(s.mask_path) if s.mask_path else "Negative",
                label="manipulated" if s.manipulated else "authentic",
                width=it["width"],
                height=it["height"],
                eval_width=prob.shape[1],
                eval_height=prob.shape[0],
                image_score=image_score,
                authentic_percent_lower=rank["percent_lower"] if rank else None,
            )
            if pred_dir is not None:
                from imlscan.imageio import write_prob_png

                write_prob_png(pred_dir / _slug(label) / f"{it['index']:06d}_{s.image_path.stem}.png", prob)
        if advance:
            advance(len(done))

    # Metrics of batch k run in one background thread (numpy sorts release the GIL) while the
    # model predicts batch k+1; at most two scored batches wait, so memory stays bounded.
    with ThreadPoolExecutor(1) as scorer:
        scoring: deque[Future] = deque()

        def flush() -> None:
            if opts.trace_alone is not None:
                probs = [_alone(it, opts.trace_alone) for it in batch]
            else:
                probs = predictor.predict_batch([it["rgb"] for it in batch], [it.get("keypoints") for it in batch])
                probs = [fuse_traces(p, it["traces"], rule)[0] for p, it in zip(probs, batch)]
            scoring.append(scorer.submit(score, list(batch), probs))
            batch.clear()
            while len(scoring) > 2:
                scoring.popleft().result()

        for item in stream_items(tasks, opts.workers, window=max(2, 2 * opts.workers + opts.batch_size)):
            if item["error"]:
                raise ImlscanError(item["error"], hint=item.get("hint"))
            batch.append(item)
            if len(batch) >= opts.batch_size:
                flush()
        if batch:
            flush()
        while scoring:
            scoring.popleft().result()
    res.seconds = time.perf_counter() - t0
    return res


def fusion_rule(predictor: Any, opts: EvalOptions) -> FusionRule | None:
    """The weights' fusion rule as this evaluation applies it: restricted to ``opts.traces``
    (None: every term; empty: no rule, the network alone)."""
    info = getattr(predictor, "weights_info", None)
    rule = FusionRule.of(info.metadata if info is not None else None)
    if rule is None or opts.traces is None:
        return rule
    return rule.restricted(opts.traces)


def _alone(item: dict[str, Any], name: str) -> np.ndarray:
    """One trace's own map as the prediction (zero where it does not apply)."""
    r = item["traces"].get(name)
    if r is None or not r.applies or r.map is None:
        return np.zeros(item["rgb"].shape[:2], np.float32)
    return np.asarray(r.map, np.float32)


def summarize(res: SettingResult, opts: EvalOptions, *, ci: bool) -> None:
    """Fill ``res.metrics`` (and ``res.ci`` when asked) from the kept rows and histograms."""
    m = res.acc.compute()
    auth = [r["pixel_fpr"] for r in res.acc.rows if r["label"] == "authentic"]
    m["pixel_fpr_authentic"] = float(np.mean(auth)) if auth else math.nan
    m.update(image_level_metrics(res.scores, res.labels, opts.threshold))
    m.update(above_reference_rates(res.acc.rows))
    res.metrics = m
    if not ci or opts.bootstrap == 0:
        return
    man = [r for r in res.acc.rows if r["manipulated"]]
    for key in HEADLINE:
        v = np.array([r[key] for r in man], np.float64)
        v = v[np.isfinite(v)]
        res.ci[key] = list(bootstrap_ci(v.size, lambda idx, v=v: float(v[idx].mean()), **_boot(opts)))
    if "image_auc" in m:
        s, y = np.asarray(res.scores), np.asarray(res.labels)
        pred = s > opts.threshold
        res.ci["image_auc"] = list(bootstrap_ci(y.size, lambda idx: roc_auc(s[idx], y[idx]), **_boot(opts)))
        res.ci["image_acc"] = list(bootstrap_ci(y.size, lambda idx: float((pred[idx] == y[idx]).mean()), **_boot(opts)))


def above_reference_rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per class, the share of images ranked above REFERENCE_CUTS of the authentic references
    ({} when the rows carry no rank; a class absent from the dataset is left out)."""
    ranked = [r for r in rows if r.get("authentic_percent_lower") is not None]
    out: dict[str, float] = {}
    for key, label in (("tpr", "manipulated"), ("fpr", "authentic")):
        group = [r["authentic_percent_lower"] for r in ranked if r["label"] == label]
        for q in REFERENCE_CUTS:
            if group:
                out[f"image_{key}_above_reference_p{q}"] = float(np.mean([v > q for v in group]))
    return out


def _boot(opts: EvalOptions) -> dict:
    return {"n_resamples": opts.bootstrap, "seed": opts.seed}


def _clean_json(x: Any) -> Any:
    """nan/inf -> null, numpy scalars -> Python: metrics.json stays strict JSON."""
    if isinstance(x, dict):
        return {k: _clean_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean_json(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _reference(info: Any, opts: EvalOptions) -> dict[str, Any] | None:
    """The weights' calibration when a scan in this protocol would rank against its references (the
    weights' own protocol, as in a scan); ``authentic_rank`` itself refuses missing or stale ones."""
    from imlscan.weights.store import preprocessing_override_note

    calibration = ((info.metadata or {}) if info is not None else {}).get("calibration")
    mode = "resize" if opts.protocol == "paper" else "native"
    return None if preprocessing_override_note(info, mode, PAPER_SIZE if mode == "resize" else None) else calibration


def evaluate_dataset(
    dataset: Dataset,
    predictor: Any,
    opts: EvalOptions,
    *,
    out_dir: Path | None = None,
    advance: Callable[[int], None] | None = None,
) -> tuple[dict, list[SettingResult]]:
    """Evaluate one dataset under every setting; returns the metrics.json dict and the settings."""
    opts.validate()
    items = dataset.items[: opts.limit] if opts.limit else list(dataset.items)
    preflight(dataset, items)
    score_fn, score_definition = _image_score_fn()
    pred_dir = out_dir / "predictions" if (out_dir is not None and opts.save_predictions) else None
    info = getattr(predictor, "weights_info", None)
    reference = _reference(info, opts)
    t0 = time.perf_counter()
    settings: list[SettingResult] = []
    for k, pert in enumerate([None, *opts.perturbations]):
        res = run_setting(
            items, predictor, opts, pert, score_fn=score_fn, pred_dir=pred_dir, advance=advance, reference=reference
        )
        summarize(res, opts, ci=k == 0)
        settings.append(res)
    seconds = time.perf_counter() - t0
    clean = settings[0]
    weights = info.to_dict() if info is not None else {"name": "unknown", "trained": None}
    warnings = []
    if info is not None and not info.trained:
        warnings.append("UNTRAINED MODEL: these weights were never trained; the numbers mean nothing")
    try:
        from imlscan.weights.store import preprocessing_override_note

        mode = "resize" if opts.protocol == "paper" else "native"
        note = preprocessing_override_note(info, mode, PAPER_SIZE if mode == "resize" else None)
    except ImportError:  # pragma: no cover - older weights module
        note = None
    if note:
        warnings.append(note)
    n_empty = sum(1 for r in clean.acc.rows if r["label"] == "manipulated" and not r["manipulated"])
    if n_empty:
        warnings.append(f"{n_empty} manipulated image(s) have an empty mask: left out of the pixel averages")
    if clean.acc.n_manipulated == 0:
        warnings.append("no manipulated image with a non-empty mask: pixel metrics are undefined")
    import torch

    n = len(items)
    report = {
        "imlscan_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {
            "name": dataset.name,
            "source": str(dataset.source),
            "layout": dataset.layout,
            "n_total": len(dataset.items),
            "limit": opts.limit,
        },
        "protocol": {"name": opts.protocol, "description": PROTOCOLS[opts.protocol]}
        | ({"size": PAPER_SIZE} if opts.protocol == "paper" else {}),
        "weights": weights,
        "copy_move": predictor.copy_move.settings() if predictor.copy_move is not None else None,
        "traces": {
            "alone": opts.trace_alone,
            "fusion": None if (rule := fusion_rule(predictor, opts)) is None else rule.to_dict(),
            "computed": list(opts.trace_names(rule)),
        },
        "n_images": n,
        "n_manipulated": sum(s.manipulated for s in items),
        "n_authentic": sum(not s.manipulated for s in items),
        "threshold": opts.threshold,
        "metrics": clean.metrics,
        "ci": clean.ci,
        "bootstrap": {"resamples": opts.bootstrap, "seed": opts.seed, "level": 0.95, "unit": "image"},
        "robustness": [
            {
                "setting": s.label,
                "family": s.perturbation.family if s.perturbation else None,
                "strength": s.perturbation.strength if s.perturbation else None,
                "metrics": s.metrics,
            }
            for s in settings
        ],
        "conventions": conventions(opts.threshold, opts.protocol, opts.bootstrap, opts.seed, score_definition),
        "timing": {
            "seconds": round(seconds, 3),
            "images_per_second": round(n * len(settings) / seconds, 3) if seconds > 0 else None,
            "per_setting_seconds": {s.label: round(s.seconds, 3) for s in settings},
            "device": str(getattr(predictor, "device", "")),
            "precision": getattr(predictor, "precision", None),
            "batch_size": opts.batch_size,
            "workers": opts.workers,
        },
        "warnings": warnings,
    }
    report = _clean_json(report)
    if out_dir is not None:
        report["files"] = write_outputs(report, settings, out_dir)
    return report, settings


# ---------------------------------------------------------------------------------------------
# Outputs


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table_columns(reports: list[dict]) -> list[str]:
    cols = [*HEADLINE[:1], "pixel_f1_flag_all_baseline", *HEADLINE[1:]]
    if any(r["metrics"].get("image_auc") is not None for r in reports):
        cols += list(IMAGE_HEADLINE)
    return cols


def settings_table_md(report: dict) -> str:
    cols = table_columns([report])
    lines = ["| setting | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row in report["robustness"]:
        lines.append(f"| {row['setting']} | " + " | ".join(_fmt(row["metrics"].get(c)) for c in cols) + " |")
    return "\n".join(lines)


def comparison_md(reports: list[dict]) -> str:
    cols = table_columns(reports)
    lines = [
        "| dataset | protocol | images | " + " | ".join(cols) + " |",
        "|---|---|---:|" + "---:|" * len(cols),
    ]
    for r in reports:
        vals = " | ".join(_fmt(r["metrics"].get(c)) for c in cols)
        lines.append(f"| {r['dataset']['name']} | {r['protocol']['name']} | {r['n_images']} | {vals} |")
    return "\n".join(lines)


def metrics_md(report: dict) -> str:
    w = report["weights"]
    parts = [f"# Evaluation: {report['dataset']['name']}", ""]
    parts += [f"> **Warning:** {x}" for x in report["warnings"]] + ([""] if report["warnings"] else [])
    parts += [
        f"- Dataset: `{report['dataset']['source']}` ({report['n_images']} images: "
        f"{report['n_manipulated']} manipulated, {report['n_authentic']} authentic)",
        f"- Protocol: **{report['protocol']['name']}**: {report['protocol']['description']}",
        f"- Weights: {w.get('name')} (sha256 {str(w.get('sha256'))[:12]}, trained: {w.get('trained')})",
        f"- Threshold: p > {report['threshold']:g}; imlscan {report['imlscan_version']}, "
        f"torch {report['torch_version']}",
        "",
        settings_table_md(report),
        "",
        "95% bootstrap intervals (clean): "
        + ", ".join(f"{k} [{_fmt(a)}, {_fmt(b)}]" for k, (a, b) in report["ci"].items()),
        "",
        "Pooled (all pixels together): "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in report["metrics"].items() if k.startswith("pooled_")),
        "",
    ]
    ranked = {k: v for k, v in report["metrics"].items() if "_above_reference_" in k}
    if ranked:
        parts += [
            "Ranked against the weights' authentic references (as `score_vs_authentic`): "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in ranked.items()),
            "",
        ]
    parts += [
        "## Conventions",
        "",
    ]
    parts += [f"- **{k}**: {v}" for k, v in report["conventions"].items()]
    return "\n".join(parts) + "\n"


def write_csv(path: Path, settings: list[SettingResult]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            wr.writerow(CSV_COLUMNS)
            for s in settings:
                for r in s.acc.rows:
                    wr.writerow(["" if _clean_json(r.get(c)) is None else r.get(c) for c in CSV_COLUMNS])


def write_plots(report: dict, settings: list[SettingResult], out: Path) -> list[str]:
    clean = settings[0]
    files = []
    series = {}
    if clean.acc.n_manipulated:
        fpr, tpr = roc_points(clean.acc.pooled_curve())
        series["pixels, pooled"] = (fpr, tpr)
    if "image_auc" in clean.metrics:
        s, y = np.asarray(clean.scores), np.asarray(clean.labels)
        from imlscan.eval.metrics import score_curve

        fpr, tpr = roc_points(score_curve(s, y))
        series["images"] = (fpr, tpr)
    if series:
        line_plot(
            series,
            out / "roc.png",
            title=f"ROC, {report['dataset']['name']} ({report['protocol']['name']} protocol)",
            xlabel="false-positive rate",
            ylabel="true-positive rate",
            xlim=(0, 1),
            ylim=(0, 1),
            diagonal=True,
            legend="lower right",
            markers=False,
        )
        files.append("roc.png")
    if clean.acc.n_manipulated:
        t, mean_f1 = clean.acc.mean_f1_curve()
        pooled = f1_on_grid(clean.acc.pos_hist, clean.acc.neg_hist)
        step = max(1, t.size // 400)
        line_plot(
            {"mean per image": (t[::step], mean_f1[::step]), "pooled": (t[::step], pooled[::step])},
            out / "f1_threshold.png",
            title=f"F1 vs threshold, {report['dataset']['name']}",
            xlabel="threshold (p > t)",
            ylabel="pixel F1",
            xlim=(0, 1),
            ylim=(0, 1),
            markers=False,
        )
        files.append("f1_threshold.png")
    families: dict[str, list[SettingResult]] = {}
    for s in settings[1:]:
        families.setdefault(s.perturbation.family, []).append(s)  # type: ignore[union-attr]
    for fam, group in families.items():
        group = sorted(group, key=lambda s: s.perturbation.strength)  # type: ignore[union-attr]
        xs = [s.perturbation.strength for s in group]  # type: ignore[union-attr]
        data = {}
        for key, name in (("pixel_f1", "pixel F1"), ("pixel_auc", "pixel AUC")):
            data[name] = (xs, [_nan(s.metrics.get(key)) for s in group])
            c = _nan(clean.metrics.get(key))
            data[f"{name} (clean)"] = ([min(xs), max(xs)] if len(xs) > 1 else [xs[0] * 0.9, xs[0] * 1.1], [c, c])
        name = f"robustness_{_slug(fam)}.png"
        line_plot(
            data,
            out / name,
            title=f"Robustness to {fam}, {report['dataset']['name']}",
            xlabel=f"{fam.split('+')[-1]} strength",
            ylabel="metric",
            ylim=(0, 1),
        )
        files.append(name)
    return files


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _md_table_html(md: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in md.splitlines() if not r.startswith("|---")]
    out = ["<table>"]
    for i, cells in enumerate(rows):
        tag = "th" if i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def report_html(report: dict, out: Path, plots: list[str]) -> str:
    e = html.escape
    w = report["weights"]
    warn = "".join(f'<p class="warn">{e(x)}</p>' for x in report["warnings"])
    conv = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in report["conventions"].items())
    ci = ", ".join(f"{e(k)} [{_fmt(a)}, {_fmt(b)}]" for k, (a, b) in report["ci"].items())
    pooled = ", ".join(f"{e(k)} {_fmt(v)}" for k, v in report["metrics"].items() if k.startswith("pooled_"))
    imgs = "".join(_img_tag(out / p) for p in plots)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>imlscan eval: {e(report['dataset']['name'])}</title><style>"
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child{text-align:left}.warn{background:#fee;border:1px solid #c00;padding:8px;font-weight:bold}"
        "img{max-width:100%;display:block;margin:1em 0}</style></head><body>"
        f"<h1>Evaluation: {e(report['dataset']['name'])}</h1>{warn}"
        f"<p>{report['n_images']} images ({report['n_manipulated']} manipulated, {report['n_authentic']} "
        f"authentic) from <code>{e(report['dataset']['source'])}</code>.<br>"
        f"Protocol <b>{e(report['protocol']['name'])}</b>: {e(report['protocol']['description'])}.<br>"
        f"Weights {e(str(w.get('name')))} (sha256 {e(str(w.get('sha256')))}; trained: {e(str(w.get('trained')))}). "
        f"Threshold p &gt; {report['threshold']:g}. imlscan {e(report['imlscan_version'])}, "
        f"torch {e(report['torch_version'])}.</p>"
        f"{_md_table_html(settings_table_md(report))}<p>95% bootstrap intervals (clean): {ci}</p>"
        f"<p>Pooled (all pixels together): {pooled}</p>{imgs}<h2>Conventions</h2><ul>{conv}</ul>"
        "</body></html>\n"
    )


def write_outputs(report: dict, settings: list[SettingResult], out: Path) -> list[str]:
    """metrics.json, per_image.csv, metrics.md, PNG plots and report.html, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, settings, out)
    files = ["metrics.json", "per_image.csv", "metrics.md", *plots, "report.html"]
    if (out / "predictions").is_dir():
        files.append("predictions/")
    report["files"] = files
    write_csv(out / "per_image.csv", settings)
    atomic_write_text(out / "metrics.md", metrics_md(report))
    atomic_write_text(out / "report.html", report_html(report, out, plots))
    atomic_write_text(out / "metrics.json", dumps_json(report, indent=2) + "\n")
    return files


def comparison_json(reports: list[dict]) -> list[dict]:
    return [
        {
            "dataset": r["dataset"]["name"],
            "protocol": r["protocol"]["name"],
            "n_images": r["n_images"],
            "metrics": {k: r["metrics"].get(k) for k in (*HEADLINE, *IMAGE_HEADLINE)},
        }
        for r in reports
    ]


def write_comparison(reports: list[dict], out: Path) -> None:
    atomic_write_text(out / "comparison.md", "# Comparison\n\n" + comparison_md(reports) + "\n")
    atomic_write_text(out / "comparison.json", dumps_json(comparison_json(reports), indent=2) + "\n")
