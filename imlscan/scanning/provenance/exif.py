"""EXIF, read with Pillow's parser: camera, lens, times, software, orientation, GPS (coordinates
only on request), serial numbers (whether present, never their values), and the embedded
thumbnail, which ``compare_thumbnail`` holds up against the image.

Why the thumbnail matters: a camera writes a small preview of the picture into IFD1 when it
takes it. Many editors rewrite the picture but carry the old EXIF block over untouched, so a
thumbnail that shows another picture, another framing or another orientation is a classic sign
that the pixels changed after capture (or that the EXIF block came from another file).
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from imlscan.scanning.provenance.model import Problems, exif_text, finite, prune

MAX_THUMBNAIL_BYTES = 1 << 20
MAX_THUMBNAIL_SIDE = 1024
# Comparison thresholds (docs/provenance.md, "The EXIF thumbnail"): measured on thumbnails made
# from the very image by other resamplers, JPEG qualities, sharpening and tone curves (a camera's
# preview is made by its own pipeline), against thumbnails of other photos and of local edits.
ASPECT_TOLERANCE = 0.04  # |log(thumbnail aspect / image aspect)| above this: another framing
CORRELATION_SAME = 0.85  # Pearson r of the two grey images at thumbnail size below this: another picture
LOCAL_DIFFERENCE = 0.6  # mean |z-score difference| in one cell of a 4 x 4 grid above this: an area differs
GRID = 4
FLAT_STD = 2.0  # grey levels: below this a picture is flat and only its mean brightness is compared

IFD0 = {
    0x010F: "make",
    0x0110: "model",
    0x0131: "software",
    0x0132: "modify_date",
    0x0112: "orientation",
    0x013B: "artist",
    0x8298: "copyright",
    0x013C: "host_computer",
    0x010E: "image_description",
}
EXIF_IFD = {
    0x9003: "date_time_original",
    0x9004: "create_date",
    0x9011: "offset_time_original",
    0x9012: "offset_time_digitized",
    0x9010: "offset_time",
    0x9291: "subsec_time_original",
    0xA433: "lens_make",
    0xA434: "lens_model",
    0xA430: "camera_owner",
    0xA420: "image_unique_id",
    0x9286: "user_comment",
}
EXPOSURE = {0x829A: "exposure_time_s", 0x829D: "f_number", 0x8827: "iso", 0x920A: "focal_length_mm"}
SERIALS = {0xA431: "body", 0xA435: "lens"}


def load_exif(tiff: bytes, problems: Problems | None, source: str = "EXIF") -> tuple[dict[int, Any], Any]:
    """Pillow's reading of a TIFF-structured block (EXIF, MPF): IFD0's tags and the Exif object,
    with Pillow's own warnings (corrupt EXIF) turned into "unreadable" findings."""
    exif = Image.Exif()
    tags: dict[int, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            exif.load(tiff)
            tags = dict(exif)
        except Exception as e:  # noqa: BLE001 - hostile bytes: whatever Pillow raises is a finding
            if problems is not None:
                problems.add(source, e)
            return {}, None
    if problems is not None:
        for w in caught[:3]:
            problems.add(source, str(w.message))
    return tags, exif


def _ifd(exif: Any, tag: int, problems: Problems, source: str) -> dict[int, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ifd = dict(exif.get_ifd(tag) or {})
        except Exception as e:  # noqa: BLE001
            problems.add(source, e)
            return {}
    for w in caught[:3]:
        problems.add(source, str(w.message))
    return ifd


def read_exif(
    tiff: bytes | None, problems: Problems, *, gps: bool = False
) -> tuple[dict[str, Any] | None, bytes | None]:
    """The EXIF section of the report and the thumbnail's bytes (IFD1), from the TIFF structure."""
    if tiff and tiff.startswith(b"Exif\x00\x00"):
        tiff = tiff[6:]
    if not tiff:
        return None, None
    ifd0, exif = load_exif(tiff, problems)
    if exif is None:
        return {"readable": False}, None
    sub = _ifd(exif, ExifTags.IFD.Exif, problems, "EXIF SubIFD")
    gps_ifd = _ifd(exif, ExifTags.IFD.GPSInfo, problems, "EXIF GPS")
    ifd1 = _ifd(exif, ExifTags.IFD.IFD1, problems, "EXIF IFD1")
    out: dict[str, Any] = {name: _value(ifd0.get(tag)) for tag, name in IFD0.items()}
    out.update({name: _value(sub.get(tag)) for tag, name in EXIF_IFD.items()})
    if out.get("user_comment"):
        out["user_comment"] = _user_comment(sub.get(0x9286))
    if out.get("orientation") is not None:
        out["orientation"] = _int(ifd0.get(0x0112))
    out["exposure"] = prune({name: _number(sub.get(tag)) for tag, name in EXPOSURE.items()}) or None
    w, h = _int(sub.get(0xA002)), _int(sub.get(0xA003))
    out["pixel_dimensions"] = [w, h] if w and h else None
    maker = sub.get(0x927C)
    out["maker_note_bytes"] = len(maker) if isinstance(maker, (bytes, bytearray)) else None
    out["serial_numbers"] = {k: sub.get(tag) not in (None, "", b"") for tag, k in SERIALS.items()}
    out["gps"] = _gps(gps_ifd, gps, problems)
    out["tags"] = len(ifd0) + len(sub) + len(gps_ifd)
    thumb = None
    offset, length = _int(ifd1.get(0x0201)), _int(ifd1.get(0x0202))
    if offset is not None and length:
        if offset < 0 or length > MAX_THUMBNAIL_BYTES or offset + length > len(tiff):
            problems.add("EXIF thumbnail", "its offset and length point past the end of the EXIF block")
        else:
            thumb = bytes(tiff[offset : offset + length])
    elif ifd1:
        out["thumbnail_ifd"] = "IFD1 present without a JPEG thumbnail"
    return prune(out) | {"serial_numbers": out["serial_numbers"]}, thumb


def _value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        return exif_text(bytes(v).rstrip(b"\x00"))
    if isinstance(v, str):
        return exif_text(v)
    if isinstance(v, tuple):
        return _value(v[0]) if v else None
    return _number(v)


def _number(v: Any) -> float | int | None:
    if isinstance(v, tuple):
        v = v[0] if v else None
    try:
        x = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(x):
        return None
    return int(x) if x.is_integer() and abs(x) < 2**53 else finite(x, 6)


def _int(v: Any) -> int | None:
    x = _number(v)
    return int(x) if isinstance(x, (int, float)) else None


def _user_comment(v: Any) -> str | None:
    """UserComment starts with an 8-byte character code (ASCII, UNICODE, JIS or undefined)."""
    if isinstance(v, str):
        return exif_text(v)
    if not isinstance(v, (bytes, bytearray)) or len(v) <= 8:
        return None
    code, body = bytes(v[:8]), bytes(v[8:])
    if code.startswith(b"UNICODE"):
        text = body.decode("utf-16-be" if not body[:2] == b"\xff\xfe" else "utf-16", "replace")
        return exif_text(text)
    return exif_text(body.strip(b"\x00 "))


def _gps(ifd: dict[int, Any], show: bool, problems: Problems) -> dict[str, Any] | None:
    if not ifd:
        return None
    present = 2 in ifd and 4 in ifd
    out: dict[str, Any] = {"present": present}
    if not present:
        out["note"] = "GPS block without coordinates"
        return out
    if not show:
        out["coordinates"] = "withheld (use --gps / gps=True): they can endanger a source"
        return out
    try:
        lat = _dms(ifd[2]) * (-1 if str(ifd.get(1, "N")).upper().startswith("S") else 1)
        lon = _dms(ifd[4]) * (-1 if str(ifd.get(3, "E")).upper().startswith("W") else 1)
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        problems.add("EXIF GPS", "coordinates are not three numbers each")
        return out
    out["latitude"], out["longitude"] = finite(lat, 6), finite(lon, 6)
    alt = _number(ifd.get(6))
    if alt is not None:
        out["altitude_m"] = -alt if ifd.get(5) in (1, b"\x01") else alt
    if ifd.get(29):
        out["date"] = exif_text(ifd.get(29), 40)
    return out


def _dms(v: Any) -> float:
    d, m, s = (float(x) for x in tuple(v)[:3])
    return d + m / 60 + s / 3600


# --- the thumbnail --------------------------------------------------------------------------------


def decode_thumbnail(raw: bytes, orientation: int | None, problems: Problems) -> np.ndarray | None:
    """The thumbnail's RGB pixels, turned by the image's EXIF orientation (the camera stores the
    preview the way it stores the picture); None when it is not a decodable JPEG."""
    from imlscan.imageio import apply_orientation

    if not raw.startswith(b"\xff\xd8"):
        problems.add("EXIF thumbnail", "not a JPEG (no JPEG start marker)")
        return None
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            img = Image.open(io.BytesIO(raw), formats=("JPEG",))
            if max(img.size) > MAX_THUMBNAIL_SIDE or min(img.size) < 1:
                problems.add("EXIF thumbnail", f"implausible size {img.size[0]}x{img.size[1]}")
                return None
            rgb = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            problems.add("EXIF thumbnail", e)
            return None
    return np.ascontiguousarray(apply_orientation(rgb, orientation or 1))


def compare_thumbnail(thumb: np.ndarray, image: np.ndarray | None) -> dict[str, Any]:
    """How the thumbnail relates to the image: size and aspect, orientation, and content
    (correlation of both in grey at the thumbnail's size, and the most different cell of a grid)."""
    th, tw = thumb.shape[:2]
    out: dict[str, Any] = {"width": tw, "height": th}
    if image is None:
        out["compared"] = False
        return out
    ih, iw = image.shape[:2]
    grey = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey, bars = _strip_bars(grey, iw / ih)
    if bars:
        out["black_bars_removed"] = bars
    h, w = grey.shape
    a_thumb, a_image = w / h, iw / ih
    out["aspect_thumbnail"] = round(a_thumb, 4)
    out["aspect_image"] = round(a_image, 4)
    out["aspect_matches"] = abs(math.log(a_thumb / a_image)) <= ASPECT_TOLERANCE
    rotated = abs(math.log(a_thumb * a_image)) <= ASPECT_TOLERANCE and abs(math.log(a_image)) > 2 * ASPECT_TOLERANCE
    out["orientation_matches"] = not rotated
    small = _shrink(image, w, h)
    out["compared"] = True
    if min(float(grey.std()), float(small.std())) < FLAT_STD:  # a flat picture has no content to correlate
        out["correlation"] = None
        both_flat = max(float(grey.std()), float(small.std())) < FLAT_STD
        out["content_matches"] = both_flat and abs(float(grey.mean()) - float(small.mean())) < 12
        cell = None
    else:
        r, cell, where = _similarity(grey, small)
        out["correlation"] = r
        out["max_cell_difference"] = cell
        out["most_different_cell"] = where
        out["content_matches"] = r is not None and r >= CORRELATION_SAME
    out["area_differs"] = bool(out["content_matches"] and cell is not None and cell > LOCAL_DIFFERENCE)
    out["mismatch"] = not (out["aspect_matches"] and out["orientation_matches"] and out["content_matches"]) or bool(
        out["area_differs"]
    )
    return out


def _strip_bars(grey: np.ndarray, image_aspect: float) -> tuple[np.ndarray, str | None]:
    """Remove black bands a camera adds to fit a 3:2 or 16:9 picture into a 4:3 (160 x 120)
    thumbnail, when removing them brings the thumbnail's aspect closer to the image's."""
    dark_rows = (grey.mean(axis=1) < 24) & (grey.std(axis=1) < 8)
    dark_cols = (grey.mean(axis=0) < 24) & (grey.std(axis=0) < 8)

    def span(dark: np.ndarray) -> tuple[int, int]:
        n = len(dark)
        a = 0
        while a < n and dark[a]:
            a += 1
        b = n
        while b > a and dark[b - 1]:
            b -= 1
        return a, b

    r0, r1 = span(dark_rows)
    c0, c1 = span(dark_cols)
    if r1 - r0 < 4 or c1 - c0 < 4 or (r0, r1, c0, c1) == (0, grey.shape[0], 0, grey.shape[1]):
        return grey, None
    before = abs(math.log(grey.shape[1] / grey.shape[0] / image_aspect))
    after = abs(math.log((c1 - c0) / (r1 - r0) / image_aspect))
    if after >= before:
        return grey, None
    return grey[r0:r1, c0:c1], f"rows {r0}:{r1}, columns {c0}:{c1} kept"


def _shrink(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """The image in grey at w x h (area averaging; a stride first keeps large photos fast)."""
    ih, iw = image.shape[:2]
    step = max(1, min(iw // (4 * w), ih // (4 * h)))
    if step > 1:
        image = image[::step, ::step]
    small = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _similarity(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None, list[int] | None]:
    """Pearson r of two grey images and the largest mean absolute difference of their z-scores
    over a 4 x 4 grid of cells, both after a light blur (sigma 1 px), so that resampling, aliasing
    and JPEG noise weigh little against a change of content."""
    sa, sb = float(a.std()), float(b.std())
    if sa < 1e-3 or sb < 1e-3:  # a flat image: correlation is undefined
        return None, None, None
    za = cv2.GaussianBlur((a - a.mean()) / sa, (0, 0), 1.0)
    zb = cv2.GaussianBlur((b - b.mean()) / sb, (0, 0), 1.0)
    r = float(np.corrcoef(za.ravel(), zb.ravel())[0, 1])
    diff = np.abs(za - zb)
    h, w = diff.shape
    cells = np.zeros((GRID, GRID), np.float32)
    for i in range(GRID):
        for j in range(GRID):
            block = diff[i * h // GRID : (i + 1) * h // GRID, j * w // GRID : (j + 1) * w // GRID]
            cells[i, j] = block.mean() if block.size else 0.0
    i, j = np.unravel_index(int(np.argmax(cells)), cells.shape)
    return finite(r), finite(float(cells[i, j]), 3), [int(i), int(j)]
