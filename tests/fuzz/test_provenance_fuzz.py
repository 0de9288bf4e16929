"""Provenance readers under random damage: mutated, truncated and spliced versions of metadata-rich
fixtures, and made-up metadata blocks. Whatever the bytes, ``read_provenance`` returns; its report
is strict JSON; every string in it is bounded and free of control characters; Pillow's warnings
stay inside."""

from __future__ import annotations

import json
import re
import warnings

from fuzzseeds import fuzz, hang_guard, mutated, seeds
from hypothesis import given
from hypothesis import strategies as st
from test_provenance import (
    CAMERA_EXIF,
    CAMERA_IFD0,
    GPS,
    HISTORY_XMP,
    camera_jpeg,
    editor_jpeg,
    exif_segment,
    jpeg,
    png,
    scene,
    segment,
    with_segments,
    xmp_segment,
)

from imlscan.scanning.provenance import read_provenance
from imlscan.scanning.provenance.model import MAX_TEXT

CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
SEEDS = {
    "camera": camera_jpeg(),
    "editor": editor_jpeg(),
    "xmp": with_segments(jpeg(scene(1, 64, 80)), xmp_segment(HISTORY_XMP)),
    "png": png(scene(1, 40, 50), exif=b"Exif\x00\x00" + exif_segment(CAMERA_IFD0, CAMERA_EXIF, GPS)[10:]),
}
FUZZ = fuzz(120)


def check(data: bytes) -> None:
    with hang_guard(), warnings.catch_warnings():
        warnings.simplefilter("error")
        p = read_provenance(data, gps=True)
    d = json.loads(json.dumps(p.to_dict(), allow_nan=False))
    _walk(d)
    assert all(set(f) == {"text", "source"} for f in d["findings"])


def _walk(v) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            _walk(k)
            _walk(x)
    elif isinstance(v, list):
        assert len(v) <= 60
        for x in v:
            _walk(x)
    elif isinstance(v, str):
        assert len(v) <= 2 * MAX_TEXT + 400, v[:80]
        assert not CONTROL.search(v), repr(v[:80])


@FUZZ
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=12),
)
def test_byte_flips(seed, flips):
    b = bytearray(SEEDS[seed])
    for where, value in flips:
        b[int(where * min(len(b), 4096))] = value  # the metadata lives near the start
    check(bytes(b))


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)), cut=st.floats(0, 1))
def test_truncation(seed, cut):
    data = SEEDS[seed]
    check(data[: int(cut * len(data))])


@FUZZ
@given(
    marker=st.sampled_from([0xE1, 0xE2, 0xEB, 0xED, 0xFE, 0xDB, 0xC0, 0xDD]),
    prefix=st.sampled_from(
        [b"Exif\x00\x00", b"http://ns.adobe.com/xap/1.0/\x00", b"ICC_PROFILE\x00\x01\x01", b"MPF\x00"]
        + [b"Photoshop 3.0\x00", b"JP\x00\x00\x00\x00\x00\x01jumb", b""]
    ),
    body=st.binary(max_size=600),
)
def test_made_up_segments(marker, prefix, body):
    check(with_segments(SEEDS["camera"], segment(marker, prefix + body)))


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_in_every_field(text):
    safe = text.replace("\x00", "")
    ifd0 = {**CAMERA_IFD0, 0x0131: safe, 0x013B: safe * 3, 0x010E: safe}
    xmp = HISTORY_XMP.replace("Jane Doe", safe.replace("&", "&amp;").replace("<", "&lt;"))
    check(with_segments(jpeg(scene(1, 32, 40)), exif_segment(ifd0, CAMERA_EXIF), xmp_segment(xmp)))


@FUZZ
@given(data=mutated())
def test_every_format_damaged(data):
    """TIFF, WebP, GIF and PNG text chunks too, not only the JPEG and PNG metadata above."""
    check(data)


def test_a_chunk_type_with_a_control_byte():
    """Found by the test above: a damaged PNG chunk type reached the report's chunk list raw."""
    check(seeds()["png_text"].replace(b"tEXt", b"tEX\x00", 1))
