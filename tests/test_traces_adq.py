"""The aligned double JPEG trace (``traces/adq.py``) and the JPEG reader it stands on (``traces/jpeg.py``).

Every photo is made here, with a known compression history (``tests/jpeg_forgeries.py``).

Measured (Pillow 11-13 / libjpeg-turbo, the two example photos, 24 splices with the host compressed
at 50, 70, 80 or 85 and saved at 90 or 95, donors uncompressed or a misaligned q70 JPEG): IoU of
``map > 0.5`` with the pasted region 0.85-0.98 (mean 0.94); authentic photos compressed twice flag
no pixel; photos compressed once (q90, q95, or q95 then q90, q90 twice) are "not applicable".
The floor below leaves a margin under the lowest measured value.
"""

from __future__ import annotations

import io
import math
import os
import tempfile

import numpy as np
import pytest
from PIL import Image

from imlscan.imageio import apply_orientation, decode_bytes, from_array
from imlscan.scanning.traces.adq import trace_adq
from imlscan.scanning.traces.base import Photo
from imlscan.scanning.traces.jpeg import estimate_quality, ijg_table, read_jpeg
from tests.jpeg_forgeries import compressed, encode_jpeg, encode_png, iou, photo_pixels, splice

IOU_FLOOR = 0.75  # lowest measured 0.85
BOX = (64, 64, 96, 128)  # (y, x, h, w) on the 8x8 grid, not symmetric: a wrong rotation misses it


def _photo(data: bytes) -> Photo:
    return Photo(data, decode_bytes(data))


def _flagged(result) -> np.ndarray:
    return result.map > 0.5


def _forgery(final_quality: int = 90, orientation: int = 1, **save) -> tuple[bytes, np.ndarray]:
    """A q70 host with an uncompressed paste at BOX, saved at ``final_quality`` with ``save``
    options; with ``orientation`` 6 or 8, stored turned and tagged so that the *displayed* photo is
    the same forgery. Returns the bytes and the pasted region in displayed orientation."""
    undo = {1: 1, 6: 8, 8: 6}[orientation]
    # The host is compressed in the stored orientation, where the file's JPEG grid lies.
    stored_host = compressed(np.ascontiguousarray(apply_orientation(photo_pixels("authentic-hats"), undo)), 70)
    display = np.array(apply_orientation(stored_host, orientation))  # a writable copy
    y, x, h, w = BOX
    display[y : y + h, x : x + w] = photo_pixels("copymove-sails")[y : y + h, x : x + w]
    mask = np.zeros(display.shape[:2], bool)
    mask[y : y + h, x : x + w] = True
    stored = np.ascontiguousarray(apply_orientation(display, undo))
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save = {**save, "exif": exif.tobytes()}
    return encode_jpeg(stored, final_quality, **save), mask


# --- The trace ---------------------------------------------------------------------------------


def test_paste_from_an_uncompressed_source_is_flagged():
    data, mask = splice(host_quality=70, donor_quality=None, final_quality=90, box=BOX)
    r = trace_adq(_photo(data))
    assert r.applies and r.name == "adq"
    assert r.reason.startswith("double compression found")
    assert r.map.dtype == np.float32 and r.map.shape == mask.shape
    assert 0 <= r.map.min() and r.map.max() <= 1
    assert iou(_flagged(r), mask) > IOU_FLOOR
    assert r.score > 0.9
    # The primary quality comes back from the estimated steps, and the current one from the tables.
    assert abs(r.details["primary_quality"] - 70) <= 2
    assert r.details["current_quality"] == 90
    assert len(r.details["frequencies_used"]) >= 5
    assert r.details["score_definition"]
    assert r.to_dict()["details"]["primary_steps"]  # JSON-safe


@pytest.mark.parametrize("host_quality, final_quality", [(60, 70), (65, 75), (70, 78)])
def test_a_small_quality_rise_is_found(host_quality, final_quality):
    """Version 2's decision (0.15 nats on 3 of 27 frequencies): version 1 (0.25 on 2 of 15) called
    these "no sign of double compression". The evidence is weak, so the paste is ranked above
    the background rather than crossing 0.5 (measured AUC 0.92-0.97, background flagged <= 1%)."""
    from sklearn.metrics import roc_auc_score

    data, mask = splice(host_quality=host_quality, donor_quality=None, final_quality=final_quality, box=BOX)
    r = trace_adq(_photo(data))
    assert r.applies and len(r.details["frequencies_used"]) >= 3
    assert roc_auc_score(mask.ravel(), r.map.ravel()) > 0.85
    assert r.map[mask].mean() > 3 * r.map[~mask].mean()
    assert (r.map[~mask] > 0.5).mean() < 0.05


def test_paste_from_a_misaligned_jpeg_is_flagged():
    data, mask = splice(host_quality=70, donor_quality=70, final_quality=90, box=BOX, shift=(3, 5))
    r = trace_adq(_photo(data))
    assert r.applies
    assert iou(_flagged(r), mask) > IOU_FLOOR


def test_paste_from_an_aligned_jpeg_of_the_same_quality_is_invisible():
    """Documented blind spot: a donor compressed at the host's quality on the same grid has been
    compressed twice exactly like the background, so nothing sets it apart."""
    data, mask = splice(host_quality=70, donor_quality=70, final_quality=90, box=BOX, shift=(0, 0))
    r = trace_adq(_photo(data))
    assert r.applies  # the background's double compression is found...
    assert _flagged(r).mean() < 0.01  # ...but the paste is not
    assert r.score < 0.2


def test_authentic_double_compression_flags_nothing():
    for name in ("authentic-hats", "copymove-sails"):
        r = trace_adq(_photo(encode_jpeg(compressed(photo_pixels(name), 70), 90)))
        assert r.applies
        assert _flagged(r).mean() < 0.01
        assert r.score < 0.2


@pytest.mark.parametrize("history", [(None, 90), (None, 95), (95, 90), (90, 90)])
def test_single_compression_does_not_apply(history):
    first, last = history
    for name in ("authentic-hats", "copymove-sails"):
        r = trace_adq(_photo(encode_jpeg(compressed(photo_pixels(name), first), last)))
        assert not r.applies, (name, history, r.details)
        assert r.reason.startswith("no sign of double compression")
        assert r.map is None and r.score is None


def test_not_a_jpeg():
    r = trace_adq(_photo(encode_png(photo_pixels())))
    assert not r.applies and r.reason == "not a JPEG"
    assert r.explanation


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_photo_gives_a_displayed_map(orientation):
    data, mask = _forgery(orientation=orientation)
    photo = _photo(data)
    assert photo.orientation == orientation
    assert photo.decoded.rgb.shape[:2] == mask.shape  # displayed: 384 high, 256 wide
    r = trace_adq(photo)
    assert r.applies
    assert r.map.shape == mask.shape
    assert iou(_flagged(r), mask) > IOU_FLOOR


def test_progressive_forgery_still_works():
    data, mask = _forgery(progressive=True)
    assert read_jpeg(data).progressive
    r = trace_adq(_photo(data))
    assert r.applies and iou(_flagged(r), mask) > IOU_FLOOR


def test_unreadable_jpegs_do_not_apply_and_do_not_raise(capfd):
    good, _ = _forgery()
    rng = np.random.default_rng(0)
    stand_in = from_array(photo_pixels())  # the decoded pixels do not matter here
    bad = {
        "truncated": good[: len(good) // 2],
        "garbage after SOI": b"\xff\xd8\xff" + rng.bytes(4000),
        "garbage in the scan": good[:700] + rng.bytes(len(good) - 700),
        "cmyk": _pil_jpeg("CMYK"),
    }
    for what, data in bad.items():
        r = trace_adq(Photo(data, stand_in))
        assert not r.applies, what
        assert r.reason.startswith("JPEG not readable by the JPEG traces: "), (what, r.reason)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # libjpeg's warnings are captured, not printed


# --- The reader --------------------------------------------------------------------------------


def _pil_jpeg(mode: str, quality: int = 85, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_pixels()).convert(mode).save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(("subsampling", "expected"), [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_read_jpeg_facts(subsampling, expected):
    j = read_jpeg(encode_jpeg(photo_pixels(), 90, subsampling=subsampling))
    assert j.error is None
    assert (j.width, j.height) == (384, 256)
    assert j.subsampling == expected and j.colorspace == "YCbCr"
    assert not j.progressive and not j.arithmetic
    assert j.y.shape == (32, 48, 8, 8)
    np.testing.assert_array_equal(j.luma_table, ijg_table(90))
    np.testing.assert_array_equal(j.chroma_table, ijg_table(90, chroma=True))
    assert j.qualities["luma"] == {"quality": 90, "standard": True, "error": 0.0}
    assert j.qualities["chroma"]["quality"] == 90 and j.qualities["chroma"]["standard"]


def test_read_jpeg_coefficients_are_in_natural_order_and_stored_size():
    """Flat grey gives DC = 8 (v - 128) / Q; stripes along x give horizontal frequencies only;
    an odd size rounds the block grid up."""
    grey = np.full((70, 100, 3), 200, np.uint8)
    j = read_jpeg(encode_jpeg(grey, 90))
    assert j.y.shape == (math.ceil(70 / 8), math.ceil(100 / 8), 8, 8)
    assert (j.width, j.height) == (100, 70)
    assert np.all(j.y[..., 0, 0] == round(8 * 72 / ijg_table(90)[0, 0]))
    assert not j.y[..., 1:, :].any() and not j.y[..., 0, 1:].any()
    x = np.arange(96)
    stripes = np.repeat((128 + 60 * np.cos((2 * x + 1) * np.pi / 16))[None, :], 64, axis=0)
    j = read_jpeg(encode_jpeg(np.repeat(stripes[..., None], 3, axis=2).astype(np.uint8), 95, subsampling=0))
    assert np.abs(j.y[..., 0, 1]).min() > 10  # the horizontal frequency (0, 1)...
    assert np.abs(j.y[..., 1, 0]).max() <= 1  # ...not the vertical one


def test_read_jpeg_progressive_grayscale_cmyk():
    j = read_jpeg(encode_jpeg(photo_pixels(), 90, progressive=True))
    assert j.error is None and j.progressive and j.y.shape == (32, 48, 8, 8)
    g = read_jpeg(_pil_jpeg("L", quality=80))
    assert g.error is None and g.subsampling == "grayscale" and g.chroma_table is None
    assert g.qualities == {"luma": {"quality": 80, "standard": True, "error": 0.0}}
    c = read_jpeg(_pil_jpeg("CMYK"))
    assert c.y is None and "CMYK" in c.error


def test_read_jpeg_arithmetic_coding():
    jpeglib = pytest.importorskip("jpeglib")
    previous = jpeglib.version.get() or "6b"
    fd, path = tempfile.mkstemp(suffix=".jpg")
    os.close(fd)
    try:
        jpeglib.version.set("9e")  # the default libjpeg 6b cannot write (or read) arithmetic coding
        jpeglib.from_spatial(np.ascontiguousarray(photo_pixels())).write_spatial(path, qt=85, flags=["+ARITH_CODE"])
        with open(path, "rb") as f:
            data = f.read()
    finally:
        jpeglib.version.set(previous)
        os.remove(path)
    j = read_jpeg(data)
    assert j.error is None and j.arithmetic and j.y.shape == (32, 48, 8, 8)
    assert j.qualities["luma"]["quality"] == 85
    assert jpeglib.version.get() == previous  # the reader puts the library back as it found it


def test_read_jpeg_errors_never_raise(capfd):
    good = encode_jpeg(photo_pixels(), 90)
    rng = np.random.default_rng(1)
    cases = {
        "empty": b"",
        "png": encode_png(photo_pixels()),
        "soi only": b"\xff\xd8",
        "truncated header": good[:300],
        "truncated data": good[: len(good) // 2],
        "garbage after SOI": b"\xff\xd8" + rng.bytes(5000),
        "garbage marker after SOI": b"\xff\xd8\xff" + rng.bytes(5000),
        "garbage in the scan": good[:700] + rng.bytes(len(good) - 700),
    }
    for what, data in cases.items():
        j = read_jpeg(data)
        assert j.error and j.y is None, what
    assert read_jpeg(good[: len(good) // 2]).error == "truncated JPEG data"
    assert read_jpeg(good + b"trailing junk").error is None
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_read_jpeg_refuses_huge_files_before_decoding():
    good = bytearray(encode_jpeg(photo_pixels(), 90))
    sof = good.index(b"\xff\xc0")
    good[sof + 5 : sof + 9] = (20000).to_bytes(2, "big") + (20000).to_bytes(2, "big")  # height, width
    j = read_jpeg(bytes(good))
    assert j.error == "too large for the JPEG traces" and j.y is None
    assert (j.width, j.height) == (20000, 20000)


# --- estimate_quality --------------------------------------------------------------------------


def test_estimate_quality_on_ijg_tables_is_exact():
    for q in range(1, 101):
        for chroma in (False, True):
            found, standard, error = estimate_quality(ijg_table(q, chroma), chroma)
            table = ijg_table(found, chroma)
            # Distinct qualities can share a table (e.g. near 100): the table must match exactly.
            np.testing.assert_array_equal(table, ijg_table(q, chroma))
            assert standard and error == 0.0
    assert estimate_quality(ijg_table(90))[0] == 90
    assert estimate_quality(ijg_table(75, True), chroma=True)[0] == 75


def test_estimate_quality_on_a_camera_table():
    camera = ijg_table(90).copy()
    camera[::2, 1::2] += 1  # a table of its own, close to quality 90
    q, standard, error = estimate_quality(camera)
    assert not standard and error > 0
    assert 87 <= q <= 92
