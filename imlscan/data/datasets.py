"""Benchmark datasets in the field's two layouts, mask reading, and ``eval --check``.

Layouts:

- a JSON list of ``[image_path, mask_path]`` pairs, mask ``"Negative"`` for an authentic
  image (the IMDL-BenCo convention); relative paths resolve against the JSON file's folder;
- a folder with ``Tp/`` (manipulated images), ``Gt/`` (their masks, matched by file stem with
  or without a ``_gt``/``-gt``/``_mask``/``-mask``/``_groundtruth`` suffix, any image
  extension) and optionally ``Au/`` (authentic images). Folder names are case-insensitive and
  only the files directly inside them count.

Masks: a pixel is manipulated when its value is above half the format's full scale (8-bit:
``> 127``; 16-bit: ``> 32767``; float: ``> 0.5``); colour masks use their brightest channel;
a mask whose values are all 0 or 1 is a label map (1 = manipulated). Images and masks are
read as stored, without applying EXIF orientation: benchmark masks are drawn on the stored
pixel grid (as IMDL-BenCo reads them with PIL).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from imlscan.defaults import DATASET_MAX_PIXELS
from imlscan.errors import ImlscanError, UsageError
from imlscan.fsutil import atomic_path, atomic_write_text, sha256_bytes
from imlscan.inputgate import check_memory, open_file, pil_pixel_limit, read_file

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".jfif")
MASK_SUFFIXES = ("_groundtruth", "-groundtruth", "_mask", "-mask", "_gt", "-gt", ".gt")
NEGATIVE = "Negative"


@dataclass(frozen=True)
class Sample:
    """One image and its mask; ``mask_path`` None means an authentic image."""

    image_path: Path
    mask_path: Path | None

    @property
    def manipulated(self) -> bool:
        return self.mask_path is not None


@dataclass
class Problem:
    """Something wrong with a dataset, found while loading or by ``check_dataset``."""

    kind: str
    path: str
    detail: str
    fixable: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Dataset:
    """A named list of samples plus the problems found while parsing its layout."""

    name: str
    items: list[Sample]
    source: Path
    layout: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_manipulated(self) -> int:
        return sum(s.manipulated for s in self.items)

    @property
    def n_authentic(self) -> int:
        return len(self.items) - self.n_manipulated


# ---------------------------------------------------------------------------------------------
# Loading


def load_dataset(spec: str | os.PathLike) -> Dataset:
    """A dataset from a JSON file or a ``Tp/``+``Gt/`` folder; ``NAME=PATH`` names it."""
    text = str(spec)
    name = None
    if "=" in text and not Path(text).exists():
        name, text = text.split("=", 1)
        if not name:
            raise UsageError(f"empty dataset name in {spec!r}", hint="use NAME=PATH or just PATH")
    path = Path(text).expanduser()
    if not path.exists():
        raise ImlscanError(f"dataset not found: {path}", hint="give a JSON file of [image, mask] pairs or a folder")
    if path.is_dir():
        ds = _load_folder(path.absolute())
    elif path.suffix.lower() == ".json":
        ds = _load_json(path)
    else:
        raise ImlscanError(
            f"not a dataset: {path}",
            hint="give a JSON list of [image, mask|'Negative'] pairs or a folder with Tp/ and Gt/",
        )
    if name:
        ds.name = name
    if not ds.items:
        raise ImlscanError(f"dataset {path} has no images", hint="see 'imlscan eval --help' for the layouts")
    return ds


def _load_json(path: Path) -> Dataset:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ImlscanError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ImlscanError(f"{path} is not valid JSON: line {e.lineno}: {e.msg}") from None
    if not isinstance(data, list):
        raise ImlscanError(f"{path} must hold a JSON list of [image_path, mask_path] pairs")
    base = path.parent.absolute()
    items = []
    for i, entry in enumerate(data):
        if not (isinstance(entry, list | tuple) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
            raise ImlscanError(
                f"{path}: entry {i} is {json.dumps(entry)[:80]}, not an [image_path, mask_path] pair",
                hint=f'use "{NEGATIVE}" as the mask of an authentic image',
            )
        img, mask = entry
        mask_path = None if mask == NEGATIVE else _resolve(base, mask)
        items.append(Sample(_resolve(base, img), mask_path))
    return Dataset(path.stem, items, path, "json")


def _resolve(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


def _subdir(root: Path, name: str) -> Path | None:
    for d in sorted(root.iterdir()):
        if d.is_dir() and d.name.lower() == name.lower():
            return d
    return None


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if not p.is_dir() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS
    )


def mask_keys(stem: str) -> set[str]:
    """The image stems a mask file stem can belong to (its own, and without a known suffix)."""
    s = stem.lower()
    keys = {s}
    for suf in MASK_SUFFIXES:
        if s.endswith(suf) and len(s) > len(suf):
            keys.add(s[: -len(suf)])
    return keys


def _load_folder(root: Path) -> Dataset:
    tp, gt, au = _subdir(root, "Tp"), _subdir(root, "Gt"), _subdir(root, "Au")
    if tp is None or gt is None:
        raise ImlscanError(
            f"{root} has no Tp/ and Gt/ folders",
            hint="a dataset folder holds Tp/ (manipulated images), Gt/ (masks) and optionally Au/",
        )
    by_key: dict[str, list[Path]] = defaultdict(list)
    masks = _images_in(gt)
    for m in masks:
        for k in mask_keys(m.stem):
            by_key[k].append(m)
    items: list[Sample] = []
    problems: list[Problem] = []
    used: set[Path] = set()
    for img in _images_in(tp):
        found = by_key.get(img.stem.lower(), [])
        if len(found) > 1:
            exact = [m for m in found if m.stem.lower() == img.stem.lower()]
            found = exact if len(exact) == 1 else found
        if not found:
            problems.append(Problem("missing_mask", str(img), f"no mask in {gt.name}/ matches stem {img.stem!r}"))
        elif len(found) > 1:
            names = ", ".join(m.name for m in found)
            problems.append(Problem("ambiguous_mask", str(img), f"several masks match: {names}"))
        else:
            items.append(Sample(img, found[0]))
            used.add(found[0])
    for m in masks:
        if m not in used:
            problems.append(Problem("orphan_mask", str(m), f"no image in {tp.name}/ for this mask"))
    if au is not None:
        items.extend(Sample(p, None) for p in _images_in(au))
    return Dataset(root.name, items, root, "folder", problems)


# ---------------------------------------------------------------------------------------------
# Reading


@contextlib.contextmanager
def _open_image(
    path: str | os.PathLike, what: str = "image", *, data: bytes | None = None, header_only: bool = False
) -> Iterator[Image.Image]:
    """A dataset file opened by Pillow: read through the input gate (a regular file of bounded
    size), under the explicit dataset pixel limit (Pillow's guard stays on for the rest of the
    process) and, unless only the header is read, after the memory check.

    Arguments:
        path: the file.
        what: "image" or "mask", for the messages.
        data: its bytes, when the caller has already read them through the gate.
        header_only: read just the header (for its size), not the whole file.

    Raises:
        ImlscanError: unreadable, not an image, too large, or corrupt (also while the block decodes).
    """
    hint = "run 'imlscan eval --check DATASET'"
    try:
        source = open_file(path) if header_only else io.BytesIO(read_file(path) if data is None else data)
    except ImlscanError as e:
        raise ImlscanError(f"{what} {e.message}", hint=e.hint or hint) from None
    with source, pil_pixel_limit(DATASET_MAX_PIXELS):
        try:
            with Image.open(source) as im:
                w, h = im.size
                if w * h > DATASET_MAX_PIXELS:
                    raise ImlscanError(
                        f"{what} {path}: {w}x{h} pixels, above the {DATASET_MAX_PIXELS:,}-pixel limit for datasets"
                    )
                if not header_only:
                    check_memory(im.size, f"{what} {path}")
                yield im
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImlscanError(f"cannot decode {what} {path}: {e}", hint=hint) from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image as ``H x W x 3`` uint8 RGB, as stored (no EXIF rotation: masks follow the stored grid)."""
    with _open_image(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float64)
            a = np.clip(a / (65535.0 if a.max() > 255 else 255.0) * 255.0, 0, 255).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def mask_values(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """The mask's raw values as a 2-D array and its format's full scale (1, 255, 65535...)."""
    with _open_image(path, "mask") as im:
        mode = im.mode
        if mode == "1":
            return np.asarray(im, dtype=np.uint8), 1.0
        if mode == "F":
            return np.asarray(im, dtype=np.float32), 1.0
        if mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im).astype(np.int64), 65535.0
        if mode == "I":
            a = np.asarray(im).astype(np.int64)
            return a, (65535.0 if a.max(initial=0) > 255 else 255.0)
        if mode == "L":
            return np.asarray(im), 255.0
        if mode == "LA":
            return np.asarray(im)[..., 0], 255.0
        return np.asarray(im.convert("RGB")).max(axis=2), 255.0


def binarize(values: np.ndarray, full_scale: float) -> np.ndarray:
    """True where manipulated: above half the full scale, or 1 in a 0/1 label map."""
    if full_scale > 1 and values.size and values.max() <= 1:
        return values > 0
    return values > full_scale / 2.0


def is_binary(values: np.ndarray, full_scale: float) -> bool:
    """Whether the mask holds only 0 and one "on" value (full scale, or 1 for a label map)."""
    u = np.unique(values)
    return bool(np.isin(u, (0, full_scale)).all() or np.isin(u, (0, 1)).all())


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask as a bool ``H x W`` array (see the module docstring for the binarization rule)."""
    return binarize(*mask_values(path))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels (ImlscanError if unreadable)."""
    with _open_image(path, header_only=True) as im:
        return im.size


# ---------------------------------------------------------------------------------------------
# Checking and fixing


@dataclass
class CheckResult:
    dataset: Dataset
    problems: list[Problem]
    fixes: list[dict] = field(default_factory=list)
    fixed_dataset: Path | None = None

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset.name,
            "source": str(self.dataset.source),
            "n_images": len(self.dataset.items),
            "n_manipulated": self.dataset.n_manipulated,
            "n_authentic": self.dataset.n_authentic,
            "n_problems": len(self.problems),
            "problems": [p.to_dict() for p in self.problems],
            "fixes": self.fixes,
            "fixed_dataset": str(self.fixed_dataset) if self.fixed_dataset else None,
        }


def _check_one(sample: Sample) -> tuple[list[Problem], str | None]:
    """Problems of one sample and the image's content hash (None when unreadable)."""
    problems: list[Problem] = []
    img, digest, size = str(sample.image_path), None, None
    if not sample.image_path.exists():
        problems.append(Problem("missing", img, "image file does not exist"))
    else:
        try:
            data = read_file(sample.image_path)
            with _open_image(sample.image_path, data=data) as im:
                size = im.size
                im.load()
            digest = sha256_bytes(data)
        except ImlscanError as e:
            problems.append(Problem("unreadable", img, f"image cannot be decoded: {e.message}"))
            size = None
    if sample.mask_path is None:
        return problems, digest
    mpath = str(sample.mask_path)
    if not sample.mask_path.exists():
        problems.append(Problem("missing", mpath, "mask file does not exist"))
        return problems, digest
    try:
        values, scale = mask_values(sample.mask_path)
    except ImlscanError as e:
        problems.append(Problem("unreadable", mpath, e.message))
        return problems, digest
    if size is not None and (values.shape[1], values.shape[0]) != size:
        w, h = size
        problems.append(
            Problem("size_mismatch", mpath, f"mask {values.shape[1]}x{values.shape[0]} vs image {w}x{h}", True)
        )
    if not is_binary(values, scale):
        n = int(np.unique(values).size)
        problems.append(Problem("non_binary", mpath, f"{n} distinct values; binarized at > {scale / 2:g}", True))
    if not binarize(values, scale).any():
        problems.append(Problem("empty_mask", mpath, "mask of a manipulated image has no manipulated pixel"))
    return problems, digest


def check_dataset(
    dataset: Dataset,
    *,
    fix_dir: str | os.PathLike | None = None,
    workers: int = 4,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> CheckResult:
    """Find missing/unreadable files, image/mask size mismatches, non-binary and empty masks and
    duplicates (same path twice, or same image content).

    With ``fix_dir`` the fixable problems are fixed into that NEW folder (never in place):
    mismatched masks are nearest-resized to the image size, masks are binarized to 0/255 PNGs,
    and ``fix_dir/dataset.json`` lists the dataset with the fixed masks. Each fix is logged
    through ``log`` and recorded in the result and ``fix_dir/fixes.json``.
    """
    problems = list(dataset.problems)
    seen: dict[Path, int] = {}
    for i, s in enumerate(dataset.items):
        key = s.image_path.resolve()
        if key in seen:
            problems.append(Problem("duplicate", str(s.image_path), f"same path as item {seen[key]} (item {i})"))
        else:
            seen[key] = i
    per_item: list[list[Problem]] = []
    digests: list[str | None] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for n, (probs, digest) in enumerate(pool.map(_check_one, dataset.items), 1):
            per_item.append(probs)
            digests.append(digest)
            if progress:
                progress(n)
    for probs in per_item:
        problems.extend(probs)
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(digests):
        if d is not None:
            by_hash[d].append(i)
    for idx in by_hash.values():
        paths = {dataset.items[i].image_path.resolve() for i in idx}
        if len(paths) > 1:
            first = dataset.items[idx[0]].image_path
            for i in idx[1:]:
                if dataset.items[i].image_path.resolve() != first.resolve():
                    problems.append(
                        Problem("duplicate", str(dataset.items[i].image_path), f"same content as {first} (item {i})")
                    )
    result = CheckResult(dataset, problems)
    if fix_dir is not None:
        _apply_fixes(result, per_item, Path(fix_dir), log or (lambda _m: None))
    return result


def _apply_fixes(result: CheckResult, per_item: list[list[Problem]], out: Path, log: Callable[[str], None]) -> None:
    ds = result.dataset
    source = ds.source if ds.source.is_dir() else ds.source.parent
    if out.resolve() == source.resolve():
        raise UsageError(f"refusing to write fixes into the dataset's own folder {out}", hint="choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} already exists and is not empty", hint="fixes go to a new folder: choose another")
    pairs: list[list[str]] = []
    fixed_paths: set[str] = set()
    for i, (sample, probs) in enumerate(zip(ds.items, per_item)):
        mask_path = sample.mask_path
        kinds = {p.kind for p in probs if p.fixable and p.path == str(mask_path)}
        broken = any(p.kind in ("missing", "unreadable") for p in probs)
        if kinds and not broken and mask_path is not None:
            values, scale = mask_values(mask_path)
            mask = binarize(values, scale).astype(np.uint8) * 255
            actions = []
            if "size_mismatch" in kinds:
                w, h = image_size(sample.image_path)
                actions.append(f"nearest-resized {mask.shape[1]}x{mask.shape[0]} -> {w}x{h}")
                mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
            if "non_binary" in kinds:
                actions.append(f"binarized at > {scale / 2:g}")
            dest = out / "masks" / f"{i:06d}_{mask_path.stem}.png"
            with atomic_path(dest) as tmp:
                Image.fromarray(mask).save(tmp, format="PNG")
            fix = {"item": i, "mask": str(mask_path), "fixed_mask": str(dest), "actions": actions}
            result.fixes.append(fix)
            fixed_paths.add(str(mask_path))
            log(f"fixed {mask_path}: {'; '.join(actions)} -> {dest}")
            mask_path = dest
        pairs.append(
            [str(sample.image_path.resolve()), NEGATIVE if mask_path is None else str(Path(mask_path).resolve())]
        )
    result.problems = [p for p in result.problems if not (p.fixable and p.path in fixed_paths)]
    result.fixed_dataset = out / "dataset.json"
    atomic_write_text(out / "fixes.json", json.dumps(result.fixes, indent=2) + "\n")
    atomic_write_text(result.fixed_dataset, json.dumps(pairs, indent=1) + "\n")
    log(f"wrote {len(result.fixes)} fixed mask(s) and {result.fixed_dataset}")


def iter_pairs(dataset: Dataset) -> Iterable[tuple[str, str]]:
    """(image, mask or ``Negative``) strings of a dataset, for reports."""
    for s in dataset.items:
        yield str(s.image_path), NEGATIVE if s.mask_path is None else str(s.mask_path)
