"""A parameter-free copy-move matcher whose map is fused with the network's.

Why: copy-moves pasted without scaling or rotation leave no resampling or blending trace, only
content that occurs twice, and every trained model misses them (the model card's breakdown).
Learning a duplication cue from the synthetic generator failed four times (v15-v17b), because
what it fits there does not transfer to real copy-moves. Classical copy-move detection needs no
fitting: match every patch against the whole image and keep the matches whose *offset* is shared
by their neighbours. A copied region moves as a block, so its cells agree on one offset, while
the chance best match of an ordinary textured patch points somewhere different from its
neighbours'. That agreement is what makes the similarity usable: on the 68 authentic photos of
the calibration set (512x512) the best-match ZNCC exceeds 0.6 on 92% of the pixels, the evidence
below on 0.01% (in 4 of the 68 photos; a one-off count on cached matches, see the model card).

The evidence per 8x8-pixel cell of the image resized to ``size`` x ``size``: the best zero-mean
normalized cross-correlation (ZNCC) of the cell's 16x16 patch with patches centred every
``key_stride`` pixels outside its ``exclude``-cell neighbourhood, times the share of the cells
within ``radius`` whose best match lies at the same offset (within ``tolerance`` pixels). Its
probability map is ``clip((evidence - threshold) / (1 - threshold), 0, 1)``, and the fused map
is the pixel-wise maximum of the network's map and that one: the matcher can only add regions,
and flags both the copy and its source (it cannot tell them apart).

Weights files opt in by carrying a ``copy_move`` entry in their metadata (``attach``); the
shipped default's entry was selected on training-split forgeries (model card).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from imlscan.device import cpu_has_native_bf16
from imlscan.errors import UsageError
from imlscan.models.sparsevit import KEY_STRIDES, DuplicationCue, neighbour_index
from imlscan.scanning.copymove_keypoints import KeypointConfig, KeypointJob, KeypointMatcher, keypoint_config_of
from imlscan.weights.settings import MetadataSettings

CELL = 8
QUERY_CHUNK = 512  # query cells per similarity block: 512 x 64,009 fp32 keys = 125 MiB at 512 px
CPU_QUERY_CHUNK, CPU_KEY_CHUNK = 256, 2048  # a 2 MiB block on a CPU (see _best_in_blocks)
FAR = 1 << 20  # offset given to cells outside the grid, so they never agree
BF16_ROUNDOFF = 2.0**-8  # bf16 keeps 8 significant bits
PREFILTER_SLACK = 1.5  # on the bound: fp32 accumulation, and a result rounded toward zero (2u, not u)
PREFILTER_GIVE_UP = 0.6  # share of blocks left to check above which the plain search is cheaper
FLAT_DESCRIPTOR = 0.01  # a flat patch's descriptor length (rounding noise: about 1e-4; any texture: > 0.5)


@dataclass(frozen=True)
class CopyMoveConfig(MetadataSettings):
    """The matcher's settings (see the module docstring); stored in a weights file's metadata."""

    ENTRY: ClassVar[str] = "copy_move"

    size: int = 512
    key_stride: int = 2
    exclude: int = 3
    radius: int = 2
    tolerance: int = 2
    threshold: float = 0.7

    def __post_init__(self) -> None:
        if self.size < 4 * CELL or self.size % (2 * CELL):
            raise UsageError(
                f"copy_move size must be a multiple of {2 * CELL} and at least {4 * CELL}, got {self.size}"
            )
        if self.key_stride not in KEY_STRIDES:
            raise UsageError(f"copy_move key_stride must be one of {KEY_STRIDES}, got {self.key_stride}")
        if self.exclude < 1 or self.radius < 1 or self.tolerance < 0:
            raise UsageError("copy_move exclude and radius must be at least 1 and tolerance at least 0")
        if not 0.0 <= self.threshold < 1.0:
            raise UsageError(f"copy_move threshold must be in [0, 1), got {self.threshold}")


class CopyMoveMatcher:
    """Computes the copy-move map of an image, on the device its tensor is on (see the module
    docstring), with the keypoint detector's map (``imlscan.scanning.copymove_keypoints``) fused in when
    ``keypoints`` is given."""

    def __init__(self, config: CopyMoveConfig | None = None, keypoints: KeypointConfig | None = None):
        self.config = config or CopyMoveConfig()
        self.keypoints = KeypointMatcher(keypoints) if keypoints is not None else None

    def settings(self) -> dict[str, Any]:
        """What reports record: the dense settings, and the keypoint detector's when it is on."""
        d = self.config.to_dict()
        if self.keypoints is not None:
            d["keypoints"] = self.keypoints.config.to_dict()
        return d

    def image_map(
        self, rgb: np.ndarray, x: torch.Tensor, shape: tuple[int, int], keypoint_map: np.ndarray | None = None
    ) -> np.ndarray:
        """The copy-move map at ``shape`` of a ``size`` x ``size`` uint8 image ``rgb`` whose
        normalized tensor is ``x``: the dense matcher's, maxed with the keypoint detector's
        (``keypoint_map``, its ``size`` x ``size`` map from ``keypoint_job()``, when a worker
        computed it already)."""
        m = self.prob_map(x, shape)
        if self.keypoints is not None:
            if keypoint_map is None:
                kp = self.keypoints.prob_map(rgb, shape)
            elif keypoint_map.shape != tuple(shape):
                kp = cv2.resize(keypoint_map, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
            else:
                kp = keypoint_map
            m = np.maximum(m, kp)
        return m

    def keypoint_job(self) -> KeypointJob | None:
        """The keypoint detector's work, for decoding workers to do ahead (None when it is off)."""
        return KeypointJob(self.keypoints.config, self.config.size) if self.keypoints is not None else None

    @torch.inference_mode()
    def best_matches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized ``1 x 3 x S x S`` image -> (best ZNCC ``gh x gw``, offset to that match in
        pixels ``gh x gw x 2`` as (dy, dx)) on the 8-pixel cell grid."""
        cfg = self.config
        x = x.float()
        q, _, gh, gw = DuplicationCue.descriptors(x)
        keys, _, kh, kw = DuplicationCue.descriptors(x, cfg.key_stride)
        step = CELL // cfg.key_stride
        near = neighbour_index(gh, gw, cfg.exclude, x.device, keys=(kh, kw), step=step)
        if x.device.type != "cpu":
            search = _best_in_rows
        else:
            search = _best_prefiltered if bf16_prefilter_ok() else _best_in_blocks
        v, i = search(q[0], keys[0], near)
        cells = torch.arange(gh * gw, device=x.device)
        dy = (i // kw) * cfg.key_stride - (cells // gw) * CELL
        dx = (i % kw) * cfg.key_stride - (cells % gw) * CELL
        return v.reshape(gh, gw), torch.stack([dy, dx], -1).reshape(gh, gw, 2)

    def evidence(self, zncc: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Best ZNCC times the share of the cells within ``radius`` whose match offset agrees."""
        return agreement_evidence(zncc, offsets, self.config.radius, self.config.tolerance)

    def prob_map(self, x: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
        """The matcher's probability map of a normalized ``1 x 3 x S x S`` image at ``shape``."""
        return self.map_from_matches(*self.best_matches(x), shape)

    def map_from_matches(self, zncc: torch.Tensor, offsets: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
        """The probability map at ``shape`` from ``best_matches``' output: settings other than the
        search's (radius, tolerance, threshold) can be tried on the same matches."""
        e = self.evidence(zncc, offsets).cpu().numpy().astype(np.float32)
        e = cv2.resize(e, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        t = self.config.threshold
        return np.clip((e - t) / (1.0 - t), 0.0, 1.0)


def _best_in_rows(q: torch.Tensor, keys: torch.Tensor, near: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's best similarity among the keys not in its ``near`` row, and that key's index
    (the first one on ties), computed ``QUERY_CHUNK`` whole rows at a time: few large products,
    which suits a GPU."""
    values, index = [], []
    for s in range(0, q.shape[0], QUERY_CHUNK):
        sim = q[s : s + QUERY_CHUNK] @ keys.T
        sim.scatter_(-1, near[s : s + QUERY_CHUNK], -1.0)
        v, i = sim.max(-1)
        values.append(v)
        index.append(i)
    return torch.cat(values), torch.cat(index)


def _best_in_blocks(q: torch.Tensor, keys: torch.Tensor, near: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same as ``_best_in_rows``, value for value and index for index, over cache-sized
    blocks of ``CPU_QUERY_CHUNK`` queries by ``CPU_KEY_CHUNK`` keys. Why: on a CPU the whole
    rows (125 MiB per chunk at 512 px) make the search memory-bound; blocks that stay in cache
    halve its time. Ties keep the first index: ``max`` returns the first within a block and a
    later block replaces the best only when strictly better. A chunk's excluded keys are its own
    rows' neighbours, a narrow band of key indices, so only the few blocks that meet the band are
    searched for them (checking every block made the whole search about 10% slower)."""
    values, index = [], []
    for s in range(0, q.shape[0], CPU_QUERY_CHUNK):
        qs, ns = q[s : s + CPU_QUERY_CHUNK], near[s : s + CPU_QUERY_CHUNK]
        band = (int(ns.min()), int(ns.max()))
        best = torch.full((len(qs),), -float("inf"), device=q.device)
        arg = torch.zeros(len(qs), dtype=torch.int64, device=q.device)
        for t in range(0, keys.shape[0], CPU_KEY_CHUNK):
            sim = qs @ keys[t : t + CPU_KEY_CHUNK].T
            _exclude(sim, ns, t, band)
            v, i = sim.max(-1)
            better = v > best
            best, arg = torch.where(better, v, best), torch.where(better, i + t, arg)
        values.append(best)
        index.append(arg)
    return torch.cat(values), torch.cat(index)


def _bf16_bound(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Per query, how far a similarity computed from bf16 copies (fp32 accumulation, bf16
    result) can lie from the fp32 one: each input rounds by at most ``BF16_ROUNDOFF`` of itself,
    which moves a dot product by at most ``(2u + u^2) |q| |k|``, and the result rounds by ``u``
    of itself (at most ``|q| |k|``)."""
    u = BF16_ROUNDOFF
    return (3 * u + u * u) * q.norm(dim=1) * keys.norm(dim=1).max()


def _best_prefiltered(q: torch.Tensor, keys: torch.Tensor, near: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same as ``_best_in_blocks``, value for value and index for index, in about 60% of its
    time on CPUs with native bf16. Why: the fp32 products were most of a CPU scan's time. A bf16
    pass over the same blocks finds each query's best block maximum. Only the blocks whose bf16
    maximum comes within twice the error bound (``_bf16_bound``; ``PREFILTER_SLACK`` to spare) of
    that best can hold the fp32 best match, and only those are searched again in fp32, in the same
    blocks and order as ``_best_in_blocks`` (so ties still keep the first index). Flat patches
    (descriptors of almost no length, whose similarities are all alike) skip the bf16 pass and are
    searched in full; where most of the work would be searched in full anyway, the plain search
    runs instead."""
    n, n_keys = q.shape[0], keys.shape[0]
    starts = list(range(0, n_keys, CPU_KEY_CHUNK))
    flat = q.norm(dim=1) < FLAT_DESCRIPTOR
    if flat.float().mean() > PREFILTER_GIVE_UP:
        return _best_in_blocks(q, keys, near)
    live = (~flat).nonzero().flatten()
    qb, kb = q[live].to(torch.bfloat16), keys.to(torch.bfloat16)
    block_max = torch.empty(len(live), len(starts))
    for s in range(0, len(live), CPU_QUERY_CHUNK):
        qs, ns = qb[s : s + CPU_QUERY_CHUNK], near[live[s : s + CPU_QUERY_CHUNK]]
        band = (int(ns.min()), int(ns.max()))
        for j, t in enumerate(starts):
            sim = qs @ kb[t : t + CPU_KEY_CHUNK].T
            _exclude(sim, ns, t, band)
            block_max[s : s + CPU_QUERY_CHUNK, j] = sim.amax(-1).float()
    margin = 2 * PREFILTER_SLACK * _bf16_bound(q[live], keys)
    doubt = torch.ones(n, len(starts), dtype=torch.bool)
    doubt[live] = block_max >= (block_max.amax(1) - margin)[:, None]
    if doubt.float().mean() > PREFILTER_GIVE_UP:
        return _best_in_blocks(q, keys, near)
    best = torch.full((n,), -float("inf"), device=q.device)
    arg = torch.zeros(n, dtype=torch.int64, device=q.device)
    for j, t in enumerate(starts):
        rows = doubt[:, j].nonzero().flatten()
        if len(rows) == 0:
            continue
        sim = q[rows] @ keys[t : t + CPU_KEY_CHUNK].T
        _exclude(sim, near[rows], t)
        v, i = sim.max(-1)
        better = v > best[rows]
        best[rows] = torch.where(better, v, best[rows])
        arg[rows] = torch.where(better, i + t, arg[rows])
    return best, arg


def _exclude(sim: torch.Tensor, near: torch.Tensor, start: int, band: tuple[int, int] | None = None) -> None:
    """Set ``sim``'s entries for the excluded keys (``near``, by key index; ``sim``'s columns
    start at key ``start``) to -1, as the row search does. ``band`` (the smallest and largest
    excluded index) skips blocks that hold none."""
    lo, hi = band if band is not None else (int(near.min()), int(near.max()))
    if lo < start + sim.shape[1] and hi >= start:
        rows, cols = ((near >= start) & (near < start + sim.shape[1])).nonzero(as_tuple=True)
        sim[rows, near[rows, cols] - start] = -1.0


@functools.cache
def bf16_prefilter_ok() -> bool:
    """Whether ``_best_prefiltered`` may replace the plain CPU search: only where bf16 is native
    (elsewhere it is emulated and slower) and where this torch's bf16 products stay within the
    bound the prefilter relies on (checked once, on random unit vectors, against fp32)."""
    if not cpu_has_native_bf16():
        return False
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(256, 64, generator=g), dim=1)
    k = F.normalize(torch.randn(2048, 64, generator=g), dim=1)
    err = ((q.to(torch.bfloat16) @ k.to(torch.bfloat16).T).float() - q @ k.T).abs().amax(1)
    return bool((err <= _bf16_bound(q, k)).all())


def agreement_evidence(zncc: torch.Tensor, offsets: torch.Tensor, radius: int, tolerance: int) -> torch.Tensor:
    """``zncc * n / ((2 * radius + 1)^2 - 1)``, n = neighbours within ``radius`` cells whose offset
    differs from the cell's by at most ``tolerance`` pixels in each coordinate."""
    gh, gw = zncc.shape
    o = offsets.to(torch.int64).permute(2, 0, 1)[None]
    padded = F.pad(o, (radius, radius, radius, radius), value=FAR)
    agree = torch.zeros(gh, gw, device=zncc.device)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx == 0:
                continue
            nb = padded[0, :, radius + dy : radius + dy + gh, radius + dx : radius + dx + gw]
            agree += ((nb - o[0]).abs().amax(0) <= tolerance).float()
    return zncc * agree / ((2 * radius + 1) ** 2 - 1)


def fuse(prob: np.ndarray, copy_move: np.ndarray) -> np.ndarray:
    """The fused map: the network's where it is higher, the matcher's elsewhere."""
    return np.maximum(prob, copy_move)


def config_of(metadata: dict[str, Any] | None) -> CopyMoveConfig | None:
    """The matcher settings a weights file carries, or None (no copy-move fusion)."""
    return CopyMoveConfig.of(metadata)


def matcher_for(info: Any, enabled: bool | None, keypoints: bool | None = None) -> CopyMoveMatcher | None:
    """The matcher a run uses: the weights' settings (``info`` a ``WeightsInfo`` or None) when
    ``enabled`` is None, none when False, and when True the file's settings, or both detectors'
    defaults for a file that carries none. ``keypoints`` False leaves the keypoint detector out
    (the dense matcher alone: the detector runs on the CPU and is the slow part on a GPU
    machine), True puts it in (the file's settings, else the defaults), None: as the file says."""
    metadata = info.metadata if info is not None else None
    config = config_of(metadata)
    if enabled is False or (enabled is None and config is None):
        if keypoints:
            raise UsageError(
                "--keypoints needs the copy-move fusion, which is off"
                + (" (--no-copy-move)" if enabled is False else " in these weights"),
                hint="add --copy-move (and leave out --no-copy-move)",
            )
        return None
    kp = keypoint_config_of(metadata)
    if config is None or keypoints:
        kp = kp or KeypointConfig()
    return CopyMoveMatcher(config, None if keypoints is False else kp)
