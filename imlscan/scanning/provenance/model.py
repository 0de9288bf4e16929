"""The provenance record (``Provenance``, ``Finding``) and the bounds every value passes through.

Metadata is written by whoever saved the file last, so every string read from it is treated as
hostile: decoded leniently, stripped of control characters (no terminal escapes, nothing a JSON
or HTML writer could choke on), truncated with a note, and every list capped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "imlscan.provenance/1"
MAX_TEXT = 500  # characters kept of one metadata string; the rest is counted, not kept
MAX_ITEMS = 50  # entries kept of one list (edit history, ingredients, ancestors, ...)
CAVEAT = (
    "Metadata is written by the software that saved the file: it is easy to forge and easy to strip. "
    "These are statements about the file, each naming where it came from, not verdicts. A missing field "
    "proves nothing, and a valid Content Credentials signature shows who signed and that the file has "
    "not changed since, not that the scene is true."
)
# C0 controls but newline (ESC starts terminal escapes, CR overwrites a line), DEL and C1 controls,
# bidirectional overrides (they reorder what a reader sees), lone surrogates and non-characters.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")


@dataclass
class Finding:
    """One neutral statement about the file and the field it was read from."""

    text: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "source": self.source}


@dataclass
class Provenance:
    """What a file says about itself: its metadata sections (JSON-safe dicts, ``None`` where
    the file has no such section) and the findings built from them.

    ``thumbnail_jpeg`` is the embedded EXIF thumbnail re-encoded from its decoded pixels (not the
    file's own bytes) for display next to the photo; it is not part of ``to_dict()``.
    """

    format: str | None = None
    exif: dict[str, Any] | None = None
    xmp: dict[str, Any] | None = None
    iptc: dict[str, Any] | None = None
    thumbnail: dict[str, Any] | None = None
    container: dict[str, Any] | None = None
    c2pa: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    elapsed_s: float = 0.0
    thumbnail_jpeg: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "format": self.format,
            "findings": [f.to_dict() for f in self.findings],
            "caveat": CAVEAT,
            "exif": self.exif,
            "xmp": self.xmp,
            "iptc": self.iptc,
            "thumbnail": self.thumbnail,
            "container": self.container,
            "c2pa": self.c2pa,
            "elapsed_s": round(self.elapsed_s, 4),
        }


class Problems:
    """Collects "unreadable: reason" findings while the readers run (one per source)."""

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def add(self, source: str, reason: Any) -> None:
        if isinstance(reason, BaseException):
            detail = str(reason).strip().splitlines()[0] if str(reason).strip() else ""
            reason = f"{type(reason).__name__}{': ' + detail if detail else ''}"
        text = f"unreadable: {text_of(reason, 200)}"
        if not any(f.text == text and f.source == source for f in self.items):
            self.items.append(Finding(text, source))


def text_of(value: Any, limit: int = MAX_TEXT) -> str:
    """A metadata value as safe, bounded text: bytes decoded as UTF-8 (invalid sequences become
    U+FFFD), controls dropped, whitespace trimmed, cut at ``limit`` characters with a note."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value[: limit * 4 + 4])
        s = raw.decode("utf-8", "replace")
        total = len(value)
        cut = total > len(raw)
    else:
        s = str(value)
        cut = False
        total = len(s)
    s = _CONTROL.sub("", s.replace("\r\n", "\n").replace("\t", " ")).strip()
    if len(s) > limit or cut:
        unit = "bytes" if isinstance(value, (bytes, bytearray, memoryview)) else "characters"
        s = f"{s[:limit]} [truncated: {total:,} {unit} in all]"
    return s


def exif_text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """An EXIF string as Pillow hands it over (ASCII fields decoded as Latin-1, so UTF-8 text
    arrives mangled): UTF-8 where the bytes are valid UTF-8, else Latin-1 as Pillow read it."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    s = text_of(value, limit)
    return s or None


def capped(items: list[Any], limit: int = MAX_ITEMS) -> dict[str, Any]:
    """A list cut to ``limit`` entries, with the full count."""
    return {"count": len(items), "items": items[:limit], "truncated": len(items) > limit}


def finite(x: float | None, digits: int = 4) -> float | None:
    """A float fit for strict JSON (``allow_nan=False``): NaN and infinities become None."""
    if x is None:
        return None
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def prune(d: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``d`` that say something (drops None, empty strings, lists and dicts)."""
    return {k: v for k, v in d.items() if v not in (None, "", [], {})}


def decode_lenient(raw: bytes) -> str:
    """Bytes of unknown encoding: UTF-8 where valid, else Latin-1 (which never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
