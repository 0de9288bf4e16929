"""A JPEG's own compression record: its quantization tables, the quality they correspond to on
the IJG (libjpeg) scale, and whether they are IJG's standard tables scaled.

Cameras and phones write tables of their own; editors and most software write IJG's standard
tables scaled by a quality factor, so "standard tables at quality 92" is itself a fact about the
software that saved the file last.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imlscan.jpegtables import estimate_quality, ijg_table  # noqa: F401  (re-exported)

# --- Reading a JPEG's quantized DCT coefficients -------------------------------------------------

MAX_PIXELS = 100_000_000  # the JPEG traces refuse larger files (memory and time)

# Position k of the zig-zag scan -> index (row * 8 + col) in natural order (ITU T.81 Figure A.6).
ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
     28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
     54, 47, 55, 62, 63],
    np.int64,
)  # fmt: skip

# Start-of-frame markers: (progressive, arithmetic, what the traces cannot read or None).
_SOF = {
    0xC0: (False, False, None),
    0xC1: (False, False, None),
    0xC2: (True, False, None),
    0xC3: (False, False, "lossless JPEG"),
    0xC5: (False, False, "hierarchical JPEG"),
    0xC6: (True, False, "hierarchical JPEG"),
    0xC7: (False, False, "hierarchical lossless JPEG"),
    0xC9: (False, True, None),
    0xCA: (True, True, None),
    0xCB: (False, True, "lossless JPEG"),
    0xCD: (False, True, "hierarchical JPEG"),
    0xCE: (True, True, "hierarchical JPEG"),
    0xCF: (False, True, "hierarchical lossless JPEG"),
}
_SUBSAMPLING = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0", (4, 1): "4:1:1", (4, 2): "4:1:0"}
# libjpeg warnings after which the coefficients cannot be trusted (missing or garbled blocks).
_FATAL_WARNINGS = (
    ("Premature end of JPEG file", "truncated JPEG data"),
    ("premature end of data segment", "truncated JPEG data"),
    ("bad Huffman code", "corrupt JPEG data (bad Huffman code)"),
    ("Corrupt JPEG data: bad", "corrupt JPEG data"),
    ("Inconsistent progression", "corrupt JPEG data (inconsistent progression sequence)"),
)
# jpeglib and libjpeg keep global state and libjpeg writes to the process's stderr: one read at a time.
_LOCK = threading.Lock()


@dataclass
class JpegData:
    """What the JPEG traces read from a JPEG file: its quantized luminance DCT coefficients and
    quantization tables, in the file's *stored* orientation (before any EXIF rotation).

    Attributes:
        error: why the JPEG traces cannot use this file (corrupt or truncated data, CMYK,
            lossless, too large, ...), or None. When set, the fields below may be empty.
        width, height: the stored size in pixels.
        y: the luminance coefficients as quantized in the file, ``(ceil(H/8), ceil(W/8), 8, 8)``
            int16; ``y[i, j, u, v]`` is frequency ``(u, v)`` (vertical, horizontal) of the block at
            block row ``i``, column ``j``.
        tables: the quantization tables in use, 8 x 8 in natural order.
        luma_table, chroma_table: the luminance table and the first chroma table (None for
            grayscale).
        progressive, arithmetic: the coding process.
        subsampling: "4:4:4", "4:2:2", "4:2:0", ..., or "grayscale".
        colorspace: "YCbCr", "grayscale", "RGB" (no colour transform: ``y`` is then red), "CMYK"
            or "YCCK".
        qualities: per table ("luma", "chroma", "chroma2"), ``estimate_quality``'s verdict as
            ``{"quality": int, "standard": bool, "error": float}``.
        warnings: libjpeg's warnings that did not stop the reading (e.g. extraneous bytes).
    """

    error: str | None = None
    width: int = 0
    height: int = 0
    y: np.ndarray | None = None
    tables: list[np.ndarray] = field(default_factory=list)
    luma_table: np.ndarray | None = None
    chroma_table: np.ndarray | None = None
    progressive: bool = False
    arithmetic: bool = False
    subsampling: str | None = None
    colorspace: str | None = None
    qualities: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe facts (no coefficients)."""
        return {
            "error": self.error,
            "width": self.width,
            "height": self.height,
            "progressive": self.progressive,
            "arithmetic": self.arithmetic,
            "subsampling": self.subsampling,
            "colorspace": self.colorspace,
            "qualities": self.qualities,
            "tables": [t.tolist() for t in self.tables],
            "warnings": list(self.warnings),
        }


@dataclass
class _Header:
    sof: int = 0
    precision: int = 8
    width: int = 0
    height: int = 0
    components: list[tuple[int, int, int, int]] = field(default_factory=list)  # (id, h, v, table)
    tables: dict[int, np.ndarray] = field(default_factory=dict)
    adobe_transform: int | None = None


def read_jpeg(data: bytes) -> JpegData:
    """Read a JPEG's quantized coefficients and tables; never raises and never prints.

    The header is parsed here first, so that files the traces cannot use (CMYK, lossless, 12-bit,
    too large, truncated headers) are refused before libjpeg allocates anything; the entropy-coded
    data is then read with ``jpeglib`` (libjpeg), whose messages on stderr are captured and turned
    into ``error`` (truncated or corrupt data) or ``warnings``.
    """
    try:
        return _read_jpeg(bytes(data))
    except Exception as e:  # noqa: BLE001 - a file must never stop a scan
        return JpegData(error=f"unreadable JPEG ({type(e).__name__}: {str(e)[:120]})")


def _read_jpeg(data: bytes) -> JpegData:
    header, error = _parse_header(data)
    if header is None:
        return JpegData(error=error)
    progressive, arithmetic, unsupported = _SOF[header.sof]
    out = JpegData(
        width=header.width,
        height=header.height,
        progressive=progressive,
        arithmetic=arithmetic,
        subsampling=_subsampling(header),
        colorspace=_colorspace(header),
    )
    if unsupported:
        out.error = f"{unsupported} (not supported)"
    elif header.precision != 8:
        out.error = f"{header.precision}-bit JPEG (not supported)"
    elif out.colorspace in ("CMYK", "YCCK"):
        out.error = f"{out.colorspace} colour space (not supported)"
    elif len(header.components) not in (1, 3):
        out.error = f"{len(header.components)} colour components (not supported)"
    elif header.width <= 0 or header.height <= 0:
        out.error = "no image size in the frame header"
    elif header.width * header.height > MAX_PIXELS:
        out.error = "too large for the JPEG traces"
    else:
        missing = {c[3] for c in header.components} - set(header.tables)
        if missing:
            out.error = f"quantization table {min(missing)} is not defined"
    if out.error:
        return out

    y, qt, table_no, messages = _libjpeg_read(data, arithmetic)
    for message in messages:
        fatal = next((why for key, why in _FATAL_WARNINGS if key in message), None)
        if fatal and y is not None:
            out.error = fatal
        elif y is not None:
            out.warnings.append(message)
    if y is None:
        last = messages[-1] if messages else "libjpeg could not read it"
        out.error = f"corrupt JPEG data ({last})"
    if out.error:
        return out
    hb, wb = -(-header.height // 8), -(-header.width // 8)
    if y.ndim != 4 or y.shape[:2] != (hb, wb) or y.shape[2:] != (8, 8):
        out.error = f"unexpected coefficient array {tuple(y.shape)} for {header.width}x{header.height}"
        return out
    out.y = y
    out.tables = [np.asarray(t, np.int32).reshape(8, 8) for t in qt]
    numbers = [int(n) for n in table_no]
    out.luma_table = out.tables[numbers[0]]
    if len(numbers) >= 3:
        out.chroma_table = out.tables[numbers[1]]
    out.qualities["luma"] = _quality(out.luma_table, False)
    if out.chroma_table is not None:
        out.qualities["chroma"] = _quality(out.chroma_table, True)
        if numbers[2] != numbers[1]:
            out.qualities["chroma2"] = _quality(out.tables[numbers[2]], True)
    return out


def _quality(table: np.ndarray, chroma: bool) -> dict[str, Any]:
    q, standard, err = estimate_quality(table, chroma)
    return {"quality": q, "standard": standard, "error": round(err, 4)}


def _parse_header(data: bytes) -> tuple[_Header | None, str | None]:
    """The frame header and quantization tables, up to the first scan; or why there are none."""
    if data[:2] != b"\xff\xd8":
        return None, "not a JPEG (no start-of-image marker)"
    h = _Header()
    i, n = 2, len(data)
    while True:
        # Markers may be preceded by any number of 0xFF fill bytes; anything else is garbage.
        if i >= n:
            return None, "truncated JPEG header (no image data)"
        if data[i] != 0xFF:
            return None, f"corrupt JPEG header (byte 0x{data[i]:02x} where a marker should be, at offset {i})"
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            return None, "truncated JPEG header (no image data)"
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker == 0xD9:
            return None, "no image data before the end-of-image marker"
        if marker in (0x00, 0xD8):
            return None, f"corrupt JPEG header (marker 0xff{marker:02x} at offset {i - 2})"
        if i + 2 > n:
            return None, "truncated JPEG header"
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2 or i + length > n:
            return None, "truncated or corrupt JPEG header (a segment runs past the end of the file)"
        seg = data[i + 2 : i + length]
        i += length
        if marker in _SOF:
            if h.sof:
                return None, "corrupt JPEG header (two frame headers)"
            if len(seg) < 6:
                return None, "corrupt JPEG header (short frame header)"
            h.sof, h.precision = marker, seg[0]
            h.height, h.width, nc = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"), seg[5]
            if nc == 0 or len(seg) < 6 + 3 * nc:
                return None, "corrupt JPEG header (bad frame header)"
            for c in range(nc):
                cid, hv, tq = seg[6 + 3 * c : 9 + 3 * c]
                if not (1 <= hv >> 4 <= 4 and 1 <= hv & 15 <= 4) or tq > 3:
                    return None, "corrupt JPEG header (bad component sampling or table)"
                h.components.append((cid, hv >> 4, hv & 15, tq))
        elif marker == 0xDB:
            j = 0
            while j < len(seg):
                pq, tq = seg[j] >> 4, seg[j] & 15
                size = 128 if pq else 64
                if pq > 1 or tq > 3 or j + 1 + size > len(seg):
                    return None, "corrupt JPEG header (bad quantization table)"
                raw = np.frombuffer(seg[j + 1 : j + 1 + size], ">u2" if pq else np.uint8).astype(np.int32)
                table = np.zeros(64, np.int32)
                table[ZIGZAG] = raw
                h.tables[tq] = table.reshape(8, 8)
                j += 1 + size
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            h.adobe_transform = seg[11]
        elif marker == 0xDA:
            if not h.sof:
                return None, "corrupt JPEG header (scan before the frame header)"
            return h, None
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None, f"corrupt JPEG header (marker 0xff{marker:02x})"


def _subsampling(h: _Header) -> str:
    if len(h.components) == 1:
        return "grayscale"
    (_, h0, v0, _), (_, h1, v1, _) = h.components[0], h.components[1]
    if h0 % h1 == 0 and v0 % v1 == 0 and (h0 // h1, v0 // v1) in _SUBSAMPLING:
        return _SUBSAMPLING[h0 // h1, v0 // v1]
    return ",".join(f"{c[1]}x{c[2]}" for c in h.components)


def _colorspace(h: _Header) -> str:
    if len(h.components) == 1:
        return "grayscale"
    if len(h.components) == 4:
        return "YCCK" if h.adobe_transform == 2 else "CMYK"
    if h.adobe_transform == 0 or bytes(c[0] for c in h.components[:3]) == b"RGB":
        return "RGB"
    return "YCbCr"


def _libjpeg_read(data: bytes, arithmetic: bool) -> tuple[np.ndarray | None, Any, Any, list[str]]:
    """``(y, tables, table numbers, libjpeg messages)`` read by jpeglib; y None when it failed."""
    import jpeglib

    fd, path = tempfile.mkstemp(suffix=".jpg", prefix="imlscan-")
    y = qt = table_no = None
    with _LOCK:
        previous = jpeglib.version.get() or "6b"
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            with _captured_stderr() as messages:
                try:
                    # jpeglib's default libjpeg (6b) cannot decode arithmetic coding; 9e can.
                    if arithmetic:
                        jpeglib.version.set("9e")
                    jpeg = jpeglib.read_dct(path)
                    y, qt, table_no = jpeg.Y, jpeg.qt, jpeg.quant_tbl_no
                except Exception:  # noqa: BLE001 - jpeglib raises OSError (and others) on corrupt data
                    y = None
                finally:
                    if arithmetic:
                        jpeglib.version.set(previous)
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)
    return (None if y is None else np.asarray(y)), qt, table_no, messages


@contextlib.contextmanager
def _captured_stderr():
    """Collect what C code writes to file descriptor 2 (and Python to stdout) into a list of lines."""
    messages: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved is None:  # no usable stderr: nothing to capture
        with contextlib.redirect_stdout(io.StringIO()):
            yield messages
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(65536).decode("utf-8", "replace")
            messages.extend(line.strip() for line in text.splitlines() if line.strip())
