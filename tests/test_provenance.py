"""Provenance: what a file says about itself (EXIF, XMP, IPTC, the EXIF thumbnail, JPEG structure,
Content Credentials), read from fixtures built here, hostile ones included; its place in the scan
JSON, the HTML report, batch's summary and index, and ``imlscan meta``."""

from __future__ import annotations

import csv
import datetime
import functools
import io
import json
import pickle
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.scanning.provenance import read_provenance, summary_fields
from imlscan.scanning.provenance.credentials import TRUST_ENV
from imlscan.scanning.provenance.model import MAX_TEXT, text_of

runner = CliRunner()
EDITOR = "Adobe Photoshop 25.1 (Windows)"
SIGNER = "imlscan test signer"

# --- fixture builders -----------------------------------------------------------------------------


def scene(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A photo-like picture with large shapes placed by ``seed``: two seeds give two scenes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 160 + 40, yy / h * 160 + 40, np.full((h, w), 90, np.float32)], axis=2)
    for _ in range(6):
        colour = [int(c) for c in rng.integers(0, 256, 3)]
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), int(rng.integers(20, 60)), colour, -1)
        else:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(30, 120)), y + int(rng.integers(30, 90))), colour, -1)
    noise = cv2.GaussianBlur(rng.normal(0, 12, (h, w, 3)).astype(np.float32), (0, 0), 1.0)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", **{"quality": 90, **save})
    return buf.getvalue()


def png(rgb: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", **save)
    return buf.getvalue()


def segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def with_segments(data: bytes, *segments: bytes) -> bytes:
    """The JPEG ``data`` with raw segments inserted right after its start-of-image marker."""
    return data[:2] + b"".join(segments) + data[2:]


def _entry(value, bo: str) -> tuple[int, int, bytes]:
    """(type, count, bytes) of a TIFF value: str ASCII, bytes UNDEFINED, int SHORT/LONG,
    ("L", n) LONG, ("R", [(num, den), ...]) RATIONAL."""
    if isinstance(value, str):
        raw = value.encode("utf-8") + b"\x00"
        return 2, len(raw), raw
    if isinstance(value, bytes):
        return 7, len(value), value
    if isinstance(value, int):
        return (3, 1, struct.pack(bo + "H", value)) if value < 65536 else (4, 1, struct.pack(bo + "I", value))
    kind, v = value
    if kind == "L":
        return 4, 1, struct.pack(bo + "I", v)
    return 5, len(v), b"".join(struct.pack(bo + "II", n, d) for n, d in v)


def _ifd(entries: dict, offset: int, next_offset: int, bo: str) -> bytes:
    data_at = offset + 2 + 12 * len(entries) + 4
    head, data = struct.pack(bo + "H", len(entries)), b""
    for tag in sorted(entries):
        typ, count, raw = _entry(entries[tag], bo)
        if len(raw) <= 4:
            field = raw.ljust(4, b"\x00")
        else:
            field = struct.pack(bo + "I", data_at + len(data))
            data += raw + b"\x00" * (len(raw) & 1)
        head += struct.pack(bo + "HHI", tag, typ, count) + field
    return head + struct.pack(bo + "I", next_offset) + data


def tiff_block(ifd0: dict, exif: dict | None = None, gps: dict | None = None, thumbnail: bytes | None = None) -> bytes:
    """An EXIF block (TIFF structure, little-endian): IFD0, Exif and GPS sub-IFDs, IFD1 + thumbnail."""
    bo = "<"
    ifd0 = dict(ifd0)
    if exif:
        ifd0[0x8769] = ("L", 0)
    if gps:
        ifd0[0x8825] = ("L", 0)
    ifd1 = {0x0103: 6, 0x0201: ("L", 0), 0x0202: ("L", len(thumbnail))} if thumbnail else None
    sizes = [len(_ifd(d, 0, 0, bo)) if d else 0 for d in (ifd0, exif, gps, ifd1)]
    o0 = 8
    oe = o0 + sizes[0]
    og = oe + sizes[1]
    o1 = og + sizes[2]
    othumb = o1 + sizes[3]
    if exif:
        ifd0[0x8769] = ("L", oe)
    if gps:
        ifd0[0x8825] = ("L", og)
    if ifd1:
        ifd1[0x0201] = ("L", othumb)
    out = b"II*\x00" + struct.pack(bo + "I", o0) + _ifd(ifd0, o0, o1 if ifd1 else 0, bo)
    if exif:
        out += _ifd(exif, oe, 0, bo)
    if gps:
        out += _ifd(gps, og, 0, bo)
    if ifd1:
        out += _ifd(ifd1, o1, 0, bo) + thumbnail
    return out


def exif_segment(*args, **kw) -> bytes:
    return segment(0xE1, b"Exif\x00\x00" + tiff_block(*args, **kw))


def thumbnail_of(rgb: np.ndarray, size: tuple[int, int] = (160, 120), quality: int = 80) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).resize(size, Image.BILINEAR).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def xmp_segment(packet: str | bytes) -> bytes:
    body = packet.encode("utf-8") if isinstance(packet, str) else packet
    return segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + body)


def iptc_segment(fields: dict[tuple[int, int], bytes]) -> bytes:
    iim = b"\x1c\x01\x5a\x00\x03\x1b%G"  # 1:90 coded character set: UTF-8
    for (rec, ds), value in fields.items():
        iim += struct.pack(">BBBH", 0x1C, rec, ds, len(value)) + value
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iim)) + iim
    return segment(0xED, b"Photoshop 3.0\x00" + resource + b"\x00" * (len(iim) & 1))


CAMERA_IFD0 = {0x010F: "Canon", 0x0110: "Canon EOS R5", 0x0112: 1, 0x0132: "2024:05:01 10:00:00"}
CAMERA_EXIF = {
    0x829A: ("R", [(1, 250)]),
    0x829D: ("R", [(40, 10)]),
    0x8827: 400,
    0x9003: "2024:05:01 10:00:00",
    0x9011: "+02:00",
    0xA002: ("L", 320),
    0xA003: ("L", 240),
    0xA431: "SN-0042-SECRET",
    0xA434: "RF24-105mm F4 L IS USM",
}
GPS = {1: "N", 2: ("R", [(48, 1), (51, 1), (2400, 100)]), 3: "E", 4: ("R", [(2, 1), (21, 1), (0, 1)])}


def own_tables() -> list[list[int]]:
    """Quantization tables no IJG quality produces (as a camera's own)."""
    luma = [max(1, (3 * i) // 8 + 1 + (i % 3)) for i in range(64)]
    chroma = [max(1, (5 * i) // 8 + 2 + (i % 2)) for i in range(64)]
    return [luma, chroma]


def camera_jpeg() -> bytes:
    rgb = scene(1)
    base = jpeg(rgb, qtables=own_tables(), subsampling=2)
    return with_segments(base, exif_segment(CAMERA_IFD0, CAMERA_EXIF, GPS, thumbnail=thumbnail_of(rgb)))


def editor_jpeg() -> bytes:
    rgb = scene(1)
    ifd0 = {**CAMERA_IFD0, 0x0131: EDITOR, 0x0132: "2024:05:03 12:30:00"}
    iim = {(2, 80): b"Jane Doe", (2, 110): b"Agence Exemple", (2, 120): "Caption — café".encode()}
    base = jpeg(rgb, quality=92, progressive=True)
    return with_segments(base, exif_segment(ifd0, CAMERA_EXIF), iptc_segment(iim))


HISTORY_XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
  xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
  xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"
  xmlns:stRef="http://ns.adobe.com/xap/1.0/sType/ResourceRef#"
  xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
  xmlns:dc="http://purl.org/dc/elements/1.1/"
  xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
  xmp:CreatorTool="Adobe Photoshop 25.1 (Windows)" xmp:CreateDate="2024-05-01T10:00:00+02:00"
  xmpMM:DocumentID="adobe:docid:photoshop:1111" xmpMM:InstanceID="xmp.iid:2222"
  photoshop:Credit="Agence Exemple"
  Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia">
 <xmpMM:DerivedFrom rdf:parseType="Resource"><stRef:documentID>adobe:docid:photoshop:0000</stRef:documentID>
  <stRef:instanceID>xmp.iid:0001</stRef:instanceID></xmpMM:DerivedFrom>
 <xmpMM:History><rdf:Seq>
  <rdf:li stEvt:action="created" stEvt:softwareAgent="Adobe Photoshop 25.1 (Windows)" stEvt:when="2024-05-01T10:00"/>
  <rdf:li rdf:parseType="Resource"><stEvt:action>saved</stEvt:action><stEvt:changed>/</stEvt:changed>
   <stEvt:softwareAgent>Adobe Photoshop 25.1 (Windows)</stEvt:softwareAgent></rdf:li>
  <rdf:li><rdf:Description stEvt:action="converted" stEvt:parameters="from image/png to image/jpeg"/></rdf:li>
 </rdf:Seq></xmpMM:History>
 <photoshop:DocumentAncestors><rdf:Bag><rdf:li>xmp.did:aaaa</rdf:li><rdf:li>xmp.did:bbbb</rdf:li></rdf:Bag>
 </photoshop:DocumentAncestors>
 <dc:creator><rdf:Seq><rdf:li>Jane Doe</rdf:li></rdf:Seq></dc:creator>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""


def texts(p) -> list[str]:
    return [f.text for f in p.findings]


def finding(p, start: str):
    return next((f for f in p.findings if f.text.startswith(start)), None)


def strict_json(p) -> dict:
    return json.loads(json.dumps(p.to_dict(), allow_nan=False))


# --- what ordinary files say ----------------------------------------------------------------------


def test_camera_exif():
    p = read_provenance(camera_jpeg())
    e = p.exif
    assert (e["make"], e["model"], e["lens_model"]) == ("Canon", "Canon EOS R5", "RF24-105mm F4 L IS USM")
    assert e["date_time_original"] == "2024:05:01 10:00:00" and e["offset_time_original"] == "+02:00"
    assert e["exposure"] == {"exposure_time_s": 0.004, "f_number": 4, "iso": 400}
    assert finding(p, "Camera: Canon EOS R5, lens RF24-105mm").source == "EXIF Make, Model, LensModel"
    assert "Captured 2024:05:01 10:00:00 +02:00" in texts(p)
    assert not any(t.startswith(("No camera metadata", "Modified", "unreadable")) for t in texts(p))
    # serial numbers: whether present, never the value; GPS: presence without coordinates by default
    assert e["serial_numbers"] == {"body": True, "lens": False}
    assert e["gps"]["present"] and "latitude" not in e["gps"]
    dumped = json.dumps(strict_json(p))
    assert "SN-0042" not in dumped and "48.85" not in dumped
    assert "withheld" in finding(p, "GPS position recorded").text
    # the camera's own tables, baseline, 4:2:0, and the thumbnail agrees with the picture
    c = p.container
    luma = next(q for q in c["quantization"] if q["role"] == "luminance")
    assert not luma["ijg_standard"] and finding(p, "Quantization tables are not libjpeg's standard ones")
    assert (c["process"], c["subsampling"], c["width"], c["height"]) == ("baseline", "4:2:0", 320, 240)
    t = p.thumbnail
    assert t["compared"] and t["content_matches"] and not t["mismatch"] and t["correlation"] > 0.95
    assert finding(p, "EXIF thumbnail matches the image")
    assert p.thumbnail_jpeg.startswith(b"\xff\xd8")


def test_gps_coordinates_only_on_request():
    p = read_provenance(camera_jpeg(), gps=True)
    g = p.exif["gps"]
    assert g["latitude"] == pytest.approx(48 + 51 / 60 + 24 / 3600, abs=1e-6)
    assert g["longitude"] == pytest.approx(2 + 21 / 60, abs=1e-6)
    assert f"{g['latitude']}" in finding(p, "GPS position recorded").text


def test_editor_resave():
    p = read_provenance(editor_jpeg())
    saved = finding(p, "Saved by")
    assert (saved.text, saved.source) == (f"Saved by {EDITOR}", "EXIF Software")
    assert "Modified 2024:05:03 12:30:00, 2 days after capture" in texts(p)
    assert "Quantization tables are libjpeg's standard tables at quality 92" in finding(p, "Quantization").text
    assert p.container["process"] == "progressive" and finding(p, "Progressive JPEG")
    iim = p.iptc["iim"]
    assert iim == {"by_line": ["Jane Doe"], "credit": "Agence Exemple", "caption": "Caption — café"}
    assert finding(p, "IPTC by-line Jane Doe; credit Agence Exemple").source == "IPTC IIM"
    assert summary_fields(p.to_dict()) == {
        "software": EDITOR,
        "camera": "Canon EOS R5",
        "c2pa": "",
        "thumbnail_mismatch": "",
    }


def test_xmp_edit_history():
    p = read_provenance(with_segments(jpeg(scene(1)), xmp_segment(HISTORY_XMP)))
    x = p.xmp
    assert x["creator_tool"] == EDITOR
    assert x["history"]["count"] == 3
    assert [e["action"] for e in x["history"]["items"]] == ["created", "saved", "converted"]
    assert x["history"]["items"][1] == {"action": "saved", "software_agent": EDITOR, "changed": "/"}
    assert x["history"]["items"][2]["parameters"] == "from image/png to image/jpeg"
    assert x["derived_from"] == {"document_id": "adobe:docid:photoshop:0000", "instance_id": "xmp.iid:0001"}
    assert (x["document_id"], x["instance_id"]) == ("adobe:docid:photoshop:1111", "xmp.iid:2222")
    assert x["document_ancestors"]["count"] == 2
    history = finding(p, "Edit history of 3 event(s)")
    assert history.source == "XMP xmpMM:History" and f"created with {EDITOR} at 2024-05-01T10:00" in history.text
    assert finding(p, "Photoshop lists 2 ancestor document(s)").source == "XMP photoshop:DocumentAncestors"
    assert "Derived from another document (adobe:docid:photoshop:0000)" in texts(p)
    assert "composite that includes generative AI content" in finding(p, "IPTC digital source type").text
    assert p.iptc["xmp"] == {"by_line": "Jane Doe", "credit": "Agence Exemple"}


def test_thumbnail_of_another_picture():
    rgb = scene(1)
    data = with_segments(jpeg(rgb), exif_segment(CAMERA_IFD0, CAMERA_EXIF, thumbnail=thumbnail_of(scene(7))))
    p = read_provenance(data)
    t = p.thumbnail
    assert t["aspect_matches"] and not t["content_matches"] and t["mismatch"]
    assert t["correlation"] < 0.85
    assert finding(p, "EXIF thumbnail differs from the image").source == "EXIF thumbnail (IFD1)"
    assert summary_fields(p.to_dict())["thumbnail_mismatch"] == "yes"
    # the same verdict from the pixels a scan decoded as from the reader's own preview decode
    assert read_provenance(data, decoded_rgb=rgb).thumbnail["mismatch"]


def test_thumbnail_framing_orientation_and_letterbox():
    rgb = scene(1)
    # cropped to 16:9 after the 4:3 thumbnail was written
    crop = np.ascontiguousarray(rgb[30:210])
    p = read_provenance(with_segments(jpeg(crop), exif_segment(CAMERA_IFD0, thumbnail=thumbnail_of(rgb))))
    assert not p.thumbnail["aspect_matches"] and finding(p, "EXIF thumbnail has another aspect ratio")
    # turned 90 degrees after the thumbnail was written
    turned = np.ascontiguousarray(np.rot90(rgb))
    p = read_provenance(with_segments(jpeg(turned), exif_segment(CAMERA_IFD0, thumbnail=thumbnail_of(rgb))))
    assert not p.thumbnail["orientation_matches"] and finding(p, "EXIF thumbnail is turned 90 degrees")
    # a camera's 160 x 120 thumbnail of a 16:9 picture, with black bands: the same picture
    wide = scene(3, 180, 320)
    boxed = np.zeros((120, 160, 3), np.uint8)
    boxed[15:105] = cv2.resize(wide, (160, 90), interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    Image.fromarray(boxed).save(buf, "JPEG", quality=85)
    p = read_provenance(with_segments(jpeg(wide), exif_segment(CAMERA_IFD0, thumbnail=buf.getvalue())))
    assert p.thumbnail["black_bars_removed"] and not p.thumbnail["mismatch"], p.thumbnail


def test_flat_pictures_compare_by_brightness():
    grey = np.full((120, 160, 3), 128, np.uint8)
    same = read_provenance(with_segments(jpeg(grey), exif_segment(CAMERA_IFD0, thumbnail=thumbnail_of(grey))))
    assert not same.thumbnail["mismatch"] and same.thumbnail["correlation"] is None
    dark = np.full((120, 160, 3), 20, np.uint8)
    other = read_provenance(with_segments(jpeg(grey), exif_segment(CAMERA_IFD0, thumbnail=thumbnail_of(dark))))
    assert other.thumbnail["mismatch"] and "correlation undefined" in finding(other, "EXIF thumbnail differs").text


def test_thumbnail_follows_the_exif_orientation():
    """The camera stores picture and preview unturned: both turn by the Orientation tag."""
    stored = scene(1)
    data = with_segments(jpeg(stored), exif_segment({**CAMERA_IFD0, 0x0112: 6}, thumbnail=thumbnail_of(stored)))
    from imlscan.imageio import decode_bytes

    shown = decode_bytes(data).rgb
    assert shown.shape[:2] == (320, 240)
    p = read_provenance(data, decoded_rgb=shown)
    assert p.thumbnail["orientation_matches"] and not p.thumbnail["mismatch"], p.thumbnail
    assert read_provenance(data).thumbnail["correlation"] > 0.95  # the reader's own preview turns too


def test_summary_cells_cannot_start_a_formula():
    p = read_provenance(with_segments(jpeg(scene(1)), exif_segment({0x0131: '=HYPERLINK("http://x","y")'})))
    assert summary_fields(p.to_dict())["software"] == '\'=HYPERLINK("http://x","y")'


def test_png_without_metadata():
    p = read_provenance(png(scene(1)))
    d = strict_json(p)
    assert d["format"] == "PNG" and d["exif"] is None and d["xmp"] is None and d["c2pa"] is None
    assert d["thumbnail"] is None and d["iptc"] is None
    assert [f["source"] for f in d["findings"]] == ["EXIF (none in the file)"]
    assert d["findings"][0]["text"].startswith("No camera metadata")
    assert (d["container"]["width"], d["container"]["height"]) == (320, 240)
    assert summary_fields(d) == {"software": "", "camera": "", "c2pa": "", "thumbnail_mismatch": ""}


def test_png_generation_text_and_trailing_bytes():
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a lighthouse at dusk, Steps: 30, Sampler: Euler a")
    meta.add_text("Software", "GIMP 2.10")
    p = read_provenance(png(scene(1), pnginfo=meta) + b"appended")
    assert "Steps: 30" in finding(p, "PNG text 'parameters'").text
    assert finding(p, "Software recorded: GIMP 2.10").source == "PNG text Software"
    assert finding(p, "8 bytes after the PNG's last chunk")


def test_jpeg_after_end_of_image():
    base = jpeg(scene(1))
    p = read_provenance(base + jpeg(scene(2)))
    after = finding(p, f"{len(jpeg(scene(2))):,} bytes after the end of the JPEG image: another JPEG stream")
    assert after and "no MPF index" in after.text and after.source == "JPEG data after EOI"
    mpf = Image.new("RGB", (8, 8))
    buf = io.BytesIO()
    mpf.save(buf, "MPO", save_all=True, append_images=[Image.new("RGB", (8, 8), "red")])
    p = read_provenance(buf.getvalue())
    assert p.container["mpf_images"] == 2
    assert any("an MPF index declares 2 images, normal for many phones" in t for t in texts(p))


# --- hostile input --------------------------------------------------------------------------------


def test_script_and_huge_strings_are_bounded_and_escaped(tmp_path):
    script = "<script>alert('x')</script>"
    huge = "A" * 1_000_000
    exif = tiff_block({0x0131: script + " \x1b[31mred\x1b[0m", 0x013B: huge, 0x010E: "\u202egnp.exe"})
    xmp = HISTORY_XMP.replace('xmp:CreatorTool="Adobe Photoshop 25.1 (Windows)"', f'xmp:CreatorTool="{huge}"')
    xmp = xmp.replace("Agence Exemple", "&lt;script&gt;alert(1)&lt;/script&gt;")
    meta = PngImagePlugin.PngInfo()
    meta.add_itxt("XML:com.adobe.xmp", xmp)
    meta.add_text("Comment", huge)
    data = png(scene(1), pnginfo=meta, exif=b"Exif\x00\x00" + exif)
    p = read_provenance(data)
    d = strict_json(p)
    assert d["exif"]["artist"].endswith("[truncated: 1,000,000 characters in all]")
    assert len(d["exif"]["artist"]) < MAX_TEXT + 60
    assert len(d["xmp"]["creator_tool"]) < MAX_TEXT + 60
    assert "\x1b" not in json.dumps(d) and "\u202e" not in json.dumps(d)
    assert d["exif"]["software"] == "<script>alert('x')</script> [31mred[0m"
    assert all(len(f["text"]) < 2 * MAX_TEXT + 200 for f in d["findings"])
    # the HTML report escapes every field; the terminal never sees an escape character
    from imlscan.scanning.report import _provenance_section

    page = _provenance_section(d)
    assert "<script>" not in page and "&lt;script&gt;" in page
    path = tmp_path / "hostile.png"
    path.write_bytes(data)
    res = runner.invoke(app, ["meta", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\u202e" not in res.output
    assert len(res.output) < 60_000


@functools.lru_cache(maxsize=1)
def hostile_cases() -> dict[str, tuple[bytes, str, str]]:
    """name -> (file bytes, source of the expected 'unreadable' finding, words in its reason)."""
    base = jpeg(scene(1))
    good = tiff_block(CAMERA_IFD0, CAMERA_EXIF, thumbnail=thumbnail_of(scene(1)))
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;'
        '&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'
        '&lol2;">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&lol3;</x:xmpmeta>'
    )
    external = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">&e;</x:xmpmeta>'
    )
    not_jpeg_thumb = tiff_block(CAMERA_IFD0, thumbnail=png(scene(2, 60, 80)))
    past_end = bytearray(tiff_block(CAMERA_IFD0, thumbnail=thumbnail_of(scene(1))))
    i = past_end.find(struct.pack("<HHI", 0x0202, 4, 1))
    past_end[i + 8 : i + 12] = struct.pack("<I", 60000)
    bomb = zlib.compress(b"\x00" * (50 << 20), 9)
    ztxt = b"Comment\x00\x00" + bomb
    png_bomb = png(scene(1, 20, 20))
    png_bomb = png_bomb[:33] + struct.pack(">I", len(ztxt)) + b"zTXt" + ztxt + b"\x00" * 4 + png_bomb[33:]
    return {
        "entity expansion": (with_segments(base, xmp_segment(laughs)), "XMP", "DTDForbidden"),
        "external entity": (with_segments(base, xmp_segment(external)), "XMP", "DTDForbidden"),
        "malformed xmp": (with_segments(base, xmp_segment("<x:xmpmeta><rdf:RDF>")), "XMP", "not well-formed"),
        "invalid utf-8 xmp": (
            with_segments(base, xmp_segment(b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\xff\xfe\xc3</x:xmpmeta>')),
            "XMP",
            "not well-formed",
        ),
        "truncated exif": (with_segments(base, segment(0xE1, b"Exif\x00\x00" + good[:40])), "EXIF", ""),
        "not a tiff": (with_segments(base, segment(0xE1, b"Exif\x00\x00garbage!")), "EXIF", ""),
        "thumbnail not a jpeg": (
            with_segments(base, segment(0xE1, b"Exif\x00\x00" + not_jpeg_thumb)),
            "EXIF thumbnail",
            "not a JPEG",
        ),
        "thumbnail past the end": (
            with_segments(base, segment(0xE1, b"Exif\x00\x00" + bytes(past_end))),
            "EXIF thumbnail",
            "past the end",
        ),
        "malformed c2pa": (
            with_segments(base, segment(0xEB, b"JP\x00\x00\x00\x00\x00\x01\x00\x00\x00\x20jumbc2pa" + b"\x07" * 64)),
            "C2PA manifest store",
            "",
        ),
        "truncated scan": (base[: len(base) // 2], "JPEG structure", "no end-of-image marker"),
        "segment past the end": (base[:2] + b"\xff\xe1\xff\xf0Exif", "JPEG structure", "runs past the end"),
        "zTXt bomb": (png_bomb, "PNG zTXt Comment", "inflates to more than"),
        "not an image": (b"%PDF-1.7 hello", "file", "not a recognised image format"),
    }


@pytest.mark.parametrize("name", list(hostile_cases()))
def test_hostile_input_becomes_an_unreadable_finding(name, capfd):
    data, source, reason = hostile_cases()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own warnings (corrupt EXIF) must not escape
        p = read_provenance(data)
    bad = [f for f in p.findings if f.text.startswith("unreadable:")]
    assert any(f.source == source and reason in f.text for f in bad), p.findings
    strict_json(p)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_empty_and_tiny_inputs_never_raise():
    for data in (b"", b"\xff\xd8", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"\xff\xd8\xff\xd9"):
        strict_json(read_provenance(data))


def test_text_of_bounds_and_cleans():
    assert text_of(b"caf\xe9 \xff") == "caf\ufffd \ufffd"
    assert text_of("a\x00b\x1b[2Jc\rd\u202ee") == "ab[2Jcde"
    assert text_of("x" * 600).endswith("[truncated: 600 characters in all]")


# --- Content Credentials --------------------------------------------------------------------------


def make_credentials() -> tuple[bytes, bytes, bytes]:
    """A throwaway chain: a CA and an ES256 end-entity certificate as C2PA requires it
    (digitalSignature, emailProtection, CA:FALSE, authority and subject key identifiers).
    Returns (certificate chain PEM, private key PEM, CA certificate PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imlscan tests"),
            ]
        )

    def usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(True, False, False, False, False, ca, ca, False, False)

    def cert(subject, issuer, key, issuer_key, ca: bool) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage(ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        )
        if not ca:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert(name("imlscan test CA"), name("imlscan test CA"), ca_key, ca_key, True)
    leaf = cert(name(SIGNER), ca.subject, key, ca_key, False)
    pem = serialization.Encoding.PEM
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return leaf.public_bytes(pem) + ca.public_bytes(pem), private, ca.public_bytes(pem)


def sign_jpeg(data: bytes, chain: bytes, private: bytes) -> bytes:
    """``data`` signed with c2pa-python's Builder: created by a generative model, then edited."""
    import c2pa

    manifest = {
        "claim_generator_info": [{"name": "imlscan-tests", "version": "1.0"}],
        "title": "signed.jpg",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
                        },
                        {"action": "c2pa.edited", "softwareAgent": {"name": "Example Editor 2"}},
                    ]
                },
            }
        ],
    }
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, private, None))
    out = io.BytesIO()
    c2pa.Builder(manifest).sign(signer, "image/jpeg", io.BytesIO(data), out)
    return out.getvalue()


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    chain, private, ca = make_credentials()
    anchors = tmp_path_factory.mktemp("trust") / "ca.pem"
    anchors.write_bytes(ca)
    return chain, private, anchors


@pytest.fixture(scope="module")
def signed(credentials):
    return sign_jpeg(jpeg(scene(1, 96, 128)), *credentials[:2])


def tampered(data: bytes) -> bytes:
    """``data`` with one byte of the compressed pixels changed (no marker created or broken)."""
    b = bytearray(data)
    i = data.rfind(b"\xff\xda") + 40
    while b[i] in (0x00, 0xFE, 0xFF) or b[i - 1] == 0xFF:
        i += 1
    b[i] ^= 0x01
    return bytes(b)


def test_c2pa_signed_by_an_untrusted_signer(signed):
    p = read_provenance(signed)
    c = p.c2pa
    assert (c["state"], c["signer"], c["issuer"]) == ("untrusted_signer", SIGNER, "imlscan tests")
    assert c["failures"] == ["signingCredential.untrusted"] and c["trust_list"] == "none loaded"
    assert [a["action"] for a in c["actions"]["items"]] == ["c2pa.created", "c2pa.edited"]
    assert c["actions"]["items"][1]["software_agent"] == "Example Editor 2"
    assert c["claim_generator"].startswith("imlscan-tests 1.0")
    first = p.findings[0]
    assert first.text.startswith(f"Content Credentials signed by {SIGNER}")
    assert "the signer is not in the trust list" in first.text and "actions: created, edited" in first.text
    assert "signingCredential.untrusted" in first.source
    ai = finding(p, "Content Credentials declare the digital source type trainedAlgorithmicMedia")
    assert "generative AI" in ai.text
    assert summary_fields(p.to_dict())["c2pa"] == "untrusted_signer"


def test_c2pa_content_changed_after_signing(signed):
    p = read_provenance(tampered(signed))
    assert p.c2pa["state"] == "content_changed"
    assert "assertion.dataHash.mismatch" in p.c2pa["failures"]
    assert "the content no longer matches the signature: it changed after signing" in p.findings[0].text


def test_c2pa_store_damaged(signed):
    at = signed.find(b"jumb")
    for offset in (8, 300):
        b = bytearray(signed)
        b[at + offset] ^= 0xFF
        p = read_provenance(bytes(b))
        assert p.c2pa["state"] in ("unreadable", "invalid"), p.c2pa
        if p.c2pa["state"] == "unreadable":
            assert finding(p, "unreadable:").source == "C2PA manifest store"
        else:
            assert "the manifest does not validate" in p.findings[0].text
        strict_json(p)


def test_c2pa_trusted_with_the_anchor(signed, credentials, monkeypatch):
    monkeypatch.setenv(TRUST_ENV, str(credentials[2]))
    p = read_provenance(signed)
    assert p.c2pa["state"] == "valid" and not p.c2pa.get("failures")
    assert p.findings[0].text.startswith(f"Content Credentials: valid signature by {SIGNER}")


# --- scan JSON, HTML report, batch, CLI -----------------------------------------------------------


@pytest.fixture
def predictor(tiny_weights):
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model

    return Predictor(load_model(tiny_weights, device="cpu"), size=64, copy_move=False, keypoints=False)


def test_scan_report_carries_provenance(tmp_path, predictor, signed):
    from imlscan.scanning.predict import scan
    from imlscan.scanning.report import render_html

    path = tmp_path / "changed.jpg"
    path.write_bytes(tampered(signed))
    r = scan(path, predictor)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["provenance"]["c2pa"]["state"] == "content_changed"
    assert scan(np.asarray(scene(1, 64, 64)), predictor).to_dict()["provenance"] is None
    r.model["provenance"] = {"data": "the weights' training record"}
    page = render_html(r)
    top = page.index("Provenance of the file")
    assert top < page.index("How to read this") < page.index("Provenance of this scan")
    assert page.index("changed after signing") > top and "<details><summary>Every field read" in page
    folded = page.index("<details><summary>How the weights were trained")
    assert folded < page.index("the weights&#x27; training record") < page.index("</details>", folded)


def test_html_shows_the_thumbnail_beside_the_photo(tmp_path, predictor):
    from imlscan.scanning.predict import scan
    from imlscan.scanning.report import render_html

    rgb = scene(1)
    path = tmp_path / "thumb.jpg"
    path.write_bytes(with_segments(jpeg(rgb), exif_segment(CAMERA_IFD0, thumbnail=thumbnail_of(scene(7)))))
    page = render_html(scan(path, predictor))
    figs = page[page.index('<div class="figs">') : page.index("</div>", page.index('<div class="figs">'))]
    assert 'alt="EXIF thumbnail"' in figs and "differs from the image" in figs


def test_batch_summary_and_index_filter(tmp_path, predictor):
    from imlscan.scanning.batch import BatchOptions, prepare, run_batch

    root = tmp_path / "in"
    root.mkdir()
    (root / "edited.jpg").write_bytes(editor_jpeg())
    (root / "camera.jpg").write_bytes(camera_jpeg())
    (root / "plain.png").write_bytes(png(scene(2, 48, 64)))
    out = tmp_path / "out"
    summary = run_batch(root, predictor, BatchOptions(out_dir=out, workers=0, html=True))
    assert summary.failed == 0
    rows = {r["relpath"]: r for r in csv.DictReader(summary.summary_path.open())}
    assert rows["edited.jpg"]["software"] == EDITOR and rows["edited.jpg"]["camera"] == "Canon EOS R5"
    assert rows["camera.jpg"]["thumbnail_mismatch"] == "no" and rows["plain.png"]["software"] == ""
    index = summary.index_path.read_text()
    assert 'id="tag-filter"' in index and "editing software named (1)" in index
    assert 'data-tags="editor camera"' in index
    # the worker's answer crosses a process boundary: it must pickle
    task = {"path": str(root / "camera.jpg"), "overwrite": True, "max_pixels": None, "keypoints": None, "traces": ()}
    res = pickle.loads(pickle.dumps(prepare(task)))
    assert res["provenance"].exif["model"] == "Canon EOS R5"
    # a resumed run reads the columns back from the stored JSON
    again = run_batch(root, predictor, BatchOptions(out_dir=out, workers=0, html=True))
    assert again.skipped == 3
    rows = {r["relpath"]: r for r in csv.DictReader(again.summary_path.open())}
    assert rows["edited.jpg"]["software"] == EDITOR


def test_meta_command(tmp_path):
    cam = tmp_path / "camera.jpg"
    cam.write_bytes(camera_jpeg())
    res = runner.invoke(app, ["meta", str(cam), "--json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert isinstance(records, list) and records[0]["SourceFile"] == str(cam)
    assert records[0]["exif"]["model"] == "Canon EOS R5" and "latitude" not in records[0]["exif"]["gps"]
    assert "Camera: Canon EOS R5" in res.stderr and "easy to forge" in res.stderr
    res = runner.invoke(app, ["meta", str(cam), "--json", "--gps"])
    assert json.loads(res.stdout)[0]["exif"]["gps"]["latitude"] == pytest.approx(48.856667, abs=1e-5)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    res = runner.invoke(app, ["meta", str(cam), str(text), str(tmp_path / "missing.jpg")])
    assert res.exit_code == 1
    assert "notes.txt: not an image" in res.stderr and "missing.jpg: file not found" in res.stderr
