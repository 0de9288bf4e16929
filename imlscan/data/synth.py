"""Synthetic forgeries with exact masks, made from any folder of authentic photos.

Three manipulations and authentic negatives, each followed by a whole-image post-processing
chain (``imlscan.data.transforms``):

* **splice**: a region of another photo (an object shape from a segmentation label map, or a
  random blob, polygon, ellipse or rectangle) is scaled, rotated, optionally flipped, colour
  matched (mean/std in Lab) and pasted with a hard, feathered or semi-transparent edge,
  optionally after giving the donor a different JPEG history;
* **copy-move**: a region of the same photo is pasted elsewhere with rotation, scale, flip and a
  brightness change; the *pasted* region is the positive;
* **removal**: a region is filled by OpenCV inpainting (Telea or Navier-Stokes); the filled
  region is the positive.

Mask definition (before post-processing): the composite is ``host * (1 - alpha) + content *
alpha`` and the mask is ``alpha > 0.5``. With hard edges ``alpha`` is 0 or 1, and every masked
pixel is guaranteed to differ from the host (a pasted or filled pixel that happens to equal the
host's is moved by one grey level), so the mask is *exactly* the set of changed pixels. With
feathered or alpha edges, pixels of the fringe with ``0 < alpha <= 0.5`` change without being
marked, like an annotator's boundary. Geometric post-processing (resize) resamples the mask as
coverage > 0.5. Regions smaller than ``min_area`` of the image, or whose change is invisible
(most masked pixels within 2 grey levels of the host), are rejected and drawn again.

Compression histories (``history``, a share of samples): most hosts are camera JPEGs, and what
a JPEG remembers of its past is the strongest trace a paste leaves in it. Such a sample keeps its
host at its own size and grid (cropped from the top left, never resized), usually saves it once
more at quality 60-95 first (a published photo: ``PUBLISHED_SHARE``), pastes without
resampling or flipping (half on the 8x8 grid, half off it), and is saved once more as a JPEG at a
quality drawn above, equal to or below the host's own. Its authentic samples are the host file
itself (saved once), the host re-saved (twice, aligned), or the host cropped off the grid and
re-saved. Samples without a history are drawn exactly as before.

Determinism: sample ``i`` is a pure function of ``(seed, i)`` (its own numpy generator seeded
with both), so data-loader workers, sharding and resumed runs all see the same data.

Host split: a photo belongs to the validation split when a SHA-256 of its *file name* falls in
the first ``val_fraction`` of the hash range; the split survives moving, re-sharding or adding
photos and the validation photos are never used for training data.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from imlscan.data.transforms import PostConfig, apply_chain, jpeg_roundtrip, resize_mask, sample_chain
from imlscan.defaults import DATASET_MAX_PIXELS
from imlscan.errors import ImlscanError, UsageError
from imlscan.fsutil import atomic_write_bytes, atomic_write_text
from imlscan.inputgate import pil_pixel_limit, read_file
from imlscan.jpegtables import jpeg_file_quality
from imlscan.safetext import dumps_json

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
KINDS = ("splice", "copymove", "removal")
# Compression histories: the share of hosts saved once more before the edit ("published", as photos
# found online mostly are: camera originals are rarely what a newsroom receives) and its quality range.
PUBLISHED_SHARE = 0.75
PUBLISHED_QUALITY = (60, 96)
EDGES = ("hard", "feather", "alpha")
SPLITS = ("train", "val", "all")
NEGATIVE = "Negative"


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes the generated data (stored in manifests and weights metadata)."""

    negatives: float = 0.2  # share of authentic samples (all-zero mask)
    kinds: tuple[float, float, float] = (0.4, 0.35, 0.25)  # relative weights of splice, copymove, removal
    area: tuple[float, float] = (0.01, 0.40)  # region size as a fraction of the image, log-uniform
    min_area: float = 0.005  # smaller regions are rejected and drawn again
    removal_max_area: float = 0.12  # inpainting large areas is slow and unrealistic
    edges: tuple[float, float, float] = (0.5, 0.3, 0.2)  # hard, feather, alpha
    object_shapes: float = 0.6  # share of shapes taken from region maps (when given)
    donor_jpeg: float = 0.5  # splice: give the donor a different JPEG history first
    translate: float = 0.3  # share of splices and copy-moves pasted without scaling or rotation
    translate_objects: bool = False  # translated pastes of the photo's own objects keep their size
    size: int | None = None  # resize the host to size x size before manipulating (fixed-size sets)
    max_side: int = 1024  # larger hosts are downscaled first (speed; their long side becomes this)
    host_resize: float = 0.0  # share of hosts downscaled by a random factor before manipulating
    host_resize_range: tuple[float, float] = (0.5, 0.9)
    forge_scale: float = 0.0  # share of samples forged on an upsampled host (then seen downsampled)
    forge_scale_range: tuple[float, float] = (1.25, 2.5)  # per axis, log-uniform
    history: float = 0.0  # share of samples given a camera-style compression history (see HISTORY)
    post: PostConfig = field(default_factory=PostConfig)
    max_attempts: int = 40

    def __post_init__(self) -> None:
        if not 0.0 <= self.negatives <= 1.0:
            raise UsageError(f"negatives share must be in [0, 1], got {self.negatives}")
        if not 0.0 < self.min_area <= self.area[0] <= self.area[1] < 1.0:
            raise UsageError(
                f"bad region area range {self.area} (min_area {self.min_area})",
                hint=f"give MIN,MAX as fractions with {self.min_area} <= MIN <= MAX < 1, e.g. 0.01,0.4",
            )
        if min(self.kinds) < 0 or sum(self.kinds) <= 0:
            raise UsageError("kind weights must be >= 0 and not all zero")
        if not 0.0 <= self.translate <= 1.0:
            raise UsageError(f"translate share must be in [0, 1], got {self.translate}")
        if not 0.0 <= self.host_resize <= 1.0:
            raise UsageError(f"host_resize share must be in [0, 1], got {self.host_resize}")
        if not 0.1 <= self.host_resize_range[0] <= self.host_resize_range[1] <= 1.0:
            raise UsageError(f"bad host_resize_range {self.host_resize_range}: need 0.1 <= MIN <= MAX <= 1")
        if not 0.0 <= self.forge_scale <= 1.0:
            raise UsageError(f"forge_scale share must be in [0, 1], got {self.forge_scale}")
        if not 1.0 <= self.forge_scale_range[0] <= self.forge_scale_range[1] <= 4.0:
            raise UsageError(f"bad forge_scale_range {self.forge_scale_range}: need 1 <= MIN <= MAX <= 4")
        if self.size is not None and self.size < 32:
            raise UsageError(f"size must be at least 32 pixels, got {self.size}")
        if not 0.0 <= self.history <= 1.0:
            raise UsageError(f"history share must be in [0, 1], got {self.history}")
        if self.history and self.size:
            raise UsageError("--history needs hosts at their own size", hint="drop --size: a resize erases the grid")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SynthConfig:
        d = dict(d)
        post = PostConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("post", {}).items()})
        return cls(post=post, **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def parse_fractions(text: str, n: int, what: str) -> tuple[float, ...]:
    """``"0.01,0.4"`` -> ``(0.01, 0.4)``: the comma lists of ``synth --area/--kinds`` and of
    ``synth:`` training specs, with one error for both."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise UsageError(f"{what}: expected {n} comma-separated numbers, got {text!r}")
    return values


MIN_REGION_AREA = 0.001  # 0.1% of the image (about 260 pixels at 512x512): the smallest region drawn


def parse_area(text: str, what: str) -> dict:
    """``"MIN,MAX"`` -> the ``SynthConfig`` keywords ``area`` and ``min_area``: the rejection floor
    (``min_area``, 0.5% by default) is lowered to MIN when MIN is under it, so asking for smaller
    regions gets them instead of an error (real forgeries go down to 0.2% of the image)."""
    lo, hi = parse_fractions(text, 2, what)
    if not MIN_REGION_AREA <= lo <= hi < 1.0:
        raise UsageError(
            f"{what}: need {MIN_REGION_AREA} <= MIN <= MAX < 1, got {text!r}",
            hint="e.g. 0.01,0.4 (the default), or 0.002,0.06 for small regions",
        )
    return {"area": (lo, hi), "min_area": min(SynthConfig.min_area, lo)}


@dataclass
class SynthSample:
    """One generated sample; ``image``/``mask`` are final, ``manipulated`` is before
    post-processing and ``host`` the photo as it was used (after any resizing; for a sample
    forged larger, both are at the forging size)."""

    index: int
    image: np.ndarray
    mask: np.ndarray
    params: dict
    encoded: bytes | None
    host: np.ndarray
    manipulated: np.ndarray

    @property
    def negative(self) -> bool:
        return self.params["kind"] == "negative"


# -- files -----------------------------------------------------------------------------------


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files skipped), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImlscanError(f"{folder}: not a folder", hint="give a folder of authentic photos")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTS
        and p.is_file()
        and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def host_split(name: str | Path, val_fraction: float = 0.1) -> str:
    """``"val"`` or ``"train"`` for a photo, by a stable hash of its file name."""
    digest = hashlib.sha256(Path(name).name.encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction else "train"


def split_hosts(paths: Sequence[Path], split: str = "train", val_fraction: float = 0.1) -> list[Path]:
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}", hint="use train, val or all")
    if split == "all":
        return list(paths)
    return [p for p in paths if host_split(p, val_fraction) == split]


def load_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Decode a photo as uint8 RGB (EXIF orientation applied), downscaled so that its long
    side is at most ``max_side``. Hosts are the user's photos: read through the input gate and
    decoded under the explicit dataset pixel limit."""
    data = read_file(path)
    with pil_pixel_limit(DATASET_MAX_PIXELS), Image.open(io.BytesIO(data)) as im:
        if max_side and im.format == "JPEG" and max(im.size) > 2 * max_side:
            im.draft("RGB", (max_side, max_side))  # DCT-domain downscale: much faster decoding
        rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        k = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def _stored_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of an encoded image as decoded with its EXIF orientation, or None."""
    try:
        with pil_pixel_limit(DATASET_MAX_PIXELS), Image.open(io.BytesIO(data)) as im:
            w, h = ImageOps.exif_transpose(im).size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return h, w


def region_id(path: Path) -> str:
    """A label map ``<id>_<annotator>.png`` belongs to photo id ``<id>``."""
    return path.stem.rsplit("_", 1)[0]


def photo_id(path: Path) -> str:
    """Photo ids match label maps: ``bsds_100075.jpg`` and ``100075.jpg`` both give ``100075``."""
    return path.stem.rsplit("_", 1)[-1]


@lru_cache(maxsize=4096)
def _map_segments(path: str) -> np.ndarray:
    return _segments(_label_map(path))


@lru_cache(maxsize=256)
def _label_map(path: str) -> np.ndarray:
    m = cv2.imdecode(np.frombuffer(read_file(path), np.uint8), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise ImlscanError(f"{path}: cannot read region map")
    if m.ndim == 3:  # a colour label map: one id per colour
        m = (m[..., 0].astype(np.int64) << 16) | (m[..., 1].astype(np.int64) << 8) | m[..., 2]
    return m


# -- shapes ----------------------------------------------------------------------------------


def random_shape(rng: np.random.Generator, res: int = 160) -> tuple[np.ndarray, str]:
    """A random region shape, cropped to its bounding box: smooth blob, polygon, ellipse or
    rectangle, with random elongation."""
    kind = str(rng.choice(["blob", "polygon", "ellipse", "rect"], p=[0.45, 0.3, 0.15, 0.1]))
    canvas = np.zeros((res, res), np.uint8)
    c, r = res / 2, res * 0.45
    if kind in ("blob", "polygon"):
        if kind == "blob":
            t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
            rad = np.ones_like(t)
            for k in range(1, 6):
                rad += rng.uniform(0, 0.35 / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        else:
            t = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 12))))
            rad = rng.uniform(0.35, 1.0, t.size)
        rad = rad / rad.max()
        aspect = rng.uniform(0.35, 1.0)
        rot = rng.uniform(0, np.pi)
        x, y = rad * np.cos(t), rad * np.sin(t) * aspect
        x, y = x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)
        pts = np.stack([c + r * x, c + r * y], 1).round().astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1)
    elif kind == "ellipse":
        axes = (int(r), max(2, int(r * rng.uniform(0.3, 1.0))))
        cv2.ellipse(canvas, (int(c), int(c)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        w, h = r * 2 * rng.uniform(0.5, 1.0), r * 2 * rng.uniform(0.2, 1.0)
        box = cv2.boxPoints(((c, c), (w, h), float(rng.uniform(0, 180))))
        cv2.fillPoly(canvas, [box.round().astype(np.int32)], 1)
    return _crop(canvas.astype(bool)), kind


def _segments(labels: np.ndarray, lo: float = 0.005, hi: float = 0.6) -> np.ndarray:
    """Segment ids covering between ``lo`` and ``hi`` of a label map."""
    ids, frac = _segment_sizes(labels)
    return ids[(frac >= lo) & (frac <= hi)]


def _segment_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if labels.dtype in (np.uint8, np.uint16):
        counts = np.bincount(labels.ravel())
        ids = np.nonzero(counts)[0]
        return ids, counts[ids] / labels.size
    ids, counts = np.unique(labels, return_counts=True)
    return ids, counts / labels.size


def object_shape(rng: np.random.Generator, label_path: Path) -> tuple[np.ndarray, dict] | None:
    """One segment of a label map, cropped to its bounding box (``None`` if it has none usable)."""
    labels = _label_map(str(label_path))
    ids = _map_segments(str(label_path))
    if ids.size == 0:
        return None
    seg = ids[int(rng.integers(ids.size))]
    return _crop(labels == seg), {"shape": "object", "region_map": label_path.name, "segment": int(seg)}


def _crop(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _scale_shape(shape: np.ndarray, area_px: float, max_h: float, max_w: float) -> np.ndarray | None:
    """Resize a shape so that it covers about ``area_px`` pixels, shrunk to fit ``max_h x max_w``."""
    sh, sw = shape.shape
    k = math.sqrt(area_px / max(1, int(shape.sum())))
    k = min(k, max_h / sh, max_w / sw)
    nh, nw = max(1, round(sh * k)), max(1, round(sw * k))
    out = cv2.resize(shape.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR) > 0.5
    return out if out.any() else None


def _place(shape: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    sh, sw = shape.shape
    y0, x0 = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
    mask = np.zeros((h, w), bool)
    mask[y0 : y0 + sh, x0 : x0 + sw] = shape
    return mask


def _draw_shape(rng: np.random.Generator, cfg: SynthConfig, regions: Sequence[Path] | None) -> tuple[np.ndarray, dict]:
    if regions and rng.random() < cfg.object_shapes:
        for _ in range(5):
            got = object_shape(rng, regions[int(rng.integers(len(regions)))])
            if got is not None:
                return got
    shape, kind = random_shape(rng)
    return shape, {"shape": kind}


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


# -- manipulations ---------------------------------------------------------------------------


def splice(
    host: np.ndarray,
    donor: np.ndarray,
    rng: np.random.Generator,
    cfg: SynthConfig,
    regions: Sequence[Path] | None = None,
    donor_regions: Sequence[Path] | None = None,
    *,
    grid: str | None = None,
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Paste a region of ``donor`` into ``host``. ``donor_regions`` are label maps of the donor
    photo itself: with them the region can be a real object of the donor. ``grid`` ("aligned" or
    "off"): a compression-history sample, pasted without resampling, on or off the 8x8 grid.
    ``None``: rejected."""
    params: dict = {}
    if rng.random() < cfg.donor_jpeg:
        qs = [int(rng.integers(50, 101))]
        if rng.random() < 0.3:
            qs.append(int(rng.integers(50, 101)))
        for q in qs:
            donor, _ = jpeg_roundtrip(donor, q)
        params["donor_jpeg"] = qs
    return _transfer(host, donor, rng, cfg, "splice", regions, donor_regions, params, grid=grid)


def copy_move(
    host: np.ndarray,
    rng: np.random.Generator,
    cfg: SynthConfig,
    regions: Sequence[Path] | None = None,
    own_regions: Sequence[Path] | None = None,
    *,
    grid: str | None = None,
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Paste a region of ``host`` elsewhere in it; the mask is the pasted region only (``grid``:
    as for ``splice``)."""
    return _transfer(host, host, rng, cfg, "copymove", regions, own_regions, {}, grid=grid)


def removal(
    host: np.ndarray,
    rng: np.random.Generator,
    cfg: SynthConfig,
    regions: Sequence[Path] | None = None,
    own_regions: Sequence[Path] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Fill a region by inpainting; the mask is the filled region."""
    h, w = host.shape[:2]
    hi = min(cfg.area[1], cfg.removal_max_area)
    area = _log_uniform(rng, min(cfg.area[0], hi), hi) * h * w
    aligned = _own_segment(rng, cfg, own_regions, (h, w), lo=cfg.min_area, hi=hi)
    if aligned is not None:
        region, info = aligned
    else:
        shape, info = _draw_shape(rng, cfg, regions)
        shape = _scale_shape(shape, area, h * 0.9, w * 0.9)
        if shape is None:
            return None
        region = _place(shape, h, w, rng)
    if rng.random() < 0.5:  # annotators and removal tools both overshoot the object a little
        k = int(rng.integers(1, 4)) * 2 + 1
        region = cv2.dilate(region.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
        info["dilate"] = k
    method = "telea" if rng.random() < 0.5 else "ns"
    radius = int(rng.integers(2, 6))
    out = cv2.inpaint(
        host, region.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    )
    np.copyto(out, host, where=~region[..., None])  # inpainting never touches pixels outside; make it a guarantee
    params = {**info, "inpaint": method, "radius": radius}
    return _finish(host, out, region, cfg, params)


def _own_segment(
    rng: np.random.Generator,
    cfg: SynthConfig,
    own_regions: Sequence[Path] | None,
    shape_hw: tuple[int, int],
    lo: float,
    hi: float,
) -> tuple[np.ndarray, dict] | None:
    """A real object of the photo itself, from its own label maps (when they fit its size)."""
    if not own_regions or rng.random() >= cfg.object_shapes * 0.5:
        return None
    path = own_regions[int(rng.integers(len(own_regions)))]
    labels = _label_map(str(path))
    if labels.shape != shape_hw:
        return None
    ids = _segments(labels, lo, hi)
    if ids.size == 0:
        return None
    seg = ids[int(rng.integers(ids.size))]
    return labels == seg, {"shape": "object", "aligned": True, "region_map": path.name, "segment": int(seg)}


def _transfer(
    host: np.ndarray,
    source: np.ndarray,
    rng: np.random.Generator,
    cfg: SynthConfig,
    kind: str,
    regions: Sequence[Path] | None,
    own_regions: Sequence[Path] | None,
    params: dict,
    *,
    grid: str | None = None,
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Shared splice/copy-move path: a region of ``source`` mapped into ``host`` by one affine
    transform (scale, rotation, flip, translation) that moves pixels and region together. With
    ``grid``, a pure translation by whole pixels, a multiple of 8 ("aligned") or not ("off")."""
    h, w = host.shape[:2]
    sh, sw = source.shape[:2]
    target_area = _log_uniform(rng, *cfg.area) * h * w
    translated = rng.random() < cfg.translate
    if grid is not None:
        translated, cfg = True, replace(cfg, translate_objects=True)
    if translated:  # no resampling: the hardest case (copy-moves leave no other trace)
        scale, angle = 1.0, 0.0
    elif kind == "splice":
        scale, angle = _log_uniform(rng, 0.6, 1.6), float(rng.uniform(-30, 30))
    else:
        scale, angle = _log_uniform(rng, 0.75, 1.33), float(rng.uniform(-45, 45))
    flip = bool(rng.random() < (0.2 if kind == "splice" else 0.3)) and grid is None

    aligned = _own_segment(rng, cfg, own_regions, (sh, sw), lo=cfg.min_area, hi=0.5)
    if aligned is not None:
        src_region, info = aligned
        if not (translated and cfg.translate_objects):
            scale = float(np.clip(math.sqrt(target_area / src_region.sum()), 0.5, 2.0))
    else:
        shape, info = _draw_shape(rng, cfg, regions)
        shape = _scale_shape(shape, target_area / scale**2, sh * 0.95, sw * 0.95)
        if shape is None:
            return None
        src_region = _place(shape, sh, sw, rng)

    ys, xs = np.nonzero(src_region)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    cs = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    a = math.radians(angle)
    lin = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if flip:
        lin = lin @ np.array([[-1.0, 0.0], [0.0, 1.0]])
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], float) - cs
    ext = np.ptp(corners @ lin.T, axis=0)  # width, height of the moved bounding box
    shrink = min(1.0, 0.98 * w / ext[0], 0.98 * h / ext[1])
    lin, ext, scale = lin * shrink, ext * shrink, scale * shrink

    best, best_overlap = None, 2.0
    for _ in range(8 if kind == "copymove" else 1):
        ct = np.array([rng.uniform(ext[0] / 2, w - ext[0] / 2), rng.uniform(ext[1] / 2, h - ext[1] / 2)])
        overlap = _box_iou((x0, y0, x1, y1), (*(ct - ext / 2), *(ct + ext / 2))) if kind == "copymove" else 0.0
        if overlap < best_overlap:
            best, best_overlap = ct, overlap
        if overlap < 0.1:
            break
    shift = best - lin @ cs
    if scale == 1.0 and angle == 0.0:
        shift = np.round(shift)  # whole-pixel moves copy pixels exactly (no resampling trace)
    if grid == "aligned":
        shift = 8.0 * np.round(shift / 8.0)
    elif grid == "off" and not (shift % 8).any():
        shift[0] += int(rng.integers(1, 8))
    affine = np.hstack([lin, shift[:, None]]).astype(np.float64)

    content = cv2.warpAffine(source, affine, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    cover = cv2.warpAffine(
        src_region.astype(np.float32), affine, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    hard = cover > 0.5
    if hard.sum() < cfg.min_area * h * w:
        return None
    content = content.astype(np.float32)
    if kind == "splice" and rng.random() < 0.7:
        strength = float(rng.uniform(0.5, 1.0))
        content = _match_colour(content, host, hard, strength)
        params["colour_match"] = round(strength, 3)
    if kind == "copymove" and rng.random() < 0.5:
        gain, bias = float(rng.uniform(0.8, 1.2)), float(rng.uniform(-15, 15))
        content = content * gain + bias
        params["brightness"] = [round(gain, 3), round(bias, 2)]

    edge = EDGES[int(rng.choice(3, p=np.asarray(cfg.edges) / sum(cfg.edges)))]
    if edge == "hard":
        alpha = hard.astype(np.float32)
    else:
        sigma = float(rng.uniform(1.0, 3.0) if edge == "feather" else rng.uniform(0.5, 1.5))
        alpha = cv2.GaussianBlur(hard.astype(np.float32), (0, 0), sigma)
        params["edge_sigma"] = round(sigma, 3)
        if edge == "alpha":
            opacity = float(rng.uniform(0.6, 0.95))
            alpha *= opacity
            params["opacity"] = round(opacity, 3)
    mask = alpha > 0.5
    if mask.sum() < cfg.min_area * h * w:
        return None

    out = host.copy()
    ys, xs = np.nonzero(alpha > 0)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    a3 = alpha[box][..., None]
    out[box] = np.clip(np.rint(host[box] * (1.0 - a3) + content[box] * a3), 0, 255).astype(np.uint8)
    params.update(
        info,
        edge=edge,
        scale=round(scale, 4),
        angle=round(angle, 2),
        flip=flip,
        affine=np.round(affine, 4).tolist(),
    )
    return _finish(host, out, mask, cfg, params)


def _finish(
    host: np.ndarray, out: np.ndarray, mask: np.ndarray, cfg: SynthConfig, params: dict
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Reject invisible changes, then make every masked pixel differ from the host."""
    n = int(np.count_nonzero(mask))
    if n < cfg.min_area * mask.size:
        return None
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    m, o, h = mask[box], out[box], host[box]
    diff = np.abs(o.astype(np.int16) - h.astype(np.int16)).max(axis=2)
    if np.count_nonzero(diff[m] <= 2) > 0.5 * n:
        return None
    same = m & (diff == 0)
    if same.any():
        v = o[..., 0][same]
        o[..., 0][same] = np.where(v == 255, 254, v + 1)
    params["area"] = round(n / mask.size, 5)
    return out, mask, params


def _match_colour(content: np.ndarray, host: np.ndarray, sel: np.ndarray, strength: float) -> np.ndarray:
    """Move the pasted region's Lab mean and spread towards the host's under the region."""
    ys, xs = np.nonzero(sel)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    s = sel[box]
    lab_c = cv2.cvtColor(np.clip(content[box], 0, 255) / 255.0, cv2.COLOR_RGB2Lab)
    lab_h = cv2.cvtColor(host[box].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    mu_c, sd_c = lab_c[s].mean(0), lab_c[s].std(0) + 1e-3
    mu_h, sd_h = lab_h[s].mean(0), lab_h[s].std(0) + 1e-3
    ratio = np.clip(sd_h / sd_c, 0.5, 2.0) ** strength
    lab = (lab_c - mu_c) * ratio + mu_c + strength * (mu_h - mu_c)
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    out = content.copy()
    out[box] = np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1) * 255.0
    return out


def rescale_host(
    host: np.ndarray, rng: np.random.Generator, factor_range: tuple[float, float]
) -> tuple[np.ndarray, float]:
    """Downscale a host by a log-uniform factor before it is manipulated.

    Most hosts are camera or web JPEGs at their original size, so their 8x8 compression grid is
    intact and every manipulation breaks it locally: a cue that a model can learn instead of the
    manipulation itself, and one that real forgeries often lack (photos resized or exported before
    editing, uncompressed TIFF sources). Area averaging erases the grid, as such a resize does.
    The photo's own label maps no longer fit a resized host, so its regions come from the shared
    shapes instead."""
    h, w = host.shape[:2]
    factor = _log_uniform(rng, *factor_range)
    nw, nh = max(32, round(w * factor)), max(32, round(h * factor))
    if (nw, nh) == (w, h):
        return host, 1.0
    return cv2.resize(host, (nw, nh), interpolation=cv2.INTER_AREA), round(factor, 4)


def shrink_to_size(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a sample forged larger (``forge_scale``) down to a fixed-size set's ``size``,
    the way the trainer, the paper protocol and ``imlscan scan`` resize a large photo (bilinear,
    anisotropic when the aspect ratio differs). The mask follows by area coverage."""
    rgb = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return rgb, resize_mask(mask, size, size)


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# -- the generator ---------------------------------------------------------------------------


class SynthGenerator:
    """Deterministic stream of synthetic samples from a list of host photos.

    Hosts are visited in a fresh permutation per pass (every photo once per ``len(hosts)``
    samples); the donor of a splice is another host of the same list, so a validation
    generator built on the validation split never touches a training photo.
    """

    def __init__(
        self,
        hosts: Sequence[str | Path],
        *,
        seed: int = 0,
        regions: Sequence[str | Path] | None = None,
        config: SynthConfig | None = None,
    ):
        self.hosts = [Path(p) for p in hosts]
        if not self.hosts:
            raise ImlscanError("no host photos to build synthetic forgeries from")
        self.seed = int(seed)
        self.regions = [Path(p) for p in regions] if regions else []
        self.config = config or SynthConfig()
        self._by_id: dict[str, list[Path]] = {}
        for p in self.regions:
            self._by_id.setdefault(region_id(p), []).append(p)
        self._perm: tuple[int, np.ndarray] | None = None

    @classmethod
    def from_folder(
        cls,
        hosts_dir: str | Path,
        *,
        split: str = "train",
        regions_dir: str | Path | None = None,
        seed: int = 0,
        config: SynthConfig | None = None,
        val_fraction: float = 0.1,
    ) -> SynthGenerator:
        all_hosts = list_images(hosts_dir)
        if not all_hosts:
            raise ImlscanError(f"{hosts_dir}: no photos found", hint=f"supported: {', '.join(IMAGE_EXTS)}")
        hosts = split_hosts(all_hosts, split, val_fraction)
        if not hosts:
            raise ImlscanError(
                f"{hosts_dir}: no photos in the {split!r} split ({len(all_hosts)} photos in total)",
                hint="the validation split holds about 10% of the photos: add photos or use --split all",
            )
        regions = None
        if regions_dir is not None:
            if not Path(regions_dir).is_dir():
                raise ImlscanError(f"{regions_dir}: regions folder not found")
            regions = sorted(p for p in Path(regions_dir).rglob("*.png") if p.is_file())
            if not regions:
                raise ImlscanError(f"{regions_dir}: no PNG label maps found")
        gen = cls(hosts, seed=seed, regions=regions, config=config)
        gen.hosts_dir, gen.split = str(hosts_dir), split
        return gen

    def host_index(self, i: int) -> int:
        n = len(self.hosts)
        epoch = i // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(n))
        return int(self._perm[1][i % n])

    def load(self, index: int, scale: tuple[float, float] | None = None, *, keep_grid: bool = False) -> np.ndarray:
        """A host photo as the generator uses it: decoded, capped, resized to ``size``; for a
        sample forged larger, also upsampled by ``scale`` (x, y), the long side capped at
        ``max_side``. ``keep_grid``: never resized, a large photo is cropped from its top left
        to ``max_side``, so its 8x8 JPEG grid stays where the file has it."""
        cfg = self.config
        if keep_grid:
            rgb = load_rgb(self.hosts[index], None)
            return np.ascontiguousarray(rgb[: cfg.max_side, : cfg.max_side])
        rgb = load_rgb(self.hosts[index], cfg.max_side)
        h, w = (cfg.size, cfg.size) if cfg.size else rgb.shape[:2]
        if scale:
            w, h = w * scale[0], h * scale[1]
            k = min(1.0, cfg.max_side / max(w, h))
            w, h = max(round(w * k), 8), max(round(h * k), 8)
        if (h, w) != rgb.shape[:2]:
            rgb = cv2.resize(
                rgb, (w, h), interpolation=cv2.INTER_AREA if w * h < rgb.shape[0] * rgb.shape[1] else cv2.INTER_LINEAR
            )
        return rgb

    def _own(self, index: int) -> list[Path]:
        return self._by_id.get(photo_id(self.hosts[index]), [])

    def sample(self, i: int) -> SynthSample:
        """Sample number ``i`` (any non-negative integer): a pure function of (seed, i)."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, int(i)])
        scale = None
        if cfg.forge_scale > 0 and rng.random() < cfg.forge_scale:
            scale = (_log_uniform(rng, *cfg.forge_scale_range), _log_uniform(rng, *cfg.forge_scale_range))
        history = cfg.history > 0 and rng.random() < cfg.history
        if history:
            scale = None
        hi, host = self._load_host(self.host_index(i), rng, scale, keep_grid=history)
        params: dict = {"index": int(i), "host": self.hosts[hi].name}
        if history:
            hist = {"camera_quality": self._host_quality(hi), "grid": "aligned" if rng.random() < 0.5 else "off"}
            if rng.random() < PUBLISHED_SHARE:  # as most photos in circulation: saved again before the edit
                hist["published_quality"] = int(rng.integers(*PUBLISHED_QUALITY))
                host, _ = jpeg_roundtrip(host, hist["published_quality"])
            hist["host_quality"] = hist.get("published_quality", hist["camera_quality"])
            params["history"] = hist
        if scale:  # the factors drawn, and the size forged at (the long side capped at max_side)
            params["forge_scale"] = [round(scale[0], 4), round(scale[1], 4)]
            params["forge_size"] = [int(host.shape[1]), int(host.shape[0])]
        if not history and cfg.host_resize > 0 and rng.random() < cfg.host_resize:
            h, w = host.shape[:2]
            host, params["host_resize"] = rescale_host(host, rng, cfg.host_resize_range)
            if cfg.size:  # a fixed-size set stays fixed-size; the way back up keeps the grid erased
                host = cv2.resize(host, (w, h), interpolation=cv2.INTER_LINEAR)
        out = None
        if rng.random() < cfg.negatives:
            kind = "negative"
        else:
            kind = KINDS[int(rng.choice(3, p=np.asarray(cfg.kinds) / sum(cfg.kinds)))]
            for attempt in range(cfg.max_attempts):
                if kind == "splice" and len(self.hosts) > 1:
                    di = int(rng.integers(len(self.hosts) - 1))
                    di += di >= hi
                    di, donor = self._load_host(di, rng, scale, keep_grid=history)
                    grid = params["history"]["grid"] if history else None
                    out = splice(host, donor, rng, cfg, self.regions, self._own(di), grid=grid)
                    if out is not None:
                        out[2]["donor"] = self.hosts[di].name
                elif kind == "removal":
                    out = removal(host, rng, cfg, self.regions, self._own(hi))
                else:
                    kind = "copymove"
                    grid = params["history"]["grid"] if history else None
                    out = copy_move(host, rng, cfg, self.regions, self._own(hi), grid=grid)
                if out is not None:
                    params["attempts"] = attempt + 1
                    break
            if out is None:  # e.g. a flat white photo: nothing visible can be done to it
                kind = "negative"
                params["note"] = "no visible manipulation found; kept as a negative"
        params["kind"] = kind
        if out is None:
            manipulated, mask = host, np.zeros(host.shape[:2], bool)
        else:
            manipulated, mask, extra = out
            params.update(extra)
        if history:
            return self._with_history(i, rng, hi, host, manipulated, mask, params)
        chain = sample_chain(rng, cfg.post)
        image, final_mask, encoded = apply_chain(manipulated, mask, chain, keep_size=cfg.size is not None)
        if scale and cfg.size:
            (image, final_mask), encoded = shrink_to_size(image, final_mask, cfg.size), None
        params["post"] = chain
        params["format"] = "jpeg" if encoded is not None else "png"
        return SynthSample(int(i), image, final_mask, params, encoded, host, manipulated)

    def _host_quality(self, index: int) -> int | None:
        """The IJG quality of a JPEG host's own tables (None: not a JPEG)."""
        try:
            return jpeg_file_quality(read_file(self.hosts[index]))
        except ImlscanError:
            return None

    def _with_history(
        self,
        i: int,
        rng: np.random.Generator,
        hi: int,
        host: np.ndarray,
        manipulated: np.ndarray,
        mask: np.ndarray,
        params: dict,
    ) -> SynthSample:
        """Finish a sample with a compression history: saved once more as a JPEG, at a quality
        above, equal to or below the host's; an authentic sample may instead be the host file
        itself or the host cropped off the 8x8 grid and re-saved."""
        hist = params["history"]
        q_host = hist["host_quality"]
        relation = ("above", "equal", "below")[int(rng.integers(3))]
        if q_host is None:
            relation, q = "host not a JPEG", int(rng.integers(60, 96))
        elif relation == "above":
            q = min(100, q_host + int(rng.integers(5, 21)))
        elif relation == "below":
            q = max(40, q_host - int(rng.integers(5, 26)))
        else:
            q = q_host
        hist.update(relation=relation, quality=q)
        image = manipulated
        if params["kind"] == "negative":
            variant = ("original", "resaved", "cropped")[int(rng.integers(3))]
            original = read_file(self.hosts[hi]) if q_host is not None else None
            unchanged = "published_quality" not in hist and host.shape[:2] == _stored_size(original or b"")
            if variant == "original" and original is not None and unchanged:
                hist.update(variant="original", quality=q_host, relation="saved once")
                params["post"], params["format"] = [], "jpeg"
                return SynthSample(int(i), host, mask, params, original, host, manipulated)
            if variant == "cropped":
                dy, dx = int(rng.integers(1, 8)), int(rng.integers(1, 8))
                image, mask = image[dy:], mask[dy:]
                image, mask = np.ascontiguousarray(image[:, dx:]), np.ascontiguousarray(mask[:, dx:])
                hist["crop"] = [dx, dy]
            hist["variant"] = "cropped" if variant == "cropped" else "resaved"
        image, encoded = jpeg_roundtrip(np.ascontiguousarray(image), q)
        params["post"], params["format"] = [{"op": "jpeg", "quality": q}], "jpeg"
        return SynthSample(int(i), image, mask, params, encoded, host, manipulated)

    def _load_host(
        self, index: int, rng: np.random.Generator, scale: tuple[float, float] | None = None, *, keep_grid: bool = False
    ) -> tuple[int, np.ndarray]:
        """Decode a host; an unreadable photo is replaced by a deterministic other one."""
        for _ in range(10):
            try:
                return index, self.load(index, scale, keep_grid=keep_grid)
            except (OSError, ValueError, Image.DecompressionBombError, cv2.error, ImlscanError):
                index = int(rng.integers(len(self.hosts)))
        raise ImlscanError("cannot decode the host photos", hint="check the photos folder")

    def describe(self) -> dict:
        """What this generator produces, for manifests and weights metadata."""
        return {
            "hosts": getattr(self, "hosts_dir", None),
            "split": getattr(self, "split", None),
            "n_hosts": len(self.hosts),
            "regions": len(self.regions),
            "seed": self.seed,
            "config": self.config.to_dict(),
        }


# -- materializing a fixed set ------------------------------------------------------------

MANIFEST_VERSION = 1
_worker_gen: SynthGenerator | None = None
_worker_out: Path | None = None


def _init_worker(gen: SynthGenerator, out: Path) -> None:
    global _worker_gen, _worker_out
    cv2.setNumThreads(1)
    _worker_gen, _worker_out = gen, out


def _write_one(i: int) -> dict:
    assert _worker_gen is not None and _worker_out is not None
    return write_sample(_worker_gen.sample(i), _worker_out)


def write_sample(s: SynthSample, out: Path) -> dict:
    """Write one sample's image (the final JPEG bytes, or PNG) and mask (PNG, 0/255; none for
    a negative) atomically; returns its manifest record."""
    stem = f"{s.index:06d}"
    if s.encoded is not None:
        image_rel, data = f"images/{stem}.jpg", s.encoded
    else:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ImlscanError(f"cannot encode sample {s.index} as PNG")
        image_rel, data = f"images/{stem}.png", buf.tobytes()
    atomic_write_bytes(out / image_rel, data)
    mask_rel = None
    if s.mask.any():
        ok, buf = cv2.imencode(".png", s.mask.astype(np.uint8) * 255)
        mask_rel = f"masks/{stem}.png"
        atomic_write_bytes(out / mask_rel, buf.tobytes())
    h, w = s.image.shape[:2]
    return {"image": image_rel, "mask": mask_rel, "width": w, "height": h, **s.params}


def write_dataset(
    gen: SynthGenerator,
    out: str | Path,
    n: int,
    *,
    workers: int = 0,
    flush_every: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Materialize samples ``0 .. n-1`` under ``out`` with ``pairs.json`` (the eval format:
    ``[image, mask | "Negative"]``, paths relative to it) and ``manifest.json`` (settings and
    every sample's parameters). Resumable: samples already recorded in the manifest with their
    files present are kept; a rerun with a larger ``n`` extends the set. Settings must match."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"version": MANIFEST_VERSION, **gen.describe(), "hosts_list": [p.name for p in gen.hosts]}
    settings = json.loads(dumps_json(settings))  # tuples as lists: comparable with a reloaded manifest
    records: dict[int, dict] = {}
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ImlscanError(
                f"{manifest_path}: unreadable ({e})", hint="remove the folder or choose another OUT"
            ) from None
        same = {k: v for k, v in old.get("settings", {}).items() if k != "hosts"} == {
            k: v for k, v in settings.items() if k != "hosts"
        }
        if not same:
            raise ImlscanError(
                f"{out} holds a synthetic set made with other settings",
                hint="use the same hosts, regions, split, seed and options to continue it, or choose another OUT",
            )
        for r in old.get("samples", []):
            if (out / r["image"]).is_file() and (r["mask"] is None or (out / r["mask"]).is_file()):
                records[int(r["index"])] = r
    todo = [i for i in range(n) if i not in records]

    def flush() -> None:
        rows = [records[i] for i in sorted(records)]
        atomic_write_text(manifest_path, dumps_json({"settings": settings, "samples": rows}, indent=1) + "\n")
        pairs = [[r["image"], r["mask"] or NEGATIVE] for r in rows if r["index"] < n]
        atomic_write_text(out / "pairs.json", dumps_json(pairs, indent=1) + "\n")

    done = n - len(todo)
    if progress:
        progress(done, n)
    if workers > 0 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # never fork: a parent whose OpenCV/OpenMP thread pools are running can deadlock its children
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(gen, out)) as ex:
            results = ex.map(_write_one, todo, chunksize=4)
            for k, rec in enumerate(results, 1):
                records[rec["index"]] = rec
                if progress:
                    progress(done + k, n)
                if k % flush_every == 0:
                    flush()
    else:
        for k, i in enumerate(todo, 1):
            rec = write_sample(gen.sample(i), out)
            records[i] = rec
            if progress:
                progress(done + k, n)
            if k % flush_every == 0:
                flush()
    flush()
    kinds: dict[str, int] = {}
    for i in range(n):
        kinds[records[i]["kind"]] = kinds.get(records[i]["kind"], 0) + 1
    return {"out": str(out), "samples": n, "generated": len(todo), "kinds": kinds, "pairs": str(out / "pairs.json")}
