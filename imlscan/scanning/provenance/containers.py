"""The file's own structure, read byte by byte: JPEG segments (quantization tables, frame, scans,
data after the end of the image, further streams), PNG chunks, and the small binary records
carried inside them (ICC profile descriptions, Photoshop/IPTC IIM records, MPF indexes).

Every reader is bounded: it walks at most ``MAX_SEGMENTS`` segments, never reads past the data it
was given, and reports what it could not read through ``Problems`` instead of raising.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imlscan.scanning.provenance.model import MAX_ITEMS, Problems, decode_lenient, text_of

MAX_SEGMENTS = 4000  # JPEG segments or PNG chunks (a run of IDAT counts once) walked; real files have tens
MAX_STEPS = 200_000  # PNG chunks walked in all, IDAT included
MAX_INFLATE = 1 << 20  # bytes a compressed PNG text chunk or ICC profile may inflate to
# JPEG entropy-coded data ends at the first 0xFF not followed by 0x00 (stuffing), RSTn or 0xFF (fill).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Position k of the zig-zag order (the order DQT stores) -> index in the natural 8 x 8 order.
ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21]
    + [28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60]
    + [61, 54, 47, 55, 62, 63]
)
SOF_PROCESS = {
    0xC0: "baseline",
    0xC1: "extended sequential",
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "differential sequential",
    0xC6: "differential progressive",
    0xC7: "differential lossless",
    0xC9: "extended sequential, arithmetic coding",
    0xCA: "progressive, arithmetic coding",
    0xCB: "lossless, arithmetic coding",
}
SUBSAMPLING = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0", (4, 1): "4:1:1", (4, 2): "4:1:0"}
XMP_ID = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_EXT_ID = b"http://ns.adobe.com/xmp/extension/\x00"
IIM_FIELDS = {
    (2, 5): "object_name",
    (2, 25): "keywords",
    (2, 55): "date_created",
    (2, 60): "time_created",
    (2, 65): "originating_program",
    (2, 70): "program_version",
    (2, 80): "by_line",
    (2, 85): "by_line_title",
    (2, 90): "city",
    (2, 101): "country",
    (2, 110): "credit",
    (2, 115): "source",
    (2, 116): "copyright",
    (2, 120): "caption",
    (2, 122): "caption_writer",
}
IIM_REPEATABLE = {"keywords", "by_line"}


@dataclass
class Parts:
    """The raw metadata blocks a container holds, for the format-specific readers, and the
    container's own facts (``facts``, JSON-safe)."""

    facts: dict[str, Any] = field(default_factory=dict)
    exif: bytes | None = None
    xmp: bytes | None = None
    icc: bytes | None = None
    photoshop: bytes | None = None  # JPEG APP13 "Photoshop 3.0" image resources
    texts: dict[str, str] = field(default_factory=dict)  # PNG text chunks
    c2pa: bool = False  # a JUMBF/C2PA block is present


def detect_format(data: bytes) -> str | None:
    """The container format from the first bytes (the extension is not trusted)."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:2] == b"BM":
        return "BMP"
    if head[4:8] == b"ftyp":
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"
    if len(head) > 2 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "PPM"
    return None


# --- JPEG -----------------------------------------------------------------------------------------


def read_jpeg(data: bytes, problems: Problems) -> Parts:
    """Walk a JPEG's segments up to its end-of-image marker, then look at what follows it."""
    parts = Parts()
    segments: list[dict[str, Any]] = []
    tables: dict[int, tuple[int, np.ndarray]] = {}
    sof: dict[str, Any] | None = None
    icc_chunks: dict[int, bytes] = {}
    comments: list[str] = []
    mpf_images = None
    xmp_extended = 0
    scans = 0
    restart = None
    eoi = None
    n = len(data)
    pos = 2
    while pos < n:
        if len(segments) >= MAX_SEGMENTS:
            problems.add("JPEG structure", f"more than {MAX_SEGMENTS} segments; the rest was not read")
            break
        if data[pos] != 0xFF:
            problems.add("JPEG structure", f"unexpected byte at offset {pos} (no marker)")
            break
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= n:
            break
        marker = data[pos + 1]
        pos += 2
        if marker == 0xD9:
            eoi = pos
            break
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):
            continue
        if pos + 2 > n:
            break
        length = struct.unpack(">H", data[pos : pos + 2])[0]
        if length < 2 or pos + length > n:
            problems.add("JPEG structure", f"segment 0x{marker:02X} at offset {pos - 2} runs past the end of the file")
            break
        payload = data[pos + 2 : pos + length]
        kind = _segment_kind(marker, payload)
        segments.append({"marker": _marker_name(marker), "offset": pos - 2, "length": length, "kind": kind})
        if kind is None:
            del segments[-1]["kind"]
        if marker == 0xE1 and kind == "Exif" and parts.exif is None:
            parts.exif = payload[6:]
        elif marker == 0xE1 and kind == "XMP" and parts.xmp is None:
            parts.xmp = payload[len(XMP_ID) :]
        elif marker == 0xE1 and kind == "extended XMP":
            xmp_extended += 1
        elif marker == 0xE2 and kind == "ICC profile" and len(payload) > 14:
            icc_chunks.setdefault(payload[12], payload[14:])
        elif marker == 0xE2 and kind == "MPF":
            mpf_images = _mpf_count(payload[4:])
        elif marker == 0xED and kind == "Photoshop IRB" and parts.photoshop is None:
            parts.photoshop = payload[14:]
        elif marker == 0xEB and kind == "JUMBF (C2PA)":
            parts.c2pa = True
        elif marker == 0xFE:
            comments.append(text_of(decode_lenient(payload)))
        elif marker == 0xDB:
            _read_dqt(payload, tables, problems)
        elif marker == 0xDD and len(payload) >= 2:
            restart = struct.unpack(">H", payload[:2])[0]
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and sof is None:
            sof = _read_sof(marker, payload)
        pos += length
        if marker == 0xDA:
            scans += 1
            m = _NEXT_MARKER.search(data, pos)
            if m is None:
                problems.add("JPEG structure", "the image data is cut off: no end-of-image marker")
                pos = n
                break
            pos = m.start()
    if icc_chunks:
        parts.icc = b"".join(icc_chunks[k] for k in sorted(icc_chunks))
    facts: dict[str, Any] = {"segments": segments[:MAX_ITEMS], "segments_total": len(segments)}
    component_tables = sof.pop("_tables", []) if sof is not None else []
    facts.update(sof or {})
    facts["scans"] = scans
    facts["restart_interval"] = restart
    facts["quantization"] = _quality(tables, component_tables)
    facts["comments"] = comments[:MAX_ITEMS]
    facts["xmp_extended_segments"] = xmp_extended
    facts["mpf_images"] = mpf_images
    facts["end_of_image_offset"] = eoi
    facts["after_end"] = _after_end(data, eoi) if eoi is not None else None
    parts.facts = facts
    return parts


def _marker_name(marker: int) -> str:
    if 0xE0 <= marker <= 0xEF:
        return f"APP{marker - 0xE0}"
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
        return f"SOF{marker - 0xC0}"
    names = {0xC4: "DHT", 0xCC: "DAC", 0xDA: "SOS", 0xDB: "DQT", 0xDD: "DRI", 0xFE: "COM"}
    return names.get(marker, f"0x{marker:02X}")


def _segment_kind(marker: int, payload: bytes) -> str | None:
    if marker == 0xE0:
        return "JFIF" if payload.startswith(b"JFIF\x00") else "JFXX" if payload.startswith(b"JFXX\x00") else None
    if marker == 0xE1:
        if payload.startswith((b"Exif\x00\x00", b"Exif\x00\xff")):
            return "Exif"
        if payload.startswith(XMP_ID):
            return "XMP"
        if payload.startswith(XMP_EXT_ID):
            return "extended XMP"
    if marker == 0xE2:
        if payload.startswith(b"ICC_PROFILE\x00"):
            return "ICC profile"
        if payload.startswith(b"MPF\x00"):
            return "MPF"
    if marker == 0xEB and b"jumb" in payload[:64]:
        return "JUMBF (C2PA)" if b"c2pa" in payload[:256] else "JUMBF"
    if marker == 0xEC and payload.startswith(b"Ducky"):
        return "Ducky (Photoshop Save for Web)"
    if marker == 0xED and payload.startswith(b"Photoshop 3.0\x00"):
        return "Photoshop IRB"
    if marker == 0xEE and payload.startswith(b"Adobe"):
        return "Adobe"
    return None


def _read_dqt(payload: bytes, tables: dict[int, tuple[int, np.ndarray]], problems: Problems) -> None:
    pos = 0
    while pos < len(payload):
        precision, tid = payload[pos] >> 4, payload[pos] & 15
        size = 128 if precision else 64
        if pos + 1 + size > len(payload):
            problems.add("JPEG DQT", "quantization table cut short")
            return
        raw = payload[pos + 1 : pos + 1 + size]
        zz = np.frombuffer(raw, ">u2" if precision else "u1").astype(np.int32)
        table = np.empty(64, np.int32)
        table[ZIGZAG] = zz
        tables[tid] = (8 * (precision + 1), table.reshape(8, 8))
        pos += 1 + size


def _read_sof(marker: int, payload: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"frame": _marker_name(marker), "process": SOF_PROCESS.get(marker, "unknown")}
    if len(payload) < 6:
        return out
    precision, height, width, ncomp = struct.unpack(">BHHB", payload[:6])
    comps = []
    for i in range(min(ncomp, 4)):
        c = payload[6 + 3 * i : 9 + 3 * i]
        if len(c) == 3:
            comps.append({"id": c[0], "h": c[1] >> 4, "v": c[1] & 15, "table": c[2]})
    out.update({"bits": precision, "width": width, "height": height, "components": len(comps)})
    out["_tables"] = [c["table"] for c in comps]
    if len(comps) == 1:
        out["subsampling"] = "grayscale"
    elif len(comps) >= 3 and all(c["h"] and c["v"] for c in comps[:3]):
        y, cb, cr = comps[:3]
        if (cb["h"], cb["v"]) != (cr["h"], cr["v"]) or y["h"] % cb["h"] or y["v"] % cb["v"]:
            out["subsampling"] = "unusual: " + ", ".join(f"{c['h']}x{c['v']}" for c in comps[:3])
        else:
            ratio = (y["h"] // cb["h"], y["v"] // cb["v"])
            out["subsampling"] = SUBSAMPLING.get(ratio, f"{ratio[0]}x{ratio[1]}")
    return out


def _quality(tables: dict[int, tuple[int, np.ndarray]], component_tables: list[int]) -> list[dict[str, Any]]:
    """Each quantization table with the IJG quality it is closest to; the table the first
    component (luminance) uses is compared with the luminance standard, the others with chroma."""
    from imlscan.scanning.traces.jpeg import estimate_quality

    luma = component_tables[:1] or [0]
    used = component_tables or sorted(tables)
    out = []
    for tid in sorted(tables):
        bits, table = tables[tid]
        chroma = tid not in luma
        quality, standard, error = estimate_quality(table, chroma)
        out.append(
            {
                "table": tid,
                "bits": bits,
                "role": "chrominance" if chroma else "luminance",
                "used": tid in used,
                "ijg_quality": quality,
                "ijg_standard": standard,
                "mean_difference": round(error, 3),
            }
        )
    return out


def _mpf_count(tiff: bytes) -> int | None:
    """The number of images an MPF (multi-picture format) index declares."""
    from imlscan.scanning.provenance.exif import load_exif

    tags, _ = load_exif(tiff, None)
    try:
        return int(tags.get(0xB001)) if tags.get(0xB001) is not None else None
    except (TypeError, ValueError):
        return None


def _after_end(data: bytes, eoi: int) -> dict[str, Any] | None:
    """What follows the end-of-image marker: more JPEG streams, a video, padding or other data."""
    tail = len(data) - eoi
    if tail <= 0:
        return None
    rest = data[eoi:]
    starts = rest.count(b"\xff\xd8\xff")
    if rest.lstrip(b"\x00") == b"":
        what = "zero padding"
    elif rest.startswith(b"\xff\xd8\xff"):
        what = "another JPEG stream"
    elif b"ftyp" in rest[:64]:
        what = "ISO media (MP4/MOV video, e.g. a motion photo)"
    elif b"SEFT" in rest[-64:] or b"SEFH" in rest[:64]:
        what = "Samsung trailer (SEFH/SEFT)"
    else:
        what = "unidentified data"
    return {"bytes": tail, "kind": what, "jpeg_starts": starts}


# --- PNG ------------------------------------------------------------------------------------------


def read_png(data: bytes, problems: Problems) -> Parts:
    """Walk a PNG's chunks: header, text (tEXt, zTXt, iTXt), eXIf, iCCP, C2PA (caBX), trailing bytes."""
    parts = Parts()
    chunks: list[str] = []
    pos, n = 8, len(data)
    end = None
    steps = 0
    while pos + 8 <= n:
        steps += 1
        if len(chunks) >= MAX_SEGMENTS or steps > MAX_STEPS:
            problems.add("PNG structure", f"more than {MAX_SEGMENTS} chunks; the rest was not read")
            break
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        if pos + 12 + length > n:
            problems.add("PNG structure", f"chunk {text_of(ctype.decode('latin-1'))} runs past the end of the file")
            break
        body = data[pos + 8 : pos + 8 + length]
        name = ctype.decode("latin-1")
        if name != "IDAT" or not chunks or chunks[-1] != "IDAT":
            chunks.append(text_of(name))  # a damaged chunk type may hold control bytes
        if name == "IHDR" and length >= 13:
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
            parts.facts.update({"width": w, "height": h, "bit_depth": depth, "colour_type": colour})
            parts.facts["interlaced"] = bool(interlace)
        elif name in ("tEXt", "zTXt", "iTXt"):
            key, value = _png_text(name, body, problems)
            if key == "XML:com.adobe.xmp":
                parts.xmp = parts.xmp or value.encode("utf-8")
            elif key is not None and len(parts.texts) < MAX_ITEMS:
                parts.texts.setdefault(key, text_of(value))
        elif name == "eXIf" and parts.exif is None:
            parts.exif = body
        elif name == "iCCP":
            i = body.find(b"\x00")
            parts.icc = _inflate(body[i + 2 :], problems, "PNG iCCP") if 0 < i < 80 else None
        elif name == "caBX":
            parts.c2pa = True
        elif name == "acTL":
            parts.facts["animated"] = True
        pos += 12 + length
        if name == "IEND":
            end = pos
            break
    parts.facts["chunks"] = chunks[:MAX_ITEMS]
    if end is None:
        problems.add("PNG structure", "no IEND chunk: the file is cut off or damaged")
    elif end < n:
        parts.facts["after_end"] = {"bytes": n - end, "kind": "data after the IEND chunk"}
    return parts


def _png_text(name: str, body: bytes, problems: Problems) -> tuple[str | None, str]:
    i = body.find(b"\x00")
    if i <= 0 or i > 79:
        problems.add(f"PNG {name}", "malformed keyword")
        return None, ""
    key = text_of(body[:i].decode("latin-1"), 80)
    rest = body[i + 1 :]
    if name == "tEXt":
        return key, rest.decode("latin-1")
    if name == "zTXt":
        return key, (_inflate(rest[1:], problems, f"PNG zTXt {key}") or b"").decode("latin-1")
    # iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text
    if len(rest) < 2:
        return key, ""
    flag, tail = rest[0], rest[2:]
    parts = tail.split(b"\x00", 2)
    text = parts[2] if len(parts) == 3 else b""
    if flag:
        text = _inflate(text, problems, f"PNG iTXt {key}") or b""
    return key, text.decode("utf-8", "replace")


def _inflate(raw: bytes, problems: Problems, source: str) -> bytes | None:
    try:
        d = zlib.decompressobj()
        out = d.decompress(raw, MAX_INFLATE)
    except zlib.error as e:
        problems.add(source, f"cannot decompress ({e})")
        return None
    if d.unconsumed_tail:
        problems.add(source, f"inflates to more than {MAX_INFLATE:,} bytes; cut there")
    return out


# --- records inside containers --------------------------------------------------------------------


def icc_description(icc: bytes | None, problems: Problems) -> dict[str, Any] | None:
    """An ICC profile's description ('desc' tag, v2 text or v4 multi-language) and class."""
    if not icc:
        return None
    if len(icc) < 132:
        problems.add("ICC profile", "shorter than an ICC header")
        return {"bytes": len(icc)}
    out: dict[str, Any] = {"bytes": len(icc), "version": f"{icc[8]}.{icc[9] >> 4}"}
    out["class"] = text_of(icc[12:16].decode("latin-1"), 8)
    out["colour_space"] = text_of(icc[16:20].decode("latin-1"), 8)
    count = struct.unpack(">I", icc[128:132])[0]
    for i in range(min(count, 100)):
        entry = icc[132 + 12 * i : 144 + 12 * i]
        if len(entry) < 12:
            break
        sig, off, size = struct.unpack(">4sII", entry)
        if sig != b"desc":
            continue
        tag = icc[off : off + min(size, 4096)]
        if tag[:4] == b"desc" and len(tag) >= 12:
            n = struct.unpack(">I", tag[8:12])[0]
            out["description"] = text_of(tag[12 : 12 + n].split(b"\x00")[0].decode("latin-1"), 200)
        elif tag[:4] == b"mluc" and len(tag) >= 28:
            length, offset = struct.unpack(">II", tag[20:28])
            out["description"] = text_of(tag[offset : offset + length].decode("utf-16-be", "replace"), 200)
        break
    return out


def photoshop_resources(irb: bytes | None, problems: Problems) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Photoshop image resources (JPEG APP13): which are present, and the IPTC IIM record (0x0404)."""
    if not irb:
        return None, None
    ids: list[int] = []
    iptc = None
    pos, n = 0, len(irb)
    while pos + 12 <= n and irb[pos : pos + 4] in (b"8BIM", b"PHUT", b"DCSR", b"AgHg", b"MeSa"):
        rid = struct.unpack(">H", irb[pos + 4 : pos + 6])[0]
        name_len = irb[pos + 6]
        pos += 6 + ((name_len + 2) & ~1)
        if pos + 4 > n:
            break
        size = struct.unpack(">I", irb[pos : pos + 4])[0]
        pos += 4
        if pos + size > n:
            problems.add("Photoshop IRB", f"resource 0x{rid:04X} runs past the end of its segment")
            break
        ids.append(rid)
        if rid == 0x0404 and iptc is None:
            iptc = read_iim(irb[pos : pos + size], problems)
        pos += size + (size & 1)
        if len(ids) >= 500:
            break
    facts = {
        "resources": len(ids),
        "ids": [f"0x{r:04X}" for r in ids[:MAX_ITEMS]],
        "thumbnail_resource": 0x0409 in ids or 0x040C in ids,
    }
    return facts, iptc


def read_iim(raw: bytes, problems: Problems) -> dict[str, Any] | None:
    """The IPTC IIM datasets imlscan reports (by-line, credit, caption, ...)."""
    out: dict[str, Any] = {}
    utf8 = False
    invalid = False
    pos, n, count = 0, len(raw), 0
    while pos + 5 <= n and raw[pos] == 0x1C and count < 1000:
        rec, ds, length = raw[pos + 1], raw[pos + 2], struct.unpack(">H", raw[pos + 3 : pos + 5])[0]
        pos += 5
        if length & 0x8000:  # extended dataset: the length is in the next (length & 0x7FFF) bytes
            k = length & 0x7FFF
            if k > 4 or pos + k > n:
                problems.add("IPTC IIM", "malformed extended dataset length")
                break
            length = int.from_bytes(raw[pos : pos + k], "big")
            pos += k
        value = raw[pos : pos + length]
        pos += length
        count += 1
        if (rec, ds) == (1, 90):
            utf8 = value == b"\x1b%G"
            continue
        key = IIM_FIELDS.get((rec, ds))
        if key is None:
            continue
        if utf8:
            text = value.decode("utf-8", "replace")
            invalid = invalid or "\ufffd" in text
        else:
            text = decode_lenient(value)
        text = text_of(text)
        if key in IIM_REPEATABLE:
            items = out.setdefault(key, [])
            if len(items) < MAX_ITEMS:
                items.append(text)
        else:
            out.setdefault(key, text)
    if pos < n and raw[pos:].strip(b"\x00"):
        problems.add("IPTC IIM", "stray bytes after the last dataset")
    if invalid:
        problems.add("IPTC IIM", "text declared UTF-8 is not valid UTF-8 (shown with replacement characters)")
    return out or None
