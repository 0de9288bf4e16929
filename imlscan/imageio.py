"""Reading photos into RGB pixels exactly once and honestly, and writing maps back as PNG.

A forensic report must say what was analysed: which bytes (their sha256), which frame, which
orientation and which colour conversion. ``load_image`` therefore hashes the very bytes it
decodes and records every conversion as a plain-language note. Nothing here imports torch, so
batch decoding workers start fast.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from imlscan.defaults import DEFAULT_MAX_PIXELS
from imlscan.errors import ImlscanError, UsageError
from imlscan.fsutil import atomic_write_bytes, sha256_bytes
from imlscan.inputgate import NO_PIXEL_LIMIT, check_memory, pil_pixel_limit, read_file
from imlscan.safetext import shown

# Formats PIL may try. A whitelist keeps odd plugins (EPS runs Ghostscript) out of reach of
# untrusted files; MPO is how PIL names the multi-picture JPEGs many phones write.
PIL_FORMATS = ("JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP", "DIB", "GIF", "AVIF", "HEIF", "PPM")
IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .tif .tiff .webp .bmp .dib .gif .heic .heif .hif .avif .ppm .pgm .pbm .pnm".split()
)
SUPPORTED_DESCRIPTION = "JPEG, PNG, TIFF, WebP, BMP, GIF, HEIC/AVIF"
HEIC_HINT = "install the optional extra: pip install 'imlscan[heic]' (pillow-heif)"
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_ORIENTATION_FIX = {
    1: "none",
    2: "mirrored left-right",
    3: "rotated 180 degrees",
    4: "mirrored top-bottom",
    5: "transposed (mirrored and rotated 90 degrees)",
    6: "rotated 90 degrees clockwise",
    7: "transversed (mirrored and rotated 90 degrees)",
    8: "rotated 90 degrees counter-clockwise",
}
# What Pillow's format plugins raise on damaged data: besides OSError and friends, struct.error
# and TypeError from header fields that are short or missing, IndexError from short tables.
_CORRUPT = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
# At most this many distinct decoder warnings become notes (a broken file can warn on every tag).
MAX_WARNING_NOTES = 3


@dataclass
class DecodedImage:
    """The RGB pixels that were analysed and how they were obtained from the input."""

    rgb: np.ndarray
    path: str | None = None
    sha256: str | None = None
    file_size: int | None = None
    format: str | None = None
    mode: str | None = None
    stored_size: tuple[int, int] | None = None
    orientation: int | None = None
    orientation_applied: str = "none"
    frames: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def to_dict(self) -> dict[str, Any]:
        """The ``input`` section of a report (no pixels)."""
        sw, sh = self.stored_size or (self.width, self.height)
        return {
            "path": self.path,
            "sha256": self.sha256,
            "file_size": self.file_size,
            "format": self.format,
            "mode": self.mode,
            "width": self.width,
            "height": self.height,
            "stored_width": sw,
            "stored_height": sh,
            "orientation": {"exif": self.orientation, "applied": self.orientation_applied},
            "frames": self.frames,
            "notes": list(self.notes),
        }


def load_image(source: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a path, PIL image or ``H x W x 3`` uint8 RGB array into a :class:`DecodedImage`.

    ``max_pixels`` (``None`` or 0: no limit) refuses decompression bombs before decoding.
    Every user-caused problem raises :class:`ImlscanError` with a one-line message.
    """
    if isinstance(source, np.ndarray):
        return from_array(source)
    if isinstance(source, Image.Image):
        return from_pil(source, max_pixels=max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return decode_bytes(read_file(path), name=str(path), max_pixels=max_pixels)
    raise UsageError(f"cannot scan a {type(source).__name__}: give a path, a PIL image or an H x W x 3 uint8 array")


def from_array(rgb: np.ndarray) -> DecodedImage:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        desc = f"{getattr(rgb, 'shape', '?')} {getattr(rgb, 'dtype', '')}"
        raise UsageError(f"expected an H x W x 3 uint8 RGB array, got {desc}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise UsageError("the image array is empty")
    return DecodedImage(rgb=np.ascontiguousarray(rgb), mode="RGB", notes=["array input: channels taken as RGB"])


def from_pil(img: Image.Image, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode an already opened PIL image (no file hash: the pixels may differ from any file)."""
    name = str(getattr(img, "filename", "") or "image")
    _check_pixels(img.size, max_pixels, name)
    check_memory(img.size, name)
    decoded = _decode_pil(img, name=name)
    decoded.path = name if name != "image" else None
    decoded.notes.append("PIL image input: no file hash recorded")
    return decoded


def decode_bytes(data: bytes, *, name: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode an encoded image held in memory; ``name`` prefixes every error message.

    The header is read first: an image above ``max_pixels`` (``None`` or 0: no limit) or needing
    more memory than is available (``inputgate.check_memory``) is refused before any pixel is
    decoded. Pillow's own guard stays on at the same limit for the frames and tiles it meets while
    decoding. Pillow's warnings (a corrupt EXIF block, a truncated tag) become notes, never output.
    """
    if len(data) == 0:
        raise ImlscanError(f"{name}: empty file (0 bytes)")
    limit = int(max_pixels) if max_pixels else None
    try:
        with pil_pixel_limit(limit or NO_PIXEL_LIMIT), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            img = _open(data, name)
            _check_pixels(img.size, limit, name)
            check_memory(img.size, name)
            decoded = _decode_pil(img, name=name)
    except Image.DecompressionBombError as e:
        raise _bomb_error(name, None, limit, str(e)) from None
    decoded.notes.extend(_warning_notes(caught))
    decoded.path = name
    decoded.sha256 = sha256_bytes(data)
    decoded.file_size = len(data)
    return decoded


def _warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    """The decoder's warnings as notes, each once (the bomb warning is ours to decide, not a note)."""
    texts: list[str] = []
    for w in caught:
        text = shown(" ".join(str(w.message).split()))[:200]
        if not issubclass(w.category, Image.DecompressionBombWarning) and text not in texts:
            texts.append(text)
    return [f"the decoder warned and went on: {t}" for t in texts[:MAX_WARNING_NOTES]]


def _open(data: bytes, name: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=_formats())
    except UnidentifiedImageError:
        if _looks_like_heif(data):
            if _register_heif():
                try:
                    return Image.open(io.BytesIO(data), formats=_formats())
                except UnidentifiedImageError:
                    pass
            else:
                raise ImlscanError(
                    f"{name}: HEIC/HEIF/AVIF image, but no decoder is installed", hint=HEIC_HINT
                ) from None
        raise ImlscanError(
            f"{name}: not an image, or not a supported format ({SUPPORTED_DESCRIPTION})",
            hint="check the file opens in an image viewer; it may be another kind of file renamed",
        ) from None
    except Image.DecompressionBombError:
        raise
    except _CORRUPT as e:
        raise ImlscanError(f"{name}: corrupt image header ({_short(e)})") from None


def _formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in PIL_FORMATS if f in Image.OPEN)


def _looks_like_heif(data: bytes) -> bool:
    return len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def _register_heif() -> bool:
    try:
        import pillow_heif  # type: ignore[import-not-found]
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImlscanError(f"{name}: the image has no pixels ({w}x{h})")
    if max_pixels and w * h > max_pixels:
        raise _bomb_error(name, (w, h), max_pixels)


def _bomb_error(name: str, size: tuple[int, int] | None, limit: int | None, detail: str = "") -> ImlscanError:
    if size:
        what = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
    else:  # Pillow's guard tripped first (above twice the limit, or a frame larger than the header)
        count = re.search(r"\((\d+) pixels\)", detail)
        what = f"{int(count.group(1)):,} pixels" if count else _short(detail)
    return ImlscanError(
        f"{name}: refused as a possible decompression bomb ({what}, limit {limit:,} pixels)"
        if limit
        else f"{name}: refused as a possible decompression bomb ({what})",
        hint="if you trust this file, raise the limit: --max-pixels N (Python: max_pixels=N)",
    )


def _decode_pil(img: Image.Image, *, name: str) -> DecodedImage:
    fmt = img.format
    notes: list[str] = []
    frames = _count_frames(img, name)
    if frames is None:
        frames = 1
        notes.append(f"{fmt or 'image'} damaged after its first frame: the first frame was analysed")
    elif fmt == "MPO" and frames > 1:
        notes.append(f"multi-picture JPEG (MPO) with {frames} images: the primary image was analysed")
    elif frames > 1:
        kind = f"animated {fmt}" if fmt in ("GIF", "PNG", "WEBP") else (fmt or "image")
        notes.append(f"{kind} with {frames} frames: only the first frame was analysed")
    elif fmt == "GIF":
        notes.append("GIF: its first (only) frame was analysed")
    if any(";16" in str(getattr(t, "args", "")) for t in (getattr(img, "tile", None) or [])) and img.mode in (
        "RGB",
        "RGBA",
    ):
        notes.append("16 bits per channel reduced to 8 bits")
    orientation = _exif_orientation(img)
    try:
        img.load()
        # Some loaders (TIFF) already turn the pixels and drop the tag: never turn them twice.
        done_by_pil = orientation not in (None, 1) and _exif_orientation(img) != orientation
        rgb = _to_rgb(img, notes)
    except Image.DecompressionBombError:
        raise
    except ImlscanError:
        raise
    except _CORRUPT as e:
        raise ImlscanError(f"{name}: truncated or corrupt image data ({_short(e)})") from None
    applied = "none"
    if orientation not in (None, 1):
        if orientation in _ORIENTATION_FIX:
            if not done_by_pil:
                rgb = apply_orientation(rgb, orientation)
            applied = _ORIENTATION_FIX[orientation]
            notes.append(f"EXIF orientation {orientation} applied: {applied}")
        else:
            notes.append(f"invalid EXIF orientation {orientation} ignored")
    h, w = rgb.shape[:2]
    stored_size = (h, w) if applied != "none" and orientation in (5, 6, 7, 8) else (w, h)
    return DecodedImage(
        rgb=np.ascontiguousarray(rgb),
        format=fmt,
        mode=img.mode,
        stored_size=stored_size,
        orientation=orientation,
        orientation_applied=applied,
        frames=frames,
        notes=notes,
    )


def _count_frames(img: Image.Image, name: str) -> int | None:
    """The number of frames (Pillow seeks through them all), None when a later frame is damaged."""
    try:
        return int(getattr(img, "n_frames", 1) or 1)
    except _CORRUPT:
        pass
    try:
        img.seek(0)  # counting stopped on the damaged frame: back to the first
    except _CORRUPT as e:
        raise ImlscanError(f"{name}: truncated or corrupt image data ({_short(e)})") from None
    return None


def _exif_orientation(img: Image.Image) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop the analysis
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels the way the camera meant them to be shown (EXIF tag 0x0112)."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1, :]
    if orientation == 5:
        return np.swapaxes(a, 0, 1)
    if orientation == 6:
        return np.swapaxes(a, 0, 1)[:, ::-1]
    if orientation == 7:
        return np.swapaxes(a, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.swapaxes(a, 0, 1)[::-1, :]
    return a


def _to_rgb(img: Image.Image, notes: list[str]) -> np.ndarray:
    """Any PIL colour mode to ``H x W x 3`` uint8, noting every lossy or visible step."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        gray = ((a * 255 + 32767) // 65535).astype(np.uint8)
        notes.append("16-bit grayscale reduced to 8 bits and replicated to RGB")
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        gray = np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
        notes.append("32-bit float image converted to 8-bit grayscale")
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _composite_on_white(np.asarray(img.convert("RGBA")), notes)
    if mode == "RGB":
        return np.asarray(img)
    if mode in ("L", "1"):
        notes.append("grayscale image replicated to RGB")
        return np.repeat(np.asarray(img.convert("L"))[:, :, None], 3, axis=2)
    if mode == "P":
        notes.append("palette image converted to RGB")
    elif mode == "CMYK":
        notes.append("CMYK converted to RGB (without colour management)")
    elif mode not in ("RGBX", "YCbCr"):
        notes.append(f"{mode} converted to RGB")
    try:
        return np.asarray(img.convert("RGB"))
    except ValueError:
        raise ImlscanError(f"unsupported colour mode {mode!r}") from None


def _composite_on_white(rgba: np.ndarray, notes: list[str]) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    transparent = float((alpha < 255).mean())
    if transparent == 0.0:
        notes.append("alpha channel present but fully opaque")
        return np.ascontiguousarray(rgba[:, :, :3])
    notes.append(f"transparency composited on a white background ({100 * transparent:.1f}% of pixels not opaque)")
    rgb = rgba[:, :, :3].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _short(e: BaseException | str) -> str:
    s = str(e).strip()
    s = s.splitlines()[0] if s else (type(e).__name__ if isinstance(e, BaseException) else "")
    return s[:200]


# --- writing maps and pictures ---------------------------------------------------------------------


def encode_png(a: np.ndarray) -> bytes:
    """PNG bytes of an ``H x W`` (uint8/uint16) or ``H x W x 3`` uint8 RGB array."""
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a))
    if not ok:
        raise ImlscanError("could not encode PNG")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 88) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ImlscanError("could not encode JPEG")
    return buf.tobytes()


def write_png(path: str | os.PathLike, a: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(a))


def prob_to_uint16(prob: np.ndarray) -> np.ndarray:
    """The 16-bit code of a probability map: ``round(p * 65535)``."""
    return np.round(np.clip(prob, 0.0, 1.0).astype(np.float64) * 65535.0).astype(np.uint16)


def write_prob_png(path: str | os.PathLike, prob: np.ndarray) -> None:
    """Probability map as 16-bit grayscale PNG (value = round(p * 65535)), exact to 1/65535."""
    write_png(path, prob_to_uint16(prob))


def read_prob_png(path: str | os.PathLike) -> np.ndarray:
    """Read back a map written by :func:`write_prob_png` as float32 in [0, 1]."""
    a = _read_png(path)
    if a.dtype != np.uint16 or a.ndim != 2:
        raise ImlscanError(f"{path}: not an imlscan probability PNG (expected 16-bit grayscale)")
    return (a.astype(np.float32) / np.float32(65535.0)).astype(np.float32)


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Binary mask as 8-bit grayscale PNG: 255 = flagged, 0 = not flagged."""
    write_png(path, np.where(mask, 255, 0).astype(np.uint8))


def read_mask_png(path: str | os.PathLike) -> np.ndarray:
    a = _read_png(path)
    if a.ndim != 2:
        raise ImlscanError(f"{path}: not a mask PNG (expected grayscale)")
    return a > 127


def _read_png(path: str | os.PathLike) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    a = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if a is None:
        raise ImlscanError(f"{path}: cannot read PNG")
    return a
