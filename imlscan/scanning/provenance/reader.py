"""``read_provenance``: every provenance reader over one file's bytes, in bounded time, never
raising on what the file contains."""

from __future__ import annotations

import io
import time
import warnings
from typing import Any

import numpy as np

from imlscan.scanning.provenance.containers import (
    Parts,
    detect_format,
    icc_description,
    photoshop_resources,
    read_jpeg,
    read_png,
)
from imlscan.scanning.provenance.credentials import read_c2pa
from imlscan.scanning.provenance.exif import compare_thumbnail, decode_thumbnail, read_exif
from imlscan.scanning.provenance.findings import build_findings
from imlscan.scanning.provenance.model import Problems, Provenance, prune
from imlscan.scanning.provenance.xmp import read_xmp


def read_provenance(data: bytes, *, decoded_rgb: np.ndarray | None = None, gps: bool = False) -> Provenance:
    """What a file says about itself: EXIF, XMP, IPTC, the EXIF thumbnail against the image, the
    container's structure (JPEG tables, streams, ICC profile) and Content Credentials (C2PA), with
    neutral findings built from them.

    Arguments:
        data: the file's bytes, exactly as stored.
        decoded_rgb: the image as decoded and turned by its EXIF orientation (``H x W x 3`` uint8),
            when the caller has it; otherwise the picture is decoded (JPEGs at reduced scale) only
            if an EXIF thumbnail needs comparing.
        gps: include GPS coordinates (by default only whether they are present: they can
            endanger a source).

    Anything the file holds that cannot be read becomes a finding ``unreadable: reason``.
    """
    t0 = time.perf_counter()
    problems = Problems()
    fmt = detect_format(data)
    prov = Provenance(format=fmt)
    size = None if decoded_rgb is None else (int(decoded_rgb.shape[1]), int(decoded_rgb.shape[0]))
    try:
        parts = _parts(data, fmt, problems)
        prov.exif, thumb_raw = read_exif(parts.exif, problems, gps=gps)
        prov.xmp, xmp_iptc = read_xmp(parts.xmp, problems)
        irb, iim = photoshop_resources(parts.photoshop, problems)
        prov.iptc = prune({"iim": iim, "xmp": xmp_iptc}) or None
        facts = dict(parts.facts)
        facts["icc_profile"] = icc_description(parts.icc, problems)
        facts["photoshop_resources"] = irb
        facts["png_text"] = parts.texts
        prov.container = prune(facts)
        if fmt in ("JPEG", "PNG"):
            hint = "container" if parts.c2pa else None
        else:
            hint = "bytes" if b"c2pa" in data else None
        prov.c2pa = read_c2pa(data, fmt, problems, hint)
        orientation = (prov.exif or {}).get("orientation")
        if size is None and facts.get("width") and facts.get("height"):
            w, h = int(facts["width"]), int(facts["height"])
            size = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
        if thumb_raw is not None:
            prov.thumbnail, prov.thumbnail_jpeg = _thumbnail(thumb_raw, data, fmt, decoded_rgb, orientation, problems)
    except Exception as e:  # noqa: BLE001 - the last guard: a reader bug must not end a scan
        problems.add("provenance reader", e)
    prov.findings = build_findings(prov, size) + problems.items
    prov.elapsed_s = time.perf_counter() - t0
    return prov


def _parts(data: bytes, fmt: str | None, problems: Problems) -> Parts:
    if fmt == "JPEG":
        return read_jpeg(data, problems)
    if fmt == "PNG":
        return read_png(data, problems)
    parts = Parts()
    if fmt is None:
        problems.add("file", "not a recognised image format")
        return parts
    img = _open(data, problems)
    if img is None:
        if fmt in ("HEIF", "AVIF"):
            problems.add(
                "image header", "reading HEIC/AVIF metadata needs the optional extra: pip install 'imlscan[heic]'"
            )
        return parts
    info = img.info or {}
    parts.facts = {"width": img.width, "height": img.height, "frames": getattr(img, "n_frames", 1)}
    parts.exif = data if fmt == "TIFF" else _bytes(info.get("exif"))
    parts.xmp = _bytes(info.get("xmp"))
    parts.icc = _bytes(info.get("icc_profile"))
    return parts


def _bytes(v: Any) -> bytes | None:
    return bytes(v) if isinstance(v, (bytes, bytearray)) and v else None


def _open(data: bytes, problems: Problems) -> Any:
    from PIL import Image

    from imlscan.imageio import PIL_FORMATS

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            return Image.open(io.BytesIO(data), formats=PIL_FORMATS)
        except Exception as e:  # noqa: BLE001 - whatever the header parser raises on hostile bytes
            problems.add("image header", e)
            return None


def _thumbnail(
    raw: bytes,
    data: bytes,
    fmt: str | None,
    image: np.ndarray | None,
    orientation: int | None,
    problems: Problems,
) -> tuple[dict[str, Any], bytes | None]:
    from imlscan.imageio import encode_jpeg

    rgb = decode_thumbnail(raw, orientation, problems)
    if rgb is None:
        return {"bytes": len(raw), "decodable": False}, None
    if image is None:
        image = _preview(data, fmt, orientation, max(rgb.shape[:2]), problems)
    facts = {"bytes": len(raw), "decodable": True, **compare_thumbnail(rgb, image)}
    return facts, encode_jpeg(rgb, 90)


def _preview(data: bytes, fmt: str | None, orientation: int | None, side: int, problems: Problems) -> Any:
    """The picture at twice the thumbnail's size or more, turned like the decoder turns it: JPEGs
    are decoded at 1/2 to 1/8 scale (libjpeg's DCT scaling), so this costs a few milliseconds."""
    from PIL import Image

    from imlscan.defaults import DEFAULT_MAX_PIXELS
    from imlscan.imageio import apply_orientation

    img = _open(data, problems)
    if img is None:
        return None
    if img.width * img.height > DEFAULT_MAX_PIXELS:
        problems.add("EXIF thumbnail comparison", "the image is too large to decode for it")
        return None
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            if fmt == "JPEG":
                img.draft("RGB", (2 * side, 2 * side))
            rgb = np.asarray(img.convert("RGB"))
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            problems.add("EXIF thumbnail comparison", f"the image does not decode ({e})")
            return None
    return np.ascontiguousarray(apply_orientation(rgb, orientation or 1))
