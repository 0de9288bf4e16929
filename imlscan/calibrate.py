"""Threshold calibration: move a model's decision point to 0.5 by shifting its output bias.

A network trained with BCE on small regions is under-confident: its best threshold is far
below 0.5, so every report at the default threshold under-flags. Calibration measures, on a
labelled set that is *not* the evaluation set (for the default weights: synthetic forgeries
made from training-split photos), the one threshold ``t`` with the best mean per-image F1
among those that keep authentic images almost clean, then subtracts ``logit(t)`` from the
classifier's bias. ``sigmoid(z - logit(t)) > 0.5`` exactly when ``sigmoid(z) > t``, so the
calibrated file gives at 0.5 the masks the original gave at ``t``; AUC and ranking are
unchanged. The offset and the evidence are recorded in the file's metadata.

The image-level score has no such fix: its threshold cannot be moved into the network, and on
our synthetic validation set a cut that keeps authentic photos clean would miss most forgeries.
So calibration records a reference instead: the scores that the calibrated model gives the
set's authentic photos, computed exactly as ``imlscan scan`` computes them. A scan then says
what share of those photos scored lower, which tells a reader how unusual the score is for an
unedited photo without pretending to be a probability.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imlscan.data.datasets import load_dataset, read_mask
from imlscan.defaults import DATASET_MAX_PIXELS, DEFAULT_FUSION_FORM, DEFAULT_THRESHOLD
from imlscan.errors import ImlscanError, UsageError
from imlscan.eval.evaluate import EvalOptions, _image_score_fn, preflight, run_setting
from imlscan.imageio import decode_bytes, read_file
from imlscan.scanning.copymove import CopyMoveConfig
from imlscan.scanning.copymove_keypoints import KeypointConfig
from imlscan.scanning.fusion import FusionRule, fit_rule, form_features
from imlscan.scanning.predict import Predictor
from imlscan.scanning.result import SCORE_VERSION, image_score
from imlscan.scanning.traces import TRACES
from imlscan.weights.store import load_model, model_from_file, read_metadata, rewrite_metadata, save_weights

DEFAULT_MAX_AUTHENTIC_FPR = 0.02
# Keeps the bias finite and a calibration on a degenerate set from silencing the model.
MIN_THRESHOLD, MAX_THRESHOLD = 1e-3, 1 - 1e-3
# Larger reference sets are stored as this many evenly spaced quantiles (keeps the header small).
MAX_REFERENCE_SCORES = 1001


@dataclass
class Calibration:
    """What a calibration measured and applied (also stored under ``calibration`` in the file)."""

    threshold: float
    logit_offset: float
    total_logit_offset: float
    max_authentic_fpr: float | None
    dataset: str
    n_images: int
    n_manipulated: int
    n_authentic: int
    f1_before: float
    f1_after: float
    authentic_fpr_before: float
    authentic_fpr_after: float
    protocol: str = "paper"
    reference_precision: str = "fp32"
    authentic_scores: list[float] = field(default_factory=list)
    score_version: int = SCORE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _rate_at(curve_sum: Any, n: int, threshold: float, bins: int) -> float:
    """Mean curve value at a grid threshold (``k / bins``)."""
    if n == 0:
        return math.nan
    k = int(round(threshold * bins))
    return float(curve_sum[k - 1] / n)


def measure(
    weights: str | os.PathLike,
    dataset: str | os.PathLike,
    *,
    max_authentic_fpr: float | None = DEFAULT_MAX_AUTHENTIC_FPR,
    limit: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    batch_size: int = 4,
    workers: int = 2,
    advance: Callable[[int], None] | None = None,
) -> Calibration:
    """Run ``weights`` over ``dataset`` with the paper protocol and find the threshold."""
    if max_authentic_fpr is not None and not 0.0 <= max_authentic_fpr <= 1.0:
        raise UsageError(f"--max-authentic-fpr {max_authentic_fpr} is outside [0, 1]")
    # The weights first: the command names them first, so their error is the one to report.
    model = load_model(weights, device=device, precision=precision)
    if not model.weights_info.trained:
        raise ImlscanError("calibrating random weights means nothing", hint="give --weights a trained file")
    ds = load_dataset(dataset)
    opts = EvalOptions(protocol="paper", batch_size=batch_size, workers=workers, limit=limit, bootstrap=0)
    opts.validate()
    items = ds.items[:limit] if limit else list(ds.items)
    preflight(ds, items)
    # The bias calibrates the network's own map; a copy-move fusion has its own threshold.
    predictor = Predictor(model, mode="resize", copy_move=False)
    score_fn, _ = _image_score_fn()
    res = run_setting(items, predictor, opts, None, score_fn=score_fn, advance=advance)
    acc = res.acc
    if acc.n_manipulated == 0:
        raise ImlscanError(f"{dataset}: no manipulated image with a non-empty mask", hint="calibration needs forgeries")
    t, _, _ = acc.calibrated_threshold(max_authentic_fpr)
    t = min(max(t, MIN_THRESHOLD), MAX_THRESHOLD)
    meta = model.weights_info.metadata or {}
    previous = float((meta.get("calibration") or {}).get("total_logit_offset", 0.0))
    offset = -logit(t)
    with torch.no_grad():
        bias = model.head.classifier.bias
        bias += offset
        dtype = _storage_dtype(meta)
        if dtype is not None:
            bias.copy_(bias.to(dtype).float())  # as apply() will store it
    authentic = [s for s in items if not s.manipulated]
    return Calibration(
        threshold=t,
        logit_offset=offset,
        total_logit_offset=previous + offset,
        max_authentic_fpr=max_authentic_fpr,
        dataset=str(ds.source),
        n_images=len(items),
        n_manipulated=acc.n_manipulated,
        n_authentic=acc.n_authentic,
        f1_before=_rate_at(acc.f1_curve_sum, acc.n_manipulated, DEFAULT_THRESHOLD, acc.bins),
        f1_after=_rate_at(acc.f1_curve_sum, acc.n_manipulated, t, acc.bins),
        authentic_fpr_before=_rate_at(acc.authentic_fpr_curve_sum, acc.n_authentic, DEFAULT_THRESHOLD, acc.bins),
        authentic_fpr_after=_rate_at(acc.authentic_fpr_curve_sum, acc.n_authentic, t, acc.bins),
        reference_precision=model.precision,
        authentic_scores=reference_scores(model, authentic),
    )


def reference_scores(model: torch.nn.Module, authentic: list[Any]) -> list[float]:
    """Sorted image scores of ``authentic`` samples as ``imlscan scan`` computes them with ``model``
    (its default mode, the map at the original resolution, fused with the forensic traces when its
    file carries a fusion rule), thinned to quantiles when many."""
    info = getattr(model, "weights_info", None)
    rule = FusionRule.of(info.metadata if info is not None else None)
    predictor = Predictor(model, traces=rule.traces if rule is not None else ())
    scores = np.sort([image_score(_scan_map(predictor, s.image_path)[0]) for s in authentic])
    if scores.size > MAX_REFERENCE_SCORES:
        scores = np.quantile(scores, np.linspace(0.0, 1.0, MAX_REFERENCE_SCORES))
    return [round(float(v), 7) for v in scores]


def _scan_map(predictor: Predictor, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(fused, prob, traces)`` for a file as ``imlscan scan`` makes them (displayed orientation,
    original resolution): the map fused with the traces by the predictor's rule, the weights' own
    map before that, and the traces the predictor computes (``Predictor(traces=...)``)."""
    data = read_file(Path(path))
    decoded = decode_bytes(data, name=str(path), max_pixels=DATASET_MAX_PIXELS)
    prob = predictor.predict_prob(decoded.rgb)
    fused, traces, _ = predictor.fuse_file(prob, data, decoded)
    return fused, prob, traces


def authentic_items(dataset: str | os.PathLike) -> list[Any]:
    """The authentic samples of ``dataset``, refused when there are none (nothing to refer to)."""
    authentic = [s for s in load_dataset(dataset).items if not s.manipulated]
    if not authentic:
        raise UsageError(f"{dataset}: no authentic image to score")
    return authentic


def recompute_references(weights: str | os.PathLike, out: str | os.PathLike, dataset: str | os.PathLike) -> Path:
    """Write ``out``, a copy of the calibrated ``weights`` (tensors and every other entry
    unchanged) whose authentic reference scores are recomputed from ``dataset`` with this
    imlscan's score and the file's own settings (detectors included).

    Needed when the file predicts differently (a detector switched on) or when the score's
    definition changed: a rank against references scored another way would mislead."""
    if Path(weights).resolve() == Path(out).resolve():
        raise UsageError("--out must differ from the input weights", hint="keep the file with the old references")
    calibration = read_metadata(weights).get("calibration")
    if not calibration:
        raise UsageError(f"{weights}: not calibrated, so it has no reference scores to recompute")
    authentic = authentic_items(dataset)  # checked before anything is written
    write_references(weights, authentic, out, dataset=dataset)
    return Path(out)


def write_references(
    weights: str | os.PathLike,
    authentic: list[Any],
    out: str | os.PathLike | None = None,
    *,
    dataset: str | os.PathLike | None = None,
) -> None:
    """Score ``authentic`` samples with a calibrated file and write the file, with them as its
    reference scores, to ``out`` (default: in place) in one atomic write; ``dataset``, where they
    came from, is recorded as ``references_dataset`` (without it, the calibration set's)."""
    calibration = read_metadata(weights)["calibration"]
    scores = reference_scores(load_model(weights, device="cpu", precision="fp32"), authentic)
    update = {
        "authentic_scores": scores,
        "n_references": len(authentic),
        "score_version": SCORE_VERSION,
        "references_dataset": str(dataset) if dataset is not None else calibration.get("dataset"),
    }
    rewrite_metadata(weights, out or weights, {"calibration": {**calibration, **update}})


def check_output(weights: str | os.PathLike, out: str | os.PathLike) -> None:
    """Refuse to overwrite the input: the uncalibrated file is the evidence of what changed."""
    if Path(weights).resolve() == Path(out).resolve():
        raise UsageError("--out must differ from the input weights", hint="keep the uncalibrated file")


def apply(weights: str | os.PathLike, out: str | os.PathLike, calibration: Calibration) -> Path:
    """Write a copy of ``weights`` whose output bias is shifted by ``calibration.logit_offset``,
    in the same storage dtype, with the calibration recorded in its metadata."""
    check_output(weights, out)
    src, dst = Path(weights), Path(out)
    model, meta = model_from_file(src)
    with torch.no_grad():
        model.head.classifier.bias += calibration.logit_offset
    dtype = _storage_dtype(meta)
    meta = {k: v for k, v in meta.items() if k not in ("storage_dtype", "tensors_sha256")}
    meta["calibration"] = calibration.to_dict()
    save_weights(model, dst, metadata=meta, dtype=dtype)
    return dst


def _storage_dtype(meta: dict[str, Any]) -> torch.dtype | None:
    """The file's one reduced storage dtype, or None (float32 or mixed storage)."""
    storage = (meta.get("storage_dtype") or "float32").split(",")
    return getattr(torch, storage[0]) if len(storage) == 1 and storage[0] != "float32" else None


# --- copy-move detectors' settings ---------------------------------------------------------------


def attach_copy_move(
    weights: str | os.PathLike,
    out: str | os.PathLike,
    config: CopyMoveConfig,
    note: dict[str, Any] | None = None,
    references: str | os.PathLike | None = None,
    keypoints: KeypointConfig | None = None,
) -> Path:
    """Write a copy of ``weights`` (tensors unchanged, bit for bit) named after ``out``, whose
    metadata switches the copy-move fusion on with ``config`` (and the keypoint detector with
    ``keypoints``, else off); ``note`` records how the settings were chosen.

    With ``references`` (the calibration set), the calibration's authentic reference scores are
    recomputed with the fusion on, so that ``score_vs_authentic`` compares like with like."""
    entries: dict[str, Any] = {"copy_move": {**(note or {}), **config.to_dict()}}
    entries["copy_move_keypoints"] = keypoints.to_dict() if keypoints is not None else None
    return _attach(weights, out, entries, references)


def attach_keypoints(
    weights: str | os.PathLike,
    out: str | os.PathLike,
    config: KeypointConfig,
    note: dict[str, Any] | None = None,
    references: str | os.PathLike | None = None,
) -> Path:
    """Like ``attach_copy_move``, for the keypoint detector: ``weights`` must already carry the dense
    matcher's settings, since the keypoint map is fused only when the copy-move fusion is on."""
    if not read_metadata(weights).get("copy_move"):
        raise UsageError(f"{weights}: no copy_move settings", hint="attach the dense matcher first")
    return _attach(weights, out, {"copy_move_keypoints": {**(note or {}), **config.to_dict()}}, references)


def _attach(
    weights: str | os.PathLike, out: str | os.PathLike, entries: dict[str, Any], references: str | os.PathLike | None
) -> Path:
    if Path(weights).resolve() == Path(out).resolve():
        raise UsageError("--out must differ from the input weights", hint="keep the file without the fusion")
    calibration = read_metadata(weights).get("calibration")
    authentic = None
    if references is not None:  # checked before anything is written
        if not calibration:
            raise UsageError(f"{weights}: not calibrated, so it has no reference scores to recompute")
        authentic = authentic_items(references)
    # A file that predicts differently gets its own name (the file's stem, as save_weights names files).
    rewrite_metadata(weights, out, {"name": Path(out).stem, **entries})
    if authentic is not None:
        write_references(out, authentic, dataset=references)
    return Path(out)


# --- the forensic traces' fusion rule -------------------------------------------------------------


def fit_fusion(
    weights: str | os.PathLike,
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    *,
    traces: Sequence[str] | None = None,
    references: str | os.PathLike | None = None,
    pixels_per_image: int = 4096,
    penalty: float = 1.0,
    seed: int = 0,
    form: str = DEFAULT_FUSION_FORM,
    progress: Callable[[int, int], None] | None = None,
) -> FusionRule:
    """Fit the rule that fuses the forensic traces with the weights' own map, on a labelled set of
    the training split, and write a copy of ``weights`` that carries it (``fusion`` in its
    metadata; tensors unchanged).

    Each image is scanned as ``imlscan scan`` does (the weights' protocol and detectors, the map at
    the original resolution; the traces at the file's own resolution), pixels are drawn from it
    (``fusion.sample_pixels``) and the terms fitted by penalized maximum likelihood.

    Arguments:
        traces: the traces to fit terms for (default: every fusable one).
        references: an authentic set whose reference scores are recomputed with the rule on, so
            that ``score_vs_authentic`` compares fused scores with fused scores (default: the
            calibration's own set, when the file is calibrated).
        form: how each trace's map is read (``fusion.FORMS``; see ``fusion.form_features``).

    Returns:
        The fitted rule.
    """
    check_output(weights, out)
    names = [n for n in (traces or TRACES) if n in TRACES and n != "ela"]
    features = form_features(form, names)  # a bad --form is refused before the long part
    calibration = read_metadata(weights).get("calibration")
    ref_set = references or (calibration or {}).get("references_dataset") or (calibration or {}).get("dataset")
    if calibration and calibration.get("authentic_scores") and not (ref_set and Path(ref_set).exists()):
        raise UsageError(
            f"{weights}: its authentic reference scores must be recomputed with the fusion on, and their set "
            f"({ref_set}) is not here",
            hint="give --references AUTHENTIC_SET (e.g. the calibration set's pairs.json)",
        )
    authentic = authentic_items(ref_set) if calibration and ref_set else None  # checked before the long part
    items = load_dataset(dataset).items
    model = load_model(weights, device="cpu", precision="fp32")
    predictor = Predictor(model, traces=names)
    skipped = []

    def samples() -> Iterator[tuple[np.ndarray, dict[str, Any], np.ndarray]]:
        for k, s in enumerate(items):
            _, prob, results = _scan_map(predictor, s.image_path)
            mask = read_mask(s.mask_path) if s.mask_path else np.zeros(prob.shape, bool)
            if progress:
                progress(k + 1, len(items))
            if mask.shape != prob.shape:  # an EXIF-rotated forgery: its mask follows the stored grid
                skipped.append(str(s.image_path))
                continue
            yield prob, results, mask

    record = {"dataset": str(dataset)}
    record = {**record, "form": form}
    rule = fit_rule(
        samples(),
        names,
        pixels_per_image=pixels_per_image,
        penalty=penalty,
        seed=seed,
        fitted=record,
        features=features,
    )
    rule.fitted["skipped_rotated"] = len(skipped)
    rewrite_metadata(weights, out, {"name": Path(out).stem, "fusion": rule.to_dict()})
    if authentic is not None:
        write_references(out, authentic, dataset=ref_set)
    return rule
