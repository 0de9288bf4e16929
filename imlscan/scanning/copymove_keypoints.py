"""A keypoint copy-move detector for copies that were rotated, scaled or mirrored.

Why: the dense matcher (``imlscan.scanning.copymove``) compares patches as they are, so it finds only
copies pasted without any transform; the synthetic generator rotates, scales or mirrors most
copy-moves, and forgers do the same to hide the repetition. Keypoint descriptors (SIFT) are
invariant to rotation and scale, and matching the image's descriptors against its mirror image's
adds reflections. The classical recipe (Pan and Lyu 2010; Amerini et al. 2011) then turns sparse
matches into regions:

1. match every keypoint's descriptor against the others' (and the mirror image's), keeping a
   match only when it is clearly better than the next candidate (the ratio test) and at least
   ``min_shift`` pixels away;
2. fit affine transforms to the matches by RANSAC, one after another, keeping those with at
   least ``min_inliers`` inliers, a moderate scale and a shift of at least ``min_shift``;
3. for each transform, warp the image onto itself both ways and flag the pixels whose
   neighbourhood correlates with its warped counterpart (ZNCC over ``window`` pixels above
   ``corr``), keeping only the connected parts that hold an inlier keypoint;
4. with ``verify``, keep a transform's region only if it agrees with its counterpart like a copy:
   a mean correlation of at least ``min_region_corr`` over the region and a median inlier error
   of at most ``max_fit_error`` pixels. Two lookalike objects pass steps 1 to 3 about as often as
   a copy does, but agree less and fit the transform loosely (see ``Finding``).

It runs on the same ``size`` x ``size`` image as the dense matcher; its map (0 outside the
regions, ``FLOOR`` to 1 inside, with the correlation) is fused with the others by a pixel-wise
maximum. Like the dense matcher it flags both the copy and its source. It ignores what repeats by
nature (symmetric objects, periodic texture; see ``_plausible`` and ``region_map``) but not two
genuinely similar objects, such as two packs of one product, unless ``verify`` rules them out
(about half of them, at a cost of 3% of true copies, on the development photos); the settings in
a weights file were selected under the calibration's limit on authentic pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from imlscan.errors import UsageError
from imlscan.weights.settings import MetadataSettings

MAX_OVERLAP = 0.2  # how much of one side (inliers, then regions) may lie inside the other
FLAT_STD = 2.0  # grey-level standard deviation below which a window is too flat to correlate
FLOOR = 0.51  # a flagged pixel's lowest value: above the default threshold of 0.5
RANSAC_ITERS = 2000
MATCH_BLOCK = 256  # keypoints per block of the descriptor search


@dataclass(frozen=True)
class KeypointConfig(MetadataSettings):
    """The detector's settings (see the module docstring); stored in a weights file's metadata.

    ``verify`` is off by default so that weights files written before it keep their maps; its two
    thresholds were fitted on training-split synthetic copy-moves and authentic photos
    (``tools/fit_keypoint_verifier.py``) to keep 97% of true copies."""

    ENTRY: ClassVar[str] = "copy_move_keypoints"

    ratio: float = 0.6
    min_shift: float = 24.0
    min_inliers: int = 20
    max_transforms: int = 4
    reproj: float = 3.0
    window: int = 7
    corr: float = 0.7
    mirror: bool = True
    verify: bool = False
    min_region_corr: float = 0.835
    max_fit_error: float = 0.8

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise UsageError(f"copy_move_keypoints ratio must be in (0, 1), got {self.ratio}")
        if self.min_inliers < 3 or self.max_transforms < 1:
            raise UsageError("copy_move_keypoints min_inliers must be at least 3 and max_transforms at least 1")
        if self.window < 3 or self.window % 2 == 0:
            raise UsageError(f"copy_move_keypoints window must be odd and at least 3, got {self.window}")
        if not -1.0 <= self.corr < 1.0 or self.min_shift < 0 or self.reproj <= 0:
            raise UsageError("copy_move_keypoints corr must be in [-1, 1), min_shift >= 0 and reproj > 0")
        if not -1.0 <= self.min_region_corr <= 1.0 or self.max_fit_error <= 0:
            raise UsageError("copy_move_keypoints min_region_corr must be in [-1, 1] and max_fit_error > 0")


@dataclass
class Transform:
    """One fitted copy: ``matrix`` (2 x 3) maps source points onto the copy."""

    matrix: np.ndarray
    inliers: int
    src: np.ndarray  # inlier points in the source, N x 2 (x, y)
    dst: np.ndarray  # and their matches in the copy

    def fit_error(self) -> float:
        """Median distance (pixels) between the inliers' copies and where the matrix sends their sources."""
        mapped = self.src @ self.matrix[:, :2].T + self.matrix[:, 2]
        return float(np.median(np.hypot(*(mapped - self.dst).T)))


@dataclass
class Finding:
    """One transform's flagged pixels (copy and source) and the evidence that it is a copy.

    Why keep the evidence: an exact copy agrees with its source nearly everywhere (local
    correlation near 1) and its keypoints fit the transform to a fraction of a pixel, while two
    lookalike objects (two windows, two packs of one product) agree less and fit loosely. The
    ``verify`` setting drops findings whose evidence falls short (see ``KeypointConfig``)."""

    map: np.ndarray  # float32, 0 outside, FLOOR..1 inside
    region_corr: float  # mean local correlation over the flagged pixels, both sides averaged
    fit_error: float  # the transform's median inlier error, pixels
    transform: Transform

    def verified(self, config: KeypointConfig) -> bool:
        """Whether the finding passes the settings' verification (always, with ``verify`` off)."""
        if not config.verify:
            return True
        return self.region_corr >= config.min_region_corr and self.fit_error <= config.max_fit_error


class KeypointMatcher:
    """Computes the keypoint detector's map of a uint8 RGB image (see the module docstring)."""

    def __init__(self, config: KeypointConfig | None = None):
        self.config = config or KeypointConfig()
        self._sift = cv2.SIFT_create()

    def matches(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matched point pairs ``(a, b)``, each ``N x 2`` (x, y): both directions of every match."""
        return both_ways(self.searches(gray))

    def searches(self, gray: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """One-way matches of the image's keypoints among themselves and, with ``mirror``, with
        its mirror image's (mapped back to the image's coordinates)."""
        cfg = self.config
        kp, desc = self._features(gray)
        found = [_ratio_matches(kp, desc, kp, desc, cfg.ratio, cfg.min_shift)]
        if cfg.mirror:
            kpm, descm = self._features(np.ascontiguousarray(gray[:, ::-1]))
            kpm[:, 0] = (gray.shape[1] - 1) - kpm[:, 0]
            found.append(_ratio_matches(kp, desc, kpm, descm, cfg.ratio, cfg.min_shift))
        return found

    def transforms(self, a: np.ndarray, b: np.ndarray) -> list[Transform]:
        """Affine copies fitted one after another to the matches (the inliers of each removed)."""
        cfg = self.config
        found: list[Transform] = []
        rng = np.random.default_rng(0)  # fixed draws: the same image gives the same map
        while len(a) >= cfg.min_inliers and len(found) < cfg.max_transforms:
            fit = ransac_affine(a, b, cfg.reproj, rng)
            if fit is None:
                break
            m, inl = fit
            if inl.sum() < cfg.min_inliers:
                break
            if _plausible(m, a[inl], b[inl], cfg.min_shift):
                found.append(Transform(m, int(inl.sum()), a[inl], b[inl]))
            drop = inl | _reverse_of(a, b, a[inl], b[inl])
            a, b = a[~drop], b[~drop]
        return found

    def region_map(self, gray: np.ndarray, transforms: list[Transform]) -> np.ndarray:
        """Float32 map of the pixels explained by the transforms' verified findings (copies and
        sources): 0 outside, and inside from ``FLOOR`` to 1 as the neighbourhood's correlation
        with its counterpart goes from ``corr`` to 1.

        Why graded: an exact copy correlates near 1 with its source, while a lookalike (two
        packs of the same product) passes ``corr`` less clearly; a flat 1 would rank the
        lookalike's pixels above every other score. The floor keeps every flagged pixel above
        the default threshold, so the mask is the region either way."""
        return combine(self.findings(gray, transforms), self.config, gray.shape)

    def findings(self, gray: np.ndarray, transforms: list[Transform]) -> list[Finding]:
        """Each transform's flagged region, verified or not.

        A transform whose copy side and source side overlap by more than ``MAX_OVERLAP`` (of the
        smaller) gives none: that is a pattern repeating into itself (tiles, a brick wall), not a
        region pasted elsewhere."""
        cfg = self.config
        h, w = gray.shape
        g = gray.astype(np.float32)
        found = []
        for t in transforms:
            inv = cv2.invertAffineTransform(t.matrix)
            sides = []
            for m, points in ((t.matrix, t.dst), (inv, t.src)):
                warped = cv2.warpAffine(g, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=-1.0)
                valid = cv2.warpAffine(np.ones_like(g), m, (w, h), flags=cv2.INTER_NEAREST) > 0
                z = local_zncc(g, warped, cfg.window) * valid
                part = _parts_with_points((z > cfg.corr) & _far(m, h, w, cfg.min_shift), points, cfg.window)
                strength = np.clip((cv2.blur(z, (cfg.window, cfg.window)) - cfg.corr) / (1.0 - cfg.corr), 0.0, 1.0)
                sides.append((part, np.where(part, FLOOR + (1.0 - FLOOR) * strength, 0.0), z))
            (copy, copy_map, zc), (source, source_map, zs) = sides
            smaller = min(copy.sum(), source.sum())
            if smaller and (copy & source).sum() <= MAX_OVERLAP * smaller:
                corr = float((zc[copy].mean() + zs[source].mean()) / 2)
                region = np.maximum(copy_map, source_map).astype(np.float32)
                found.append(Finding(region, corr, t.fit_error(), t))
        return found

    def prob_map(self, rgb: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The detector's map of an ``H x W x 3`` uint8 image, at ``shape`` (default its own)."""
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        found = self.transforms(*self.matches(gray))
        m = self.region_map(gray, found)
        if shape is not None and shape != m.shape:
            m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        return m

    def _features(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kp, desc = self._sift.detectAndCompute(gray, None)
        if desc is None or not kp:
            return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
        return cv2.KeyPoint_convert(kp).reshape(-1, 2), desc


@dataclass(frozen=True)
class KeypointJob:
    """What a decoding worker needs to compute the detector's map of an image ahead of the
    network (picklable): its settings and the square size the detector sees.

    Why in the workers: the detector runs on the CPU (SIFT, RANSAC, correlation), about 0.13 s a
    photo on an H200 machine's cores, against 0.013 s for the network and the dense matcher on its
    GPU; in the main process, after the network, it made scans there seven times slower. In the
    decoding processes it runs in parallel, while the GPU works. The map is the same either way."""

    config: KeypointConfig
    size: int

    def run(self, rgb: np.ndarray) -> np.ndarray:
        """The ``size`` x ``size`` map of an ``H x W x 3`` uint8 image (resized as the predictor does)."""
        s = self.size
        small = rgb if rgb.shape[:2] == (s, s) else cv2.resize(rgb, (s, s), interpolation=cv2.INTER_LINEAR)
        matcher = _WORKER_MATCHERS.get(self.config)
        if matcher is None:
            matcher = _WORKER_MATCHERS[self.config] = KeypointMatcher(self.config)
        return matcher.prob_map(small)


_WORKER_MATCHERS: dict[KeypointConfig, KeypointMatcher] = {}


def map_ahead(job: KeypointJob | None, rgb: np.ndarray) -> np.ndarray | None:
    """``job.run(rgb)`` for a decoding worker; None when there is no job or it failed, so that
    the predictor computes the map itself and a failure is reported where it always was."""
    if job is None:
        return None
    try:
        return job.run(rgb)
    except Exception:  # noqa: BLE001 - recomputed (and reported) by the predictor
        return None


def combine(findings: list[Finding], config: KeypointConfig, shape: tuple[int, int]) -> np.ndarray:
    """The pixel-wise maximum of the verified findings' maps (zeros when none is)."""
    out = np.zeros(shape, np.float32)
    for f in findings:
        if f.verified(config):
            np.maximum(out, f.map, out=out)
    return out


def both_ways(searches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Every matched pair once in each direction (a keypoint of the copy and one of its source
    usually find each other), so that a copy is found whichever way its matches point."""
    a = np.concatenate([s[0] for s in searches] + [s[1] for s in searches])
    b = np.concatenate([s[1] for s in searches] + [s[0] for s in searches])
    pairs = np.unique(np.hstack([a, b]).reshape(-1, 4), axis=0)
    return np.ascontiguousarray(pairs[:, :2]), np.ascontiguousarray(pairs[:, 2:])


def _ratio_matches(
    kp: np.ndarray, desc: np.ndarray, kp2: np.ndarray, desc2: np.ndarray, ratio: float, min_shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (kp[i], kp2[j]) where j is the nearest descriptor at least ``min_shift`` away and
    clearly nearer than the next such one (the ratio test).

    Why this way: the search was most of the detector's time after SIFT. SIFT descriptors are whole
    numbers below 256, so every squared distance, however its sums are ordered, is exact in fp32:
    each block of ``MATCH_BLOCK`` rows is one product with the squared lengths added in place. A
    row's nearest and second nearest come from two minima; where a minimum lies within
    ``min_shift`` (a keypoint itself, or its neighbour), it is set to infinity and that row's
    minimum taken again. Ties at the nearest fail the ratio test whichever of them is taken, so
    the matches are those of the full search."""
    empty = np.zeros((0, 2), np.float32)
    if len(kp) < 1 or len(kp2) < 2:
        return empty, empty
    a, b = torch.from_numpy(desc).float(), torch.from_numpy(desc2).float()
    p, p2 = torch.from_numpy(kp), torch.from_numpy(kp2)
    aa, bb, bt = (a * a).sum(1, keepdim=True), (b * b).sum(1), b.T.contiguous()
    reach = max(min_shift, 1.0)
    best = torch.empty(len(kp), 2)
    nearest = torch.empty(len(kp), dtype=torch.long)
    for s in range(0, len(kp), MATCH_BLOCK):
        d2 = torch.addmm(bb, a[s : s + MATCH_BLOCK], bt, alpha=-2.0).add_(aa[s : s + MATCH_BLOCK]).clamp_min_(0)
        rows = torch.arange(len(d2))
        if kp2 is kp:
            d2[rows, rows + s] = float("inf")  # each keypoint itself
        for k in range(2):
            v, j = _nearest_far(d2, p[s : s + MATCH_BLOCK], p2, reach)
            best[s : s + MATCH_BLOCK, k] = v
            if k == 0:
                nearest[s : s + MATCH_BLOCK] = j
                d2[rows, j] = float("inf")
    dist = best.sqrt()
    keep = (dist[:, 0] < ratio * dist[:, 1]).numpy()
    return kp[keep], kp2[nearest.numpy()[keep]]


def _nearest_far(
    d2: torch.Tensor, p: torch.Tensor, p2: torch.Tensor, reach: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's smallest ``d2`` among the columns at least ``reach`` away (``p`` the rows'
    points, ``p2`` the columns'), and its column; columns found too close are set to infinity in
    ``d2``. Few rows need a second try, and fewer a third."""
    v, j = d2.min(1)
    todo = torch.arange(len(d2))
    while len(todo):
        close = ((p2[j[todo]] - p[todo]) ** 2).sum(-1).sqrt() < reach
        todo = todo[close & torch.isfinite(v[todo])]
        if not len(todo):
            break
        d2[todo, j[todo]] = float("inf")
        v[todo], j[todo] = d2[todo].min(1)
    return v, j


def ransac_affine(
    a: np.ndarray, b: np.ndarray, reproj: float, rng: np.random.Generator, iters: int = RANSAC_ITERS
) -> tuple[np.ndarray, np.ndarray] | None:
    """The affine map (2 x 3) taking most points ``a`` to within ``reproj`` pixels of ``b``, and
    which do, among the maps through three random pairs whose scale lies in [0.5, 2].

    Why not ``cv2.estimateAffine2D``: every match is given both ways, and with few matches an
    extreme map that sends a copy's points to its source *and* back fits more pairs than the true
    copy does; ruling such maps out inside the search, not after it, leaves the copy to be found."""
    n = len(a)
    if n < 3:
        return None
    ah = np.hstack([a, np.ones((n, 1), a.dtype)]).astype(np.float64)
    pick = rng.integers(0, n, (iters, 3))
    src, dst = ah[pick], b[pick].astype(np.float64)  # iters x 3 x 3, iters x 3 x 2
    ok = np.abs(np.linalg.det(src)) > 1e-6
    if not ok.any():
        return None
    models = np.linalg.solve(src[ok], dst[ok])  # k x 3 x 2: [x y 1] @ model = target
    s = np.linalg.svd(models[:, :2, :], compute_uv=False)
    models = models[(s.min(1) >= 0.5) & (s.max(1) <= 2.0)]
    if not len(models):
        return None
    best, best_count = None, -1
    for k in range(0, len(models), 256):
        err = np.linalg.norm(ah[None] @ models[k : k + 256] - b[None], axis=2)  # chunk x n
        counts = (err < reproj).sum(1)
        i = int(counts.argmax())
        if counts[i] > best_count:
            best, best_count = models[k + i], int(counts[i])
    inl = np.linalg.norm(ah @ best - b, axis=1) < reproj
    if inl.sum() >= 3:  # refit on the inliers, keeping the refit only if it explains as many
        refit = np.linalg.lstsq(ah[inl], b[inl].astype(np.float64), rcond=None)[0]
        inl2 = np.linalg.norm(ah @ refit - b, axis=1) < reproj
        if inl2.sum() >= inl.sum():
            best, inl = refit, inl2
    return best.T.astype(np.float64), inl


def _plausible(m: np.ndarray, src: np.ndarray, dst: np.ndarray, min_shift: float) -> bool:
    """A moderate scale (singular values within [0.5, 2]), a median shift of ``min_shift``, and
    source and copy apart: at most ``MAX_OVERLAP`` of either side's inliers inside the other's
    convex hull. That last test rejects what repeats by nature rather than by copying: a
    mirror-symmetric object maps onto itself, and a row of windows maps each window onto the
    next, so the two sides' points interleave."""
    s = np.linalg.svd(m[:, :2], compute_uv=False)
    if s.min() < 0.5 or s.max() > 2.0:
        return False
    if float(np.median(np.hypot(*(dst - src).T))) < min_shift:
        return False
    return max(_inside_hull(dst, src), _inside_hull(src, dst)) <= MAX_OVERLAP


def _inside_hull(points: np.ndarray, of: np.ndarray) -> float:
    """The share of ``points`` inside the convex hull of ``of``."""
    if len(of) < 3:
        return 0.0
    hull = cv2.convexHull(of.astype(np.float32))
    return float(np.mean([cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0 for x, y in points]))


def _reverse_of(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Which pairs (a, b) are the reverse of an inlier pair (ia, ib)."""
    reverse = set(_pair_keys(ib, ia))
    return np.array([k in reverse for k in _pair_keys(a, b)], bool)


def _pair_keys(p: np.ndarray, q: np.ndarray) -> list[tuple[float, ...]]:
    return [tuple(row) for row in np.round(np.hstack([p, q]).astype(np.float64), 2).tolist()]


def _far(m: np.ndarray, h: int, w: int, min_shift: float) -> np.ndarray:
    """Pixels that the transform ``m`` (as warpAffine applies it) moves by at least ``min_shift``."""
    inv = cv2.invertAffineTransform(m)
    ys, xs = _grid(h, w)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    return np.hypot(sx - xs, sy - ys) >= min_shift


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel's row and column as float32 (read only), kept per size: building them was a
    fifth of ``_far``'s time, twice per transform."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def local_zncc(a: np.ndarray, b: np.ndarray, window: int) -> np.ndarray:
    """Zero-mean normalized cross-correlation of ``a`` and ``b`` over each ``window`` square;
    0 where either is flat (standard deviation below FLAT_STD grey levels)."""
    k = (window, window)
    ma, mb = cv2.blur(a, k), cv2.blur(b, k)
    va = cv2.blur(a * a, k) - ma * ma
    vb = cv2.blur(b * b, k) - mb * mb
    cov = cv2.blur(a * b, k) - ma * mb
    ok = (va > FLAT_STD**2) & (vb > FLAT_STD**2)
    out = np.zeros_like(a)
    out[ok] = cov[ok] / np.sqrt(va[ok] * vb[ok])
    return out


def _parts_with_points(hit: np.ndarray, points: np.ndarray, window: int) -> np.ndarray:
    """The connected parts of ``hit`` (after closing its gaps) that contain one of ``points``."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (window, window))
    closed = cv2.morphologyEx(hit.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    closed = cv2.morphologyEx(closed, cv2.MORPH_OPEN, kernel)
    n, labels = cv2.connectedComponents(closed, connectivity=8)
    if n <= 1:
        return np.zeros_like(hit)
    h, w = hit.shape
    xs = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    keep = np.unique(labels[ys, xs])
    keep = keep[keep > 0]
    return np.isin(labels, keep)


def keypoint_config_of(metadata: dict[str, Any] | None) -> KeypointConfig | None:
    """The keypoint detector's settings a weights file carries, or None (not used)."""
    return KeypointConfig.of(metadata)
