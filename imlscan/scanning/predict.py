"""From RGB pixels to a tamper-probability map: preprocessing, resolution modes, tiling,
batching, device and precision; and ``scan()``, which turns one photo into a ``ScanResult``.

The network stays a plain ``nn.Module``; ``Predictor`` (like SAM's ``SamPredictor``) owns
everything around it.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from imlscan.defaults import (
    CPU_BF16_FP32_PARTS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    MODES,
    SMALL_IMAGE_SIDE,
    TILE_ALIGN,
)
from imlscan.device import autocast, cudnn_enabled, resolve_device, resolve_precision
from imlscan.errors import ImlscanError, UsageError
from imlscan.models.fuse import fast_forward
from imlscan.models.sparsevit import SparseViT
from imlscan.safetext import shown
from imlscan.scanning.copymove import fuse, matcher_for
from imlscan.scanning.copymove_keypoints import KeypointJob
from imlscan.scanning.fusion import FusionRule, fuse_traces
from imlscan.scanning.result import (
    STALE_REFERENCES_NOTE,
    ScanResult,
    authentic_rank,
    find_regions,
    image_score,
    precision_mismatch_warning,
    stale_references,
)
from imlscan.scanning.traces import DEFAULT_TRACES, Photo, TraceResult, compute_traces
from imlscan.weights.store import load_model, preprocessing_override_note

UNTRAINED_WARNING = (
    "UNTRAINED MODEL: these weights are random, so the map and the score are noise and mean nothing. "
    "Use trained weights (--weights) before drawing any conclusion."
)

SMALL_IMAGE_WARNING = (
    f"Small image: under {SMALL_IMAGE_SIDE} px on its shorter side little of an edit's trace survives, and the "
    "default weights were measured weaker at this size (docs/scan.md, 'Small photos'); a low score means little."
)


class Predictor:
    """Runs a loaded model on images given as ``H x W x 3`` uint8 RGB arrays.

    ``mode="resize"`` is the paper's protocol (the whole image resized to the model's training
    size, the map resized back); ``mode="native"`` runs at full resolution, in overlapping
    blended tiles when a side exceeds ``tile`` (``None``: never tile). Output maps are always
    float32 in [0, 1] at the input's resolution.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device | None = None,
        precision: str | None = None,
        mode: str | None = None,
        size: int | None = None,
        tile: int | None = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int = DEFAULT_BATCH_SIZE,
        fast: bool = True,
        compile: bool | str = False,
        cudnn: bool = False,
        copy_move: bool | None = None,
        keypoints: bool | None = None,
        traces: Sequence[str] | None = None,
    ):
        info = getattr(model, "weights_info", None)
        # The forensic traces computed for each file (None: all; ()/[]: none) and the weights'
        # rule that fuses them (None: the map stays the weights' own; the traces are only shown).
        self.traces = DEFAULT_TRACES if traces is None else tuple(traces)
        self.fusion = FusionRule.of(info.metadata if info is not None else None)
        prep = info.preprocessing if info is not None else {}
        self.model = model.eval()
        self.weights_info = info
        self.device = resolve_device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.precision = resolve_precision(precision or getattr(model, "precision", "fp32"), self.device)
        self.mode = mode or prep.get("mode", "resize")
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}", hint=f"use one of {', '.join(MODES)}")
        self.size = int(size or prep.get("size", 512))
        if self.size < 32:
            raise UsageError(f"size {self.size} is too small", hint="use at least 32 pixels")
        self.tile = int(tile) if tile else None
        self.overlap = int(overlap)
        if self.tile is not None:
            check_tiling(self.tile, self.overlap)
        if batch_size < 1:
            raise UsageError("batch size must be at least 1")
        self.batch_size = int(batch_size)
        mean = self.mean = list(prep.get("mean", (0.485, 0.456, 0.406)))
        std = self.std = list(prep.get("std", (0.229, 0.224, 0.225)))
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0
        # The fast path (folded weights, channels-last, bf16 weights on CPU) computes the same
        # function (tested); fast=False runs the network exactly as trained, for comparison.
        self.cudnn = bool(cudnn)  # CUDA only; see imlscan.device.cudnn_enabled for why it is off
        self.fast = fast and isinstance(model, SparseViT)
        self._forward = (
            fast_forward(model, self.device, self.precision, compile=compile, keep_fp32=CPU_BF16_FP32_PARTS)
            if self.fast
            else None
        )
        # What the reports record of the fast path: compiled or not, and the parts a bf16 scan on
        # the CPU keeps in fp32 (they change its maps slightly).
        self.compile_variant = getattr(self._forward, "compile_variant", "eager")
        self.fp32_parts = (
            list(CPU_BF16_FP32_PARTS) if self.fast and self.precision != "fp32" and self.device.type == "cpu" else []
        )
        self.copy_move = matcher_for(info, copy_move, keypoints)
        self.keypoints_in_workers: bool | None = None  # None: on a GPU only (keypoint_job)

    def to_tensor(self, rgbs: Sequence[np.ndarray]) -> torch.Tensor:
        """Stack equally sized uint8 RGB arrays into a normalized ``B x 3 x H x W`` tensor."""
        x = torch.from_numpy(np.ascontiguousarray(np.stack(rgbs))).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with cudnn_enabled(self.device, self.cudnn):
            if self._forward is not None:
                return self._forward(x)
            with autocast(self.device, self.precision):
                return self.model(x).float()

    def model_input(self, rgb: np.ndarray) -> np.ndarray:
        """The image as the network sees it in the current mode (before normalization)."""
        if self.mode == "resize" and rgb.shape[:2] != (self.size, self.size):
            return cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return rgb

    def is_tiled(self, shape: tuple[int, int]) -> bool:
        return self.mode == "native" and self.tile is not None and max(shape[:2]) > self.tile

    def predict_prob(self, rgb: np.ndarray) -> np.ndarray:
        """Probability map ``H x W`` float32 in [0, 1] for one ``H x W x 3`` uint8 image."""
        return self.predict_batch([rgb])[0]

    def predict_batch(
        self, rgbs: Sequence[np.ndarray], keypoint_maps: Sequence[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """Probability maps for several images; same-sized model inputs run together, in
        batches of at most ``batch_size``; large native-mode images are tiled."""
        return [fused for fused, _ in self.predict_parts(rgbs, keypoint_maps)]

    def predict_parts(
        self,
        rgbs: Sequence[np.ndarray],
        keypoint_maps: Sequence[np.ndarray | None] | None = None,
        *,
        seconds: dict[str, float] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Like ``predict_batch``, with the copy-move detectors' own map beside each fused map
        (``None`` when the fusion is off), both at the input's resolution: reports use it to say
        which regions the matcher flagged. ``keypoint_maps`` are the keypoint detector's maps
        that decoding workers computed ahead (``keypoint_job()``; None: compute here).

        ``seconds``, when given, gets each stage's wall-clock seconds added to it (``preprocess``:
        resizing in and out and normalizing; ``network``; ``dense`` and ``keypoints``: the two
        copy-move detectors), so that ``bench`` can say where a real batch run's time went."""
        rgbs = [_check_rgb(r) for r in rgbs]
        kps = list(keypoint_maps) if keypoint_maps is not None else [None] * len(rgbs)
        out: list[tuple[np.ndarray, np.ndarray | None] | None] = [None] * len(rgbs)
        by_shape: dict[tuple[int, int], list[int]] = {}
        inputs: dict[int, np.ndarray] = {}
        for i, rgb in enumerate(rgbs):
            if self.is_tiled(rgb.shape):
                out[i] = self._with_copy_move(self._predict_tiled(rgb, seconds), rgb, kps[i], seconds)
                continue
            t0 = time.perf_counter()
            inputs[i] = self.model_input(rgb)
            _tick(seconds, "preprocess", t0)
            by_shape.setdefault(inputs[i].shape[:2], []).append(i)
        for idx in by_shape.values():
            probs = self._probs([inputs[i] for i in idx], seconds)
            for i, p in zip(idx, probs):
                fused, cm = self._with_copy_move(p, rgbs[i], kps[i], seconds)
                t0 = time.perf_counter()
                shape = rgbs[i].shape[:2]
                out[i] = (_to_original(fused, shape), None if cm is None else _to_original(cm, shape))
                _tick(seconds, "preprocess", t0)
        return out  # type: ignore[return-value]

    def _with_copy_move(
        self,
        prob: np.ndarray,
        image: np.ndarray,
        keypoint_map: np.ndarray | None = None,
        seconds: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(``prob`` fused with the copy-move detectors' map, that map), both at ``prob``'s size; the
        matcher sees ``image`` resized to its own size. Unchanged ``prob`` and None when off."""
        if self.copy_move is None:
            return prob, None
        t0 = time.perf_counter()
        s = self.copy_move.config.size
        small = image if image.shape[:2] == (s, s) else cv2.resize(image, (s, s), interpolation=cv2.INTER_LINEAR)
        keypoints_s = 0.0
        if keypoint_map is None and self.copy_move.keypoints is not None:
            # Here rather than inside image_map, only to time it apart: the same map as a
            # worker's (KeypointJob.run), which image_map resizes exactly as it would its own.
            t1 = time.perf_counter()
            keypoint_map = self.copy_move.keypoints.prob_map(small)
            keypoints_s = _tick(seconds, "keypoints", t1) - t1
        cm = self.copy_move.image_map(small, self.to_tensor([small]), prob.shape[:2], keypoint_map)
        fused = fuse(prob, cm)
        _tick(seconds, "dense", t0 + keypoints_s)  # the rest: resizing, the dense search, the fusion
        return fused, cm

    def fuse_file(
        self, prob: np.ndarray, data: bytes | None, decoded: Any
    ) -> tuple[np.ndarray, dict[str, TraceResult], dict[str, Any] | None]:
        """The forensic traces of the file behind ``decoded`` (its bytes ``data``) and the map
        fused with them by the weights' rule: ``(fused, traces, fusion)``. Without the bytes (an
        array or PIL input) or with traces off, ``prob`` comes back unchanged."""
        if data is None or not self.traces:
            return prob, {}, None
        results = compute_traces(Photo(data, decoded), self.traces)
        fused, fusion = self.apply_fusion(prob, results)
        return fused, results, fusion

    def apply_fusion(self, prob: np.ndarray, results: dict[str, TraceResult]) -> tuple[np.ndarray, dict[str, Any]]:
        """``prob`` fused with traces already computed (e.g. by a decoding worker), and the
        report's account of it: applied or not, why, and each trace's contribution."""
        moved: dict[str, dict[str, float]] = {}
        fused, contributions = fuse_traces(prob, results, self.fusion, moved)
        if self.fusion is None:
            fusion = {"applied": False, "reason": "these weights carry no fusion rule: the traces are shown, not fused"}
        else:
            fusion = {
                "applied": bool(contributions),
                "reason": "fused" if contributions else "no trace that the rule fuses applies to this file",
                "contributions_logit": contributions,
                "pixels_moved": moved,
                "rule": self.fusion.to_dict(),
            }
            stale = self.fusion.stale_traces()
            if stale and contributions:
                fusion["note"] = "; ".join(
                    f"the rule was fitted on {n} version {a}, this is version {b}: the fused map is not the one these "
                    "weights were evaluated with"
                    for n, (a, b) in stale.items()
                )
        return fused, fusion

    def keypoint_job(self) -> KeypointJob | None:
        """The keypoint detector's work for decoding workers to do ahead of ``predict_parts``
        (picklable), or None: when the detector is off, and on a CPU, where workers would take
        cores from this process's network and matcher (a batch on 2 cores ran about 15% slower
        with the detector in its workers; docs/performance.md). ``keypoints_in_workers`` set to
        True or False overrides the choice."""
        if self.copy_move is None:
            return None
        in_workers = self.keypoints_in_workers
        if in_workers is None:
            in_workers = self.device.type != "cpu"
        return self.copy_move.keypoint_job() if in_workers else None

    def _probs(self, arrays: list[np.ndarray], seconds: dict[str, float] | None = None) -> list[np.ndarray]:
        """Sigmoid maps of equally sized arrays, ``batch_size`` at a time."""
        maps: list[np.ndarray] = []
        for k in range(0, len(arrays), self.batch_size):
            t0 = time.perf_counter()
            x = self.to_tensor(arrays[k : k + self.batch_size])
            t0 = _tick(seconds, "preprocess", t0)
            p = torch.sigmoid(self.logits(x))[:, 0]
            maps.extend(p.cpu().numpy())
            _tick(seconds, "network", t0)
        return maps

    def _predict_tiled(self, rgb: np.ndarray, seconds: dict[str, float] | None = None) -> np.ndarray:
        h, w = rgb.shape[:2]
        ys, wys = tile_axis(h, self.tile, self.overlap)  # type: ignore[arg-type]
        xs, wxs = tile_axis(w, self.tile, self.overlap)  # type: ignore[arg-type]
        acc = np.zeros((h, w), dtype=np.float32)
        tiles = [(a, b) for a in range(len(ys)) for b in range(len(xs))]
        by_shape: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for a, b in tiles:
            by_shape.setdefault((ys[a][1] - ys[a][0], xs[b][1] - xs[b][0]), []).append((a, b))
        for group in by_shape.values():
            for k in range(0, len(group), self.batch_size):
                chunk = group[k : k + self.batch_size]
                crops = [rgb[ys[a][0] : ys[a][1], xs[b][0] : xs[b][1]] for a, b in chunk]
                for (a, b), p in zip(chunk, self._probs(crops, seconds)):
                    acc[ys[a][0] : ys[a][1], xs[b][0] : xs[b][1]] += p * np.outer(wys[a], wxs[b])
        return np.clip(acc, 0.0, 1.0)

    def describe(self, shape: tuple[int, int]) -> dict[str, Any]:
        """The preprocessing actually applied to an image of ``shape`` (for the report)."""
        h, w = shape[:2]
        tiled = self.is_tiled(shape)
        n_tiles = (
            len(tile_spans(h, self.tile, self.overlap)) * len(tile_spans(w, self.tile, self.overlap)) if tiled else 1
        )
        info = self.weights_info
        trained = dict(info.preprocessing) if info is not None else {}
        return {
            "mode": self.mode,
            "size": self.size if self.mode == "resize" else None,
            "model_input": [self.size, self.size] if self.mode == "resize" else [w, h],
            "tiled": tiled,
            "tiles": n_tiles,
            "tile_size": self.tile if self.mode == "native" else None,
            "tile_overlap": self.overlap if self.mode == "native" and self.tile else None,
            "tile_align": TILE_ALIGN if tiled else None,
            "mean": self.mean,
            "std": self.std,
            "trained_protocol": {"mode": trained.get("mode"), "size": trained.get("size")} if trained else None,
            "override_note": preprocessing_override_note(info, self.mode, self.size if self.mode == "resize" else None),
            "device": str(self.device),
            "precision": self.precision,
            "fp32_parts": self.fp32_parts,
            "compile": self.compile_variant,
            "copy_move": self.copy_move.settings() if self.copy_move is not None else None,
        }


# --- tiling ---------------------------------------------------------------------------------------


def check_tiling(tile: int, overlap: int) -> None:
    if tile % TILE_ALIGN or tile < 2 * TILE_ALIGN:
        raise UsageError(f"tile size {tile} must be a multiple of {TILE_ALIGN} and at least {2 * TILE_ALIGN}")
    if overlap < 1 or overlap + TILE_ALIGN >= tile:
        raise UsageError(f"tile overlap {overlap} must be at least 1 and below tile size - {TILE_ALIGN}")


def tile_spans(length: int, tile: int | None, overlap: int, align: int = TILE_ALIGN) -> list[tuple[int, int]]:
    """``[start, end)`` spans covering ``0..length`` with tiles of ``tile`` pixels.

    Every start is a multiple of ``align``; consecutive tiles overlap by at least ``overlap``;
    the last tile ends at ``length`` (it may be up to ``align - 1`` pixels longer than ``tile``).
    """
    if tile is None or length <= tile:
        return [(0, length)]
    step = tile - overlap - align  # worst-case gap after rounding starts down to the grid
    n = math.ceil((length - tile) / step) + 1
    last = (length - tile) // align * align
    starts = sorted({(k * last // (n - 1)) // align * align for k in range(n)})
    return [(s, s + tile) for s in starts[:-1]] + [(starts[-1], length)]


def _ramp(n: int) -> np.ndarray:
    t = (np.arange(n) + 0.5) / n
    return np.sin(0.5 * np.pi * t) ** 2


def blend_weights(spans: list[tuple[int, int]], length: int) -> list[np.ndarray]:
    """One weight vector per span: cosine ramps across each overlap, normalized so the weights
    of all tiles covering a pixel sum to exactly 1 (no seams, no brightness change)."""
    raw = []
    for i, (s, e) in enumerate(spans):
        w = np.ones(e - s, dtype=np.float64)
        if i > 0 and spans[i - 1][1] > s:
            n = min(spans[i - 1][1] - s, e - s)
            w[:n] *= _ramp(n)
        if i + 1 < len(spans) and e > spans[i + 1][0]:
            n = min(e - spans[i + 1][0], e - s)
            w[e - s - n :] *= _ramp(n)[::-1]
        raw.append(w)
    total = np.zeros(length, dtype=np.float64)
    for (s, e), w in zip(spans, raw):
        total[s:e] += w
    return [(w / total[s:e]).astype(np.float32) for (s, e), w in zip(spans, raw)]


def tile_axis(length: int, tile: int, overlap: int) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    spans = tile_spans(length, tile, overlap)
    return spans, blend_weights(spans, length)


# --- scan -----------------------------------------------------------------------------------------


def scan(
    image: Any,
    model: torch.nn.Module | Predictor | None = None,
    *,
    threshold: float = 0.5,
    mode: str | None = None,
    size: int | None = None,
    tile: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    weights: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    max_pixels: int | None = None,
) -> ScanResult:
    """Scan one photo (a path, a PIL image or an ``H x W x 3`` uint8 RGB array); a path's result
    also carries what the file says about itself (``ScanResult.provenance``).

    ``model`` is a loaded model, a :class:`Predictor` (its own mode/size/device are then used),
    or ``None`` to load ``weights`` (default: the embedded weights, or an untrained model, which
    the result says loudly). For many images, load the model once and pass it.
    """
    from imlscan.defaults import DEFAULT_MAX_PIXELS
    from imlscan.imageio import decode_bytes, load_image, read_file
    from imlscan.scanning.provenance import read_provenance

    check_threshold(threshold)
    t0 = time.perf_counter()
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    data = None
    if isinstance(image, (str, os.PathLike)):  # the bytes, read once: the traces read the file itself
        data = read_file(Path(image))
        decoded = decode_bytes(data, name=str(image), max_pixels=limit)
    else:
        decoded = load_image(image, max_pixels=limit)
    decode_s = time.perf_counter() - t0
    provenance = read_provenance(data, decoded_rgb=decoded.rgb) if data is not None else None
    if isinstance(model, Predictor):
        predictor = model
    else:
        if model is None:
            model = load_model(weights, device or "auto", precision or "fp32")
        predictor = Predictor(
            model, device=device, precision=precision, mode=mode, size=size, tile=tile, overlap=overlap
        )
    t1 = time.perf_counter()
    prob, copy_move = predictor.predict_parts([decoded.rgb])[0]
    inference_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    prob, traces, fusion = predictor.fuse_file(prob, data, decoded)
    return build_result(
        decoded,
        prob,
        predictor,
        threshold=threshold,
        decode_s=decode_s,
        inference_s=inference_s,
        copy_move=copy_move,
        traces=traces,
        fusion=fusion,
        traces_s=time.perf_counter() - t2,
        provenance=provenance,
    )


def build_result(
    decoded: Any,
    prob: np.ndarray,
    predictor: Predictor,
    *,
    threshold: float,
    decode_s: float = 0.0,
    inference_s: float = 0.0,
    copy_move: np.ndarray | None = None,
    traces: dict[str, TraceResult] | None = None,
    fusion: dict[str, Any] | None = None,
    traces_s: float = 0.0,
    provenance: Any = None,
) -> ScanResult:
    """Score, mask, regions and provenance around a probability map (used by scan and batch);
    ``copy_move``, the matcher's own map, says how much of each region the matcher flagged."""
    t0 = time.perf_counter()
    score = image_score(prob)
    if not math.isfinite(score):  # a NaN anywhere in the map makes the score NaN (np.partition sorts it last)
        raise _not_finite(decoded, predictor)
    mask = prob > threshold
    regions, total = find_regions(prob, mask, copy_move=None if copy_move is None else copy_move > threshold)
    info = predictor.weights_info
    model_info = _model_info(info, predictor.model)
    warnings = [UNTRAINED_WARNING] if model_info["trained"] is False else []
    if model_info["trained"] is None:
        warnings.append("Model provenance unknown: it was passed without weights_info.")
    prep = predictor.describe(prob.shape)
    if prep["override_note"]:
        warnings.append(prep["override_note"])
    if min(prob.shape[:2]) < SMALL_IMAGE_SIDE:
        warnings.append(SMALL_IMAGE_WARNING)
    # The reference was scored with the weights' own protocol; another mode or size has no reference.
    calibration = (info.metadata or {}).get("calibration") if info is not None and not prep["override_note"] else None
    rank = authentic_rank(score, calibration, predictor.precision)
    if note := precision_mismatch_warning(rank):
        warnings.append(note)
    if stale_references(calibration):
        warnings.append(STALE_REFERENCES_NOTE)
    post_s = time.perf_counter() - t0
    return ScanResult(
        prob=prob,
        mask=mask,
        score=score,
        regions=regions,
        regions_total=total,
        authentic_rank=rank,
        threshold=float(threshold),
        input=decoded.to_dict(),
        model=model_info,
        preprocessing=prep,
        timings={
            "decode_s": round(decode_s, 4),
            "inference_s": round(inference_s, 4),
            "traces_s": round(traces_s, 4),
            "postprocess_s": round(post_s, 4),
            "total_s": round(decode_s + inference_s + traces_s + post_s, 4),
        },
        versions=versions(),
        warnings=warnings,
        image=decoded.rgb,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        traces=dict(traces or {}),
        fusion=fusion,
        provenance=provenance,
    )


def _not_finite(decoded: Any, predictor: Predictor) -> ImlscanError:
    """The last guard: weights that pass every check at load can still overflow to NaN on some
    input; such a map is never ranked or written, and the error says where it came from."""
    info = predictor.weights_info
    weights = (info.path or info.name) if info is not None else "passed without weights_info"
    photo = shown(getattr(decoded, "path", None) or "the image")
    return ImlscanError(
        f"{photo}: the map holds NaN (not a number), so it has no score: computed with the weights {shown(weights)}",
        hint="check the weights with 'imlscan weights verify'; with --precision bf16/fp16, try fp32",
    )


def check_threshold(threshold: float) -> None:
    if not (0.0 <= float(threshold) <= 1.0) or math.isnan(float(threshold)):
        raise UsageError(f"threshold {threshold} is outside [0, 1]")


def _model_info(info: Any, model: torch.nn.Module) -> dict[str, Any]:
    if info is None:
        return {
            "name": type(model).__name__,
            "path": None,
            "sha256": None,
            "variant": getattr(model, "variant", None),
            "trained": None,
            "note": "model passed without weights_info: which weights it holds is unknown",
        }
    d = info.to_dict()
    d.pop("preprocessing", None)
    return d


def versions() -> dict[str, str]:
    import PIL

    from imlscan._version import __version__

    return {
        "imlscan": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
    }


def _tick(seconds: dict[str, float] | None, stage: str, t0: float) -> float:
    """Add the seconds since ``t0`` to ``seconds[stage]`` (when timing is on); the time now."""
    now = time.perf_counter()
    if seconds is not None:
        seconds[stage] = seconds.get(stage, 0.0) + now - t0
    return now


def _to_original(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if prob.shape != (h, w):
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(prob, 0.0, 1.0).astype(np.float32, copy=False)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        desc = f"{getattr(rgb, 'shape', '?')} {getattr(rgb, 'dtype', type(rgb).__name__)}"
        raise UsageError(f"expected an H x W x 3 uint8 RGB array, got {desc}")
    return rgb
