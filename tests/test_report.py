"""Reports: overlay picture, output files, JSON contents, HTML report and contact sheet."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re

import cv2
import numpy as np
import pytest

from imlscan.imageio import decode_bytes, encode_png, read_mask_png, read_prob_png
from imlscan.scanning.predict import UNTRAINED_WARNING, Predictor, build_result
from imlscan.scanning.report import (
    HOW_TO_READ,
    OUTLINE_RGB,
    render_contact_sheet,
    render_html,
    render_overlay,
    thumbnail_jpeg,
    write_outputs,
)
from imlscan.weights.store import load_model


@pytest.fixture
def predictor(tiny_weights):
    return Predictor(load_model(tiny_weights, device="cpu"))


@pytest.fixture
def photo(rng):
    return rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)


def blob_prob(h=90, w=120):
    prob = np.full((h, w), 0.05, np.float32)
    prob[20:50, 30:80] = 0.9
    return prob


def make_result(predictor, photo, prob, name="photo.png"):
    decoded = decode_bytes(encode_png(photo), name=name)
    return build_result(decoded, prob, predictor, threshold=0.5)


def test_overlay_keeps_photo_where_prob_is_zero(photo):
    out = render_overlay(photo, np.zeros(photo.shape[:2], np.float32))
    assert out.dtype == np.uint8 and np.array_equal(out, photo)


def test_overlay_heat_and_outline(photo):
    prob = blob_prob()
    mask = prob > 0.5
    out = render_overlay(photo, prob, mask)
    inside = np.abs(out[25:45, 35:75].astype(int) - photo[25:45, 35:75].astype(int)).mean()
    outside = np.abs(out[60:, :].astype(int) - photo[60:, :].astype(int)).mean()
    assert inside > 5 * outside
    border = out[20, 30:80]  # the top edge of the flagged box carries the outline colour
    assert (np.abs(border.astype(int) - OUTLINE_RGB).sum(axis=1) < 60).mean() > 0.5


def test_overlay_labels_the_copy_move_detectors_regions_as_duplicates():
    from imlscan.scanning.report import DUPLICATE_RGB
    from imlscan.scanning.result import Region

    photo = np.full((90, 120, 3), 128, np.uint8)  # grey: no magenta pixel by chance
    prob = blob_prob()
    mask = prob > 0.5

    def region(share):
        return Region(1, 35, 40, 40, 20, 800, 0.2, 0.9, 0.95, copy_move_share=share)

    def magenta(img):
        return int((np.abs(img[:40].astype(int) - DUPLICATE_RGB).sum(axis=2) < 40).sum())

    assert magenta(render_overlay(photo, prob, mask, [region(0.0)])) == 0
    assert magenta(render_overlay(photo, prob, mask, [region(None)])) == 0
    assert magenta(render_overlay(photo, prob, mask, [region(1.0)])) >= 5


def test_overlay_untrained_banner(photo):
    out = render_overlay(photo, np.zeros(photo.shape[:2], np.float32), untrained=True)
    top = out[:3].reshape(-1, 3).astype(int)
    assert (np.abs(top - [200, 0, 0]).sum(axis=1) < 30).mean() > 0.8


def test_write_outputs_files_and_json(tmp_path, predictor, photo):
    prob = blob_prob()
    result = make_result(predictor, photo, prob)
    report = write_outputs(result, tmp_path, "photo", overlay=True, mask=True, prob=True, html=True)
    files = {k: tmp_path / v for k, v in report["outputs"].items()}
    assert set(files) == {"overlay", "mask", "prob", "html", "json"}
    assert all(p.is_file() for p in files.values())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    stored = json.loads(files["json"].read_text())
    assert stored == json.loads(json.dumps(report))
    for key in (
        "schema",
        "input",
        "score",
        "score_definition",
        "threshold",
        "mask_fraction",
        "regions",
        "trained",
        "warnings",
        "model",
        "preprocessing",
        "timings",
        "versions",
        "outputs",
    ):
        assert key in stored, key
    assert stored["input"]["sha256"] == hashlib.sha256(encode_png(photo)).hexdigest()
    assert stored["input"]["width"] == 120 and stored["input"]["height"] == 90
    assert stored["regions"][0]["bbox"] == {"x": 30, "y": 20, "width": 50, "height": 30}
    assert stored["mask_fraction"] == pytest.approx(1500 / 10800, abs=1e-6)
    assert stored["score"] == pytest.approx(0.9, abs=1e-4)
    assert np.abs(read_prob_png(files["prob"]) - prob).max() <= 1 / 65535
    assert np.array_equal(read_mask_png(files["mask"]), prob > 0.5)
    overlay = cv2.imread(str(files["overlay"]))
    assert overlay.shape == (90, 120, 3)


def test_json_only_by_default(tmp_path, predictor, photo):
    report = write_outputs(make_result(predictor, photo, blob_prob()), tmp_path / "o", "x", overlay=False)
    assert report["outputs"] == {"json": "x.json"}
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["x.json"]


def _embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/[a-z]+;base64,([A-Za-z0-9+/=]+)"', page)]


def test_html_report_contents(predictor, photo):
    result = make_result(predictor, photo, blob_prob(), name="<script>alert(1)</script>.png")
    page = render_html(result)
    assert page.startswith("<!DOCTYPE html>")
    assert "Absence of evidence is not evidence of absence" in page
    assert all(html.escape(t) in page for t in HOW_TO_READ)
    images = _embedded_images(page)
    assert len(images) == 3  # original, overlay, mask
    decoded = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in images]
    assert [d.shape[:2] for d in decoded] == [(90, 120)] * 3
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page  # file names are escaped
    assert 'src="http' not in page and "<link" not in page  # self-contained
    assert f"{result.score:.3f}" in page
    assert result.model["sha256"] in page and result.input["sha256"] in page
    assert UNTRAINED_WARNING not in page


def test_html_untrained_warning(predictor, photo):
    predictor.weights_info.trained = False
    page = render_html(make_result(predictor, photo, blob_prob()))
    assert UNTRAINED_WARNING in page


def test_html_large_image_downscaled(predictor, rng):
    big = rng.integers(0, 256, (200, 1800, 3), dtype=np.uint8)
    page = render_html(make_result(predictor, big, np.zeros((200, 1800), np.float32)))
    shapes = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] for b in _embedded_images(page)]
    assert all(max(s) <= 1600 for s in shapes)
    assert "downscaled" in page


def test_contact_sheet(photo):
    thumb = thumbnail_jpeg(photo)
    entries = [
        {"relpath": "a/b.jpg", "score": 0.9, "mask_fraction": 0.1, "thumb": thumb, "link": "a/b.jpg.overlay.png"},
        {"relpath": "c.png", "score": 0.2, "mask_fraction": 0.0, "thumb": None, "link": None},
    ]
    failed = [{"relpath": "bad.jpg", "error": "bad.jpg: not an image"}]
    page = render_contact_sheet(entries, title="t", total=3, failed=failed, warnings=[UNTRAINED_WARNING])
    assert page.index("a/b.jpg") < page.index("c.png")
    assert len(_embedded_images(page)) == 1
    assert 'href="a/b.jpg.overlay.png"' in page
    assert "bad.jpg: not an image" in page and UNTRAINED_WARNING in page
    assert "#1" in page and "0.900" in page


def test_report_json_is_strict_and_names_the_non_finite_value(tmp_path, predictor, photo):
    from imlscan.errors import ImlscanError

    result = make_result(predictor, photo, blob_prob())
    with pytest.raises(ImlscanError, match=r"non-finite number at \$\.extra_check"):
        write_outputs(result, tmp_path, "x", overlay=False, extra={"extra_check": float("inf")})
    assert not (tmp_path / "x.json").exists()  # never a report strict parsers refuse


def test_claim_name_never_takes_another_files_report(tmp_path, predictor, photo, rng):
    from imlscan.scanning.report import claim_name

    out = tmp_path / "out"
    first, second = tmp_path / "d1" / "x.png", tmp_path / "d2" / "x.png"
    for p, pixels in ((first, photo), (second, rng.integers(0, 256, photo.shape, dtype=np.uint8))):
        p.parent.mkdir()
        p.write_bytes(encode_png(pixels))
    assert claim_name(out, "x", first, "a" * 64) == "x"  # free
    result = build_result(decode_bytes(first.read_bytes(), name=str(first)), blob_prob(), predictor, threshold=0.5)
    result.input["path"] = str(first)
    write_outputs(result, out, "x", overlay=False)
    assert claim_name(out, "x", first, result.input["sha256"]) == "x"  # its own report: replaced
    assert claim_name(out, "x", first, "edited" * 10) == "x"  # the same file, edited since
    other = claim_name(out, "x", second, "b" * 64)
    assert other.startswith("x-") and other == claim_name(out, "x", second, "b" * 64)  # stable
    (out / "notes.json").write_text("[1, 2]")  # a JSON file that is not an imlscan report
    assert claim_name(out, "notes", first, result.input["sha256"]) != "notes"


def test_contact_sheet_links_are_url_encoded(photo):
    entries = [{"relpath": "q?#%.jpg", "score": 0.5, "mask_fraction": 0.0, "thumb": None, "link": "d 1/q?#%.jpg.html"}]
    page = render_contact_sheet(entries, title="t", total=1)
    assert 'href="d%201/q%3F%23%25.jpg.html"' in page
