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
RECHECK_KEYS = 512  # keys per run that the bf16 pass keeps a maximum of and the fp32 pass may search again
MIN_ROWS = 8  # fewest queries in one fp32 product of the re-check (see _recheck)
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
        if x.device.type != "cpu":
            near = neighbour_index(gh, gw, cfg.exclude, x.device, keys=(kh, kw), step=step)
            search = _best_in_rows
        else:
            near = _cpu_neighbours(gh, gw, cfg.exclude, kh, kw, step)
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


@functools.lru_cache(maxsize=4)
def _cpu_neighbours(gh: int, gw: int, exclude: int, kh: int, kw: int, step: int) -> torch.Tensor:
    """``neighbour_index`` on the CPU, kept per grid (the same for every photo of a size; it was
    about a tenth of the search's time). Read only."""
    return neighbour_index(gh, gw, exclude, "cpu", keys=(kh, kw), step=step)


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
    halve its time. Ties keep the first index: ``argmax`` returns the first within a block and a
    later block replaces the best only when strictly better. A chunk's excluded keys are its own
    rows' neighbours, a narrow band of key indices, so only the few blocks that meet the band are
    searched for them."""
    n = q.shape[0]
    best = torch.full((n,), -float("inf"), device=q.device)
    arg = torch.zeros(n, dtype=torch.int64, device=q.device)
    for s in range(0, n, CPU_QUERY_CHUNK):
        qs, ns = q[s : s + CPU_QUERY_CHUNK], near[s : s + CPU_QUERY_CHUNK]
        lo, hi = int(ns.min()), int(ns.max())
        rows = torch.arange(s, s + len(qs), device=q.device)
        for t in range(0, keys.shape[0], CPU_KEY_CHUNK):
            block = keys[t : t + CPU_KEY_CHUNK]
            sim = _product(qs, block)
            if lo < t + len(block) and hi >= t:
                _exclude(sim, ns, t)
            _keep_better(sim, t, rows, best, arg)
    return best, arg


def _keep_better(sim: torch.Tensor, start: int, rows: torch.Tensor, best: torch.Tensor, arg: torch.Tensor) -> None:
    """Where a row of ``sim`` (keys from ``start``, for queries ``rows``) beats ``best``, take its
    maximum and the first key that reaches it. Why ``amax`` first: the index is needed only where
    a block improves on the best so far, and ``max`` with indices was 4 to 10 times slower than
    ``amax`` over a whole block."""
    v = sim.amax(1)
    better = (v > best[rows]).nonzero().flatten()
    if len(better):
        where = rows[better]
        best[where] = v[better]
        arg[where] = sim[better].argmax(1) + start


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` in a buffer one element longer than the result, the slot ``_exclude`` sends
    keys outside the block to (so that no mask has to be gathered)."""
    out = torch.empty(len(a) * len(b) + 1, dtype=a.dtype, device=a.device)
    sim = out[:-1].view(len(a), len(b))
    torch.mm(a, b.T, out=sim)
    return sim


def _exclude(sim: torch.Tensor, near: torch.Tensor, start: int) -> None:
    """Set ``sim``'s entries for the excluded keys (``near``, by key index; ``sim``'s columns
    start at key ``start``; ``sim`` from ``_product``) to -1, as the row search does."""
    n, w = sim.shape
    cols = near - start
    pos = cols + torch.arange(0, n * w, w, device=sim.device)[:, None]
    pos.masked_fill_((cols < 0) | (cols >= w), n * w)
    torch.as_strided(sim, (n * w + 1,), (1,)).index_fill_(0, pos.flatten(), -1.0)


def _bf16_bound(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Per query, how far a similarity computed from bf16 copies (fp32 accumulation, bf16
    result) can lie from the fp32 one: each input rounds by at most ``BF16_ROUNDOFF`` of itself,
    which moves a dot product by at most ``(2u + u^2) |q| |k|``, and the result rounds by ``u``
    of itself (at most ``|q| |k|``)."""
    u = BF16_ROUNDOFF
    return (3 * u + u * u) * q.norm(dim=1) * keys.square().sum(1).amax().sqrt()


def _best_prefiltered(q: torch.Tensor, keys: torch.Tensor, near: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same as ``_best_in_blocks``, value for value and index for index, in a fraction of its
    time on CPUs with native bf16. Why: the fp32 products were most of a CPU scan's time. A bf16
    pass finds each query's best in every run of ``RECHECK_KEYS`` keys (``_bf16_maxima``). Only
    the runs whose bf16 maximum comes within twice the error bound (``_bf16_bound``;
    ``PREFILTER_SLACK`` to spare) of the best run can hold the fp32 best match or a key tied with
    it, and only those are searched again in fp32 (``_recheck``), in key order (so ties still keep
    the first index). Flat patches (descriptors of almost no length, whose similarities are all
    alike) skip the bf16 pass and are searched in full; where most of the work would be searched in
    full anyway, the plain search runs instead."""
    flat = q.norm(dim=1) < FLAT_DESCRIPTOR
    if flat.float().mean() > PREFILTER_GIVE_UP:
        return _best_in_blocks(q, keys, near)
    live = (~flat).nonzero().flatten()
    runs = _bf16_maxima(q[live], keys, near[live])
    margin = 2 * PREFILTER_SLACK * _bf16_bound(q[live], keys)
    doubt = torch.ones(q.shape[0], runs.shape[1], dtype=torch.bool, device=q.device)
    doubt[live] = runs >= (runs.amax(1) - margin)[:, None]
    if doubt.float().mean() > PREFILTER_GIVE_UP:
        return _best_in_blocks(q, keys, near)
    return _recheck(q, keys, near, doubt)


def _bf16_maxima(q: torch.Tensor, keys: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """Per query, an upper bound on the bf16 similarity's maximum over each run of
    ``RECHECK_KEYS`` keys, excluded keys at -1: the maximum itself, or 0 where it is negative.
    Why as int16: a bf16 number's bits, read as an int16, order non-negative numbers as the numbers
    do (negative ones all fall below them), and an int16 maximum ran about 50 times faster than a
    bf16 one. Each chunk's excluded keys are searched in one product over their band."""
    qb, kb = q.to(torch.bfloat16), keys.to(torch.bfloat16)
    n_keys, run = keys.shape[0], RECHECK_KEYS
    step = max(1, CPU_KEY_CHUNK // run) * run
    out = torch.empty(len(q), -(-n_keys // run), dtype=torch.int16, device=q.device)
    for s in range(0, len(q), CPU_QUERY_CHUNK):
        qs, ns = qb[s : s + CPU_QUERY_CHUNK], near[s : s + CPU_QUERY_CHUNK]
        lo, hi = int(ns.min()) // run * run, min(-(-(int(ns.max()) + 1) // run) * run, n_keys)
        spans = [(t, min(t + step, lo)) for t in range(0, lo, step)] + [(lo, hi)]
        spans += [(t, min(t + step, n_keys)) for t in range(hi, n_keys, step)]
        for t, e in spans:
            sim = _product(qs, kb[t:e])
            if t == lo:
                _exclude(sim, ns, t)
            bits, full = sim.view(torch.int16), (e - t) // run * run
            j = t // run
            if full:
                out[s : s + len(qs), j : j + full // run] = bits[:, :full].view(len(qs), -1, run).amax(2)
            if full < e - t:
                out[s : s + len(qs), j + full // run] = bits[:, full:].amax(1)
    return out.clamp_min_(0).view(torch.bfloat16).float()


def _recheck(
    q: torch.Tensor, keys: torch.Tensor, near: torch.Tensor, doubt: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 search over the runs of keys ``doubt`` marks per query, in key order. At least
    ``MIN_ROWS`` queries go into each product (repeated ones fill up): fewer take another BLAS path
    whose fp32 sums round differently from the blocks' (measured: 1 or 2 rows), and the results
    must equal ``_best_in_blocks``' bit for bit."""
    n, n_keys, run = q.shape[0], keys.shape[0], RECHECK_KEYS
    best = torch.full((n,), -float("inf"), device=q.device)
    arg = torch.zeros(n, dtype=torch.int64, device=q.device)
    lo, hi = near.amin(1), near.amax(1)
    for j in range(doubt.shape[1]):
        rows = doubt[:, j].nonzero().flatten()
        if not len(rows):
            continue
        t, e = j * run, min(j * run + run, n_keys)
        padded = rows if len(rows) >= MIN_ROWS else torch.cat([rows, rows[:1].expand(MIN_ROWS - len(rows))])
        sim = _product(q[padded], keys[t:e])[: len(rows)]
        inside = ((lo[rows] < e) & (hi[rows] >= t)).nonzero().flatten()
        if len(inside):
            si = sim[inside]
            first = si.argmax(1, keepdim=True)
            hit = (near[rows[inside]] == first + t).any(1) | (si.gather(1, first)[:, 0] <= -1.0)
            fix = inside[hit]
            if len(fix):
                sim[fix] = _excluded_rows(sim[fix], near[rows[fix]], t)
        _keep_better(sim, t, rows, best, arg)
    return best, arg


def _excluded_rows(sim: torch.Tensor, near: torch.Tensor, start: int) -> torch.Tensor:
    """A copy of ``sim`` (not from ``_product``) with its excluded keys at -1. Why only for some
    rows: excluding changes a row's maximum and its first index only where that first index is an
    excluded key, or where the maximum is at most the -1 given to excluded keys."""
    out = torch.empty(sim.numel() + 1, dtype=sim.dtype, device=sim.device)
    rows = out[:-1].view(sim.shape)
    rows.copy_(sim)
    _exclude(rows, near, start)
    return rows


@functools.cache
def bf16_prefilter_ok() -> bool:
    """Whether ``_best_prefiltered`` may replace the plain CPU search: only where bf16 is native
    (elsewhere it is emulated and slower), where this torch's bf16 products stay within the
    bound the prefilter relies on, and where an fp32 product of ``MIN_ROWS`` gathered queries by a
    run of keys gives the block product's numbers bit for bit (both checked once, on random unit
    vectors)."""
    if not cpu_has_native_bf16():
        return False
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(CPU_QUERY_CHUNK, 64, generator=g), dim=1)
    k = F.normalize(torch.randn(CPU_KEY_CHUNK, 64, generator=g), dim=1)
    exact = q @ k.T
    err = ((q.to(torch.bfloat16) @ k.to(torch.bfloat16).T).float() - exact).abs().amax(1)
    rows, t = torch.randperm(len(q), generator=g)[:MIN_ROWS], len(k) // 2
    same = torch.equal(q[rows] @ k[t : t + RECHECK_KEYS].T, exact[rows, t : t + RECHECK_KEYS])
    return bool((err <= _bf16_bound(q, k)).all()) and same


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
