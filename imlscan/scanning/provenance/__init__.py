"""Provenance: what a photo's file says about itself, read from its bytes before any pixel analysis.

EXIF (camera, lens, times, software, GPS presence), XMP (creating tool, edit history, derivation),
IPTC (by-line, credit, caption), the embedded EXIF thumbnail compared with the picture, the
container's structure (JPEG quantization tables, progressive or baseline, subsampling, data after
the end of the image, further streams, ICC profile) and Content Credentials (C2PA), with short
neutral findings that name their source. Modules: ``reader`` (``read_provenance``), ``containers``,
``exif``, ``xmp``, ``credentials`` (C2PA), ``findings`` and ``model`` (the record and its bounds).
See docs/provenance.md.
"""

from __future__ import annotations

from typing import Any

from imlscan.safetext import csv_cell
from imlscan.scanning.provenance.findings import camera_name
from imlscan.scanning.provenance.model import CAVEAT, Finding, Provenance
from imlscan.scanning.provenance.reader import read_provenance

SUMMARY_COLUMNS = ["software", "camera", "c2pa", "thumbnail_mismatch"]


def summary_fields(d: dict[str, Any] | None) -> dict[str, str]:
    """The batch summary's provenance columns from a report's ``provenance`` dict (``to_dict()``)."""
    if not d:
        return dict.fromkeys(SUMMARY_COLUMNS, "")
    exif = d.get("exif") or {}
    xmp = d.get("xmp") or {}
    camera = camera_name(exif)
    thumb = d.get("thumbnail") or {}
    c2pa = d.get("c2pa") or {}
    return {
        "software": _cell(exif.get("software") or xmp.get("creator_tool") or ""),
        "camera": _cell(camera),
        "c2pa": str(c2pa.get("state") or ""),
        "thumbnail_mismatch": "" if not thumb.get("compared") else "yes" if thumb.get("mismatch") else "no",
    }


def _cell(value: object) -> str:
    """A spreadsheet cell that cannot start a formula (metadata is attacker-controlled)."""
    return csv_cell(str(value))


# Filters of the batch contact sheet: tag -> label.
TAGS = {
    "c2pa": "Content Credentials (C2PA)",
    "editor": "editing software named",
    "history": "XMP edit history",
    "thumbnail-mismatch": "EXIF thumbnail differs",
    "camera": "camera metadata",
    "no-camera": "no camera metadata",
    "unreadable": "unreadable metadata",
}


def provenance_tags(d: dict[str, Any] | None) -> list[str]:
    """The contact sheet's filter tags (keys of ``TAGS``) of a report's ``provenance`` dict."""
    from imlscan.scanning.provenance.findings import EDITORS

    if not d:
        return []
    exif, xmp = d.get("exif") or {}, d.get("xmp") or {}
    tags = []
    if d.get("c2pa"):
        tags.append("c2pa")
    if any(EDITORS.search(str(v)) for v in (exif.get("software"), xmp.get("creator_tool")) if v):
        tags.append("editor")
    if xmp.get("history"):
        tags.append("history")
    if (d.get("thumbnail") or {}).get("mismatch"):
        tags.append("thumbnail-mismatch")
    tags.append("camera" if exif.get("make") or exif.get("model") or exif.get("date_time_original") else "no-camera")
    if any(f.get("text", "").startswith("unreadable:") for f in d.get("findings") or []):
        tags.append("unreadable")
    return tags


__all__ = [
    "CAVEAT",
    "SUMMARY_COLUMNS",
    "TAGS",
    "Finding",
    "Provenance",
    "provenance_tags",
    "read_provenance",
    "summary_fields",
]
