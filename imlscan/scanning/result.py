"""What a scan produced (``Region``, ``ScanResult``) and how it is scored: the image-level score,
the flagged regions and the score's rank among the weights' authentic references.

This is the one home of scoring: ``predict`` builds results with it, ``report`` renders them,
``eval`` and ``calibrate`` score maps with it, so a score means the same everywhere. It never runs
the model and does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from imlscan.scanning.provenance import Provenance

SCHEMA = "imlscan.scan/1"
SCORE_TOP_SHARE = 0.01
SCORE_VERSION = 2  # 1 (files without score_version): the peak of the map box-averaged over 1/32 of its shorter side
SCORE_DEFINITION = (
    "mean of the highest 1% of the probability map's pixels (at least one pixel), so a few hot "
    "pixels cannot make a high score while an edited region of about 1% of the image or more can; "
    "0 = no sign of manipulation found, 1 = strong sign. It is not the probability that the photo is fake."
)
AUTHENTIC_RANK_DEFINITION = (
    "share of the authentic reference photos stored with the weights (their calibration set's unless "
    "recomputed from another set) whose score, computed the same way with these weights, is lower "
    "than this one: around 50% is typical for an unedited photo of that set, 100% is above all of "
    "them. It is not a probability, and it overstates how unusual a score is: the reference photos "
    "come from the photos the weights were trained on, which tend to score lower than new ones (with the "
    "default weights, 10% of unedited test photos ranked above 95% and 14% above 90%). They are "
    "re-saved camera JPEGs; screenshots, heavy compression, graphics or text can score high without "
    "any edit"
)
SCORE_TIE = 1e-6
PRECISION_MISMATCH_NOTE = (
    "score_vs_authentic compares a {scan} score with authentic references scored in {ref}: "
    "treat the percentage as approximate (rerun with --precision {ref} for the exact rank)"
)
STALE_REFERENCES_NOTE = (
    "no score_vs_authentic: these weights' authentic reference scores were computed with an earlier "
    "definition of the score; recompute them with 'imlscan weights references WEIGHTS DATASET --out NEW'"
)
MIN_REGION_FRACTION = 1e-4
MAX_REGIONS = 100
REGIONS_DEFINITION = (
    "connected components (8-connectivity) of the mask covering at least 0.01% of the image, "
    f"largest first, at most {MAX_REGIONS} listed"
)


@dataclass
class Region:
    """One connected flagged region (8-connectivity) of the thresholded map."""

    id: int
    x: int
    y: int
    width: int
    height: int
    area_px: int
    area_fraction: float
    mean_prob: float
    max_prob: float
    copy_move_share: float | None = None  # of its pixels the copy-move detectors flagged; None: off

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bbox": {"x": self.x, "y": self.y, "width": self.width, "height": self.height},
            "area_px": self.area_px,
            "area_fraction": round(self.area_fraction, 6),
            "mean_prob": round(self.mean_prob, 4),
            "max_prob": round(self.max_prob, 4),
            "copy_move_share": None if self.copy_move_share is None else round(self.copy_move_share, 4),
        }


@dataclass(eq=False)
class ScanResult:
    """Everything one scan produced and everything needed to trust (or doubt) it.

    ``prob`` and ``mask`` are at the original resolution, after EXIF orientation; ``image`` is
    the RGB that was analysed. The dict sections (``input``, ``model``, ``preprocessing``,
    ``timings``, ``versions``) are the provenance written to every report.
    """

    prob: np.ndarray
    mask: np.ndarray
    score: float
    regions: list[Region]
    threshold: float
    input: dict[str, Any]
    model: dict[str, Any]
    preprocessing: dict[str, Any]
    timings: dict[str, float]
    versions: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    regions_total: int = 0
    authentic_rank: dict[str, Any] | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    created: str = ""
    provenance: Provenance | None = field(default=None, repr=False)  # what the file says about itself
    traces: dict[str, Any] = field(default_factory=dict, repr=False)  # name -> traces.TraceResult
    fusion: dict[str, Any] | None = None

    @property
    def trained(self) -> bool:
        """False only when the weights are known to be untrained (``None`` provenance: True)."""
        return self.model.get("trained") is not False

    @property
    def mask_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (no pixel arrays)."""
        return {
            "schema": SCHEMA,
            "input": self.input,
            "score": round(self.score, 6),
            "score_definition": SCORE_DEFINITION,
            "score_vs_authentic": self.authentic_rank,
            "threshold": self.threshold,
            "mask_fraction": round(self.mask_fraction, 6),
            "regions_total": self.regions_total,
            "regions": [r.to_dict() for r in self.regions],
            "trained": self.model.get("trained"),
            "warnings": list(self.warnings),
            "traces": {name: t.to_dict() for name, t in self.traces.items()},
            "fusion": self.fusion,
            "provenance": self.provenance.to_dict() if self.provenance is not None else None,
            "model": self.model,
            "preprocessing": self.preprocessing,
            "timings": self.timings,
            "versions": self.versions,
            "created": self.created,
        }


def image_score(prob: np.ndarray) -> float:
    """Image-level score in [0, 1]: the mean of the map's highest 1% (see SCORE_DEFINITION).

    Chosen over the earlier peak of a box-averaged map by the image AUC of v26 on the calibration
    set and confirmed on the validation set (lab/scripts/image_score_candidates.py; the model card)."""
    if prob.size == 0:
        return 0.0
    flat = np.asarray(prob, np.float32).ravel()
    k = max(1, int(flat.size * SCORE_TOP_SHARE))
    top = np.partition(flat, flat.size - k)[flat.size - k :]
    return float(np.clip(top.mean(dtype=np.float64), 0.0, 1.0))


def authentic_rank(score: float, calibration: dict[str, Any] | None, precision: str = "fp32") -> dict[str, Any] | None:
    """Where ``score`` falls among the calibration set's authentic photos, or None when the
    weights carry no reference (uncalibrated, or calibrated by an older imlscan).

    ``precision`` is the scan's: the record says whether it matches the reference's, because a
    bf16 score carries rounding the fp32 references do not (see PRECISION_MISMATCH_NOTE)."""
    ref = np.asarray((calibration or {}).get("authentic_scores") or [], np.float64)
    if ref.size == 0 or stale_references(calibration):
        return None
    # Scores within SCORE_TIE of a reference count as equal: the photo itself, scanned again.
    lower = int(np.searchsorted(np.sort(ref), score - SCORE_TIE, side="left"))
    return {
        "percent_lower": round(100.0 * lower / ref.size, 1),
        # Files whose references came from the calibration set before n_references existed: n_authentic.
        "n_authentic": int(calibration.get("n_references") or calibration.get("n_authentic") or ref.size),
        "dataset": calibration.get("references_dataset") or calibration.get("dataset"),
        "definition": AUTHENTIC_RANK_DEFINITION,
        "reference_precision": _reference_precision(calibration),
        "scan_precision": precision,
    }


def stale_references(calibration: dict[str, Any] | None) -> bool:
    """True when the weights' authentic reference scores were computed with another definition of
    the score than this imlscan's: a rank against them would compare two different numbers."""
    cal = calibration or {}
    return bool(cal.get("authentic_scores")) and int(cal.get("score_version") or 1) != SCORE_VERSION


def _reference_precision(calibration: dict[str, Any]) -> str:
    # Files calibrated before this field existed were all scored in fp32.
    return calibration.get("reference_precision") or "fp32"


def precision_mismatch_warning(rank: dict[str, Any] | None) -> str | None:
    """The report warning for a rank computed at another precision than its reference, or None."""
    if not rank or rank["scan_precision"] == rank["reference_precision"]:
        return None
    return PRECISION_MISMATCH_NOTE.format(scan=rank["scan_precision"], ref=rank["reference_precision"])


def rank_precision_note(calibration: dict[str, Any] | None, precision: str) -> str | None:
    """The same warning (or STALE_REFERENCES_NOTE), known before any image is scanned: a batch
    prints it once up front instead of once per photo."""
    if not (calibration or {}).get("authentic_scores"):
        return None
    if stale_references(calibration):
        return STALE_REFERENCES_NOTE
    ref = _reference_precision(calibration)  # type: ignore[arg-type]
    return None if precision == ref else PRECISION_MISMATCH_NOTE.format(scan=precision, ref=ref)


def find_regions(
    prob: np.ndarray,
    mask: np.ndarray,
    *,
    min_fraction: float = MIN_REGION_FRACTION,
    max_regions: int = MAX_REGIONS,
    copy_move: np.ndarray | None = None,
) -> tuple[list[Region], int]:
    """Connected flagged regions, largest first, and how many passed the size filter in all;
    with ``copy_move`` (the pixels the copy-move detectors flagged) each region's share of them."""
    h, w = mask.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    min_area = max(1, int(np.ceil(min_fraction * h * w)))
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    keep.sort(key=lambda i: (-int(stats[i, cv2.CC_STAT_AREA]), i))
    sums = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=n)
    dup = None if copy_move is None else np.bincount(labels.ravel(), weights=copy_move.ravel(), minlength=n)
    regions = []
    for rid, i in enumerate(keep[:max_regions], 1):
        x, y, bw, bh, area = (int(v) for v in stats[i, :5])
        inside = prob[y : y + bh, x : x + bw][labels[y : y + bh, x : x + bw] == i]
        regions.append(
            Region(
                id=rid,
                x=x,
                y=y,
                width=bw,
                height=bh,
                area_px=area,
                area_fraction=area / (h * w),
                mean_prob=float(sums[i] / area),
                max_prob=float(inside.max()),
                copy_move_share=None if dup is None else float(dup[i] / area),
            )
        )
    return regions, len(keep)
