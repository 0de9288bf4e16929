"""scan(): inputs, orientation, provenance, score and regions, native tiling, and the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import imlscan
from imlscan.cli import app
from imlscan.errors import UsageError
from imlscan.scanning.predict import (
    SMALL_IMAGE_SIDE,
    SMALL_IMAGE_WARNING,
    TILE_ALIGN,
    UNTRAINED_WARNING,
    Predictor,
    blend_weights,
    scan,
    tile_spans,
)
from imlscan.scanning.result import ScanResult, find_regions, image_score
from imlscan.weights.store import WeightsInfo, load_model


class ConstantModel(torch.nn.Module):
    """Outputs the same logit everywhere: any seam or weighting error in tiling shows."""

    def __init__(self, logit: float = 0.7):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor(logit))

    def forward(self, x):
        return self.logit.expand(x.shape[0], 1, *x.shape[-2:]).clone()


class PixelModel(torch.nn.Module):
    """A 1x1 convolution: every output pixel depends on its own input pixel only."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture
def tiny(tiny_weights):
    return load_model(tiny_weights, device="cpu")


@pytest.fixture
def photo(rng) -> np.ndarray:
    return rng.integers(0, 256, (72, 100, 3), dtype=np.uint8)


# --- tiling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [64, 128, 129, 150, 200, 257, 300, 511, 1000])
@pytest.mark.parametrize("tile,overlap", [(128, 32), (256, 64), (128, 1)])
def test_tile_spans_cover_align_and_overlap(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for s, e in spans:
        assert s % TILE_ALIGN == 0 and s % 8 == 0  # on the JPEG grid
        assert 0 < e - s <= tile + TILE_ALIGN - 1
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s0 < s1 and e0 < e1
        assert e0 - s1 >= overlap  # consecutive tiles overlap at least as asked
    if length <= tile:
        assert spans == [(0, length)]


@pytest.mark.parametrize("h,w", [(129, 200), (300, 257), (1000, 130)])
def test_blend_weights_sum_to_one_and_are_smooth(h, w):
    ys, xs = tile_spans(h, 128, 32), tile_spans(w, 128, 32)
    wys, wxs = blend_weights(ys, h), blend_weights(xs, w)
    total = np.zeros((h, w), np.float64)
    for (y0, y1), wy in zip(ys, wys):
        for (x0, x1), wx in zip(xs, wxs):
            total[y0:y1, x0:x1] += np.outer(wy, wx)
    assert np.allclose(total, 1.0, atol=1e-6)
    for wv in wys + wxs:  # no hard cut inside the image: weights ramp over the overlap
        assert (wv > 0).all() and (wv <= 1 + 1e-6).all()
        assert np.abs(np.diff(wv)).max() < 0.1


def test_constant_model_gives_constant_tiled_map():
    pred = Predictor(ConstantModel(0.7), device="cpu", mode="native", tile=128, overlap=32)
    rgb = np.zeros((300, 257, 3), np.uint8)
    assert pred.is_tiled(rgb.shape)
    prob = pred.predict_prob(rgb)
    assert prob.shape == (300, 257) and prob.dtype == np.float32
    assert np.allclose(prob, 1 / (1 + np.exp(-0.7)), atol=1e-6)
    assert pred.describe(rgb.shape)["tiles"] == len(tile_spans(300, 128, 32)) * len(tile_spans(257, 128, 32))


def test_local_model_tiled_equals_untiled(rng):
    rgb = rng.integers(0, 256, (160, 290, 3), dtype=np.uint8)  # just above the 128 px limit
    whole = Predictor(PixelModel(), device="cpu", mode="native", tile=None).predict_prob(rgb)
    tiled_pred = Predictor(PixelModel(), device="cpu", mode="native", tile=128, overlap=32, batch_size=3)
    tiled = tiled_pred.predict_prob(rgb)
    assert tiled_pred.describe(rgb.shape)["tiled"]
    assert np.abs(tiled - whole).max() < 1e-5


def test_real_model_tiled_native(tiny, rng):
    rgb = rng.integers(0, 256, (140, 200, 3), dtype=np.uint8)
    pred = Predictor(tiny, mode="native", tile=128, overlap=32)
    prob = pred.predict_prob(rgb)
    assert prob.shape == (140, 200) and np.isfinite(prob).all()
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    untiled = Predictor(tiny, mode="native", tile=None).predict_prob(rgb)
    assert np.abs(prob - untiled).mean() < 0.05  # global attention: close, not equal


@pytest.mark.parametrize("tile,overlap", [(100, 32), (32, 8), (128, 0), (128, 96)])
def test_bad_tiling_options(tiny, tile, overlap):
    with pytest.raises(UsageError):
        Predictor(tiny, mode="native", tile=tile, overlap=overlap)


# --- scan() ---------------------------------------------------------------------------------------


def test_scan_path_provenance(tiny, tiny_weights, tmp_path, photo):
    p = tmp_path / "photo.png"
    Image.fromarray(photo).save(p)
    r = scan(p, tiny)
    assert isinstance(r, ScanResult)
    assert r.prob.shape == (72, 100) and r.prob.dtype == np.float32
    assert r.mask.dtype == bool and np.array_equal(r.mask, r.prob > 0.5)
    assert 0.0 <= r.score <= 1.0
    assert r.input["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert r.model["sha256"] == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert r.model["trained"] is True and r.trained and r.warnings == [SMALL_IMAGE_WARNING]  # 72 px tall
    assert r.preprocessing["mode"] == "resize" and r.preprocessing["size"] == 512
    assert r.preprocessing["override_note"] is None
    assert r.versions["torch"] == torch.__version__ and r.versions["imlscan"] == imlscan.__version__
    assert set(r.timings) == {"decode_s", "inference_s", "traces_s", "postprocess_s", "total_s"}
    d = json.loads(json.dumps(r.to_dict()))
    for key in ("input", "score", "threshold", "regions", "model", "preprocessing", "timings", "versions"):
        assert key in d


def test_scan_same_map_for_path_pil_and_array(tiny, tmp_path, photo):
    p = tmp_path / "photo.png"
    Image.fromarray(photo).save(p)
    a, b, c = scan(p, tiny), scan(Image.open(p), tiny), scan(photo, tiny)
    assert np.array_equal(a.prob, b.prob) and np.array_equal(a.prob, c.prob)
    assert c.input["sha256"] is None


def test_scan_exif_rotated_output_shape(tiny, tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    Image.fromarray(photo).save(p, exif=exif)
    r = scan(p, tiny)
    assert r.prob.shape == (100, 72) and r.mask.shape == (100, 72)
    assert r.image.shape == (100, 72, 3)
    assert r.input["orientation"]["exif"] == 6 and r.input["stored_width"] == 100


def test_scan_native_records_override(tiny, photo):
    r = scan(photo, tiny, mode="native")
    assert r.prob.shape == photo.shape[:2]
    assert r.preprocessing["mode"] == "native" and r.preprocessing["size"] is None
    assert r.preprocessing["override_note"] and r.preprocessing["override_note"] in r.warnings


def test_small_image_warning_starts_below_the_measured_side(tiny, rng):
    """The caveat depends on the shorter side alone, in either orientation, at the documented edge."""
    for shape, small in (
        ((SMALL_IMAGE_SIDE - 1, 300), True),
        ((300, SMALL_IMAGE_SIDE - 1), True),
        ((SMALL_IMAGE_SIDE, 300), False),
    ):
        r = scan(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), tiny)
        assert (SMALL_IMAGE_WARNING in r.warnings) is small, shape
    assert str(SMALL_IMAGE_SIDE) in SMALL_IMAGE_WARNING


def test_threshold_is_strict(tiny, photo):
    r0 = scan(photo, tiny)
    top = float(r0.prob.max())
    r = scan(photo, tiny, threshold=top)
    assert not r.mask.any() and r.regions == [] and r.regions_total == 0
    with pytest.raises(UsageError):
        scan(photo, tiny, threshold=1.5)


def test_untrained_model_is_flagged(tiny_model, photo):
    tiny_model.weights_info = WeightsInfo(
        name="x-UNTRAINED", path=None, sha256=None, variant="sparsevit-test", config={}, preprocessing={}, trained=False
    )
    r = scan(photo, tiny_model)
    assert r.trained is False and r.to_dict()["trained"] is False
    assert UNTRAINED_WARNING in r.warnings


def test_bare_model_provenance_unknown(tiny_model, photo):
    r = scan(photo, tiny_model)
    assert r.model["trained"] is None
    assert any("provenance unknown" in w for w in r.warnings)


def test_score_ignores_single_hot_pixels():
    prob = np.zeros((200, 300), np.float32)
    prob[50, 50] = 1.0
    assert image_score(prob) < 0.05
    prob[100:140, 200:260] = 0.9
    assert image_score(prob) == pytest.approx((599 * 0.9 + 1.0) / 600, abs=1e-6)  # the hot pixel is 1 of 600
    assert abs(image_score(np.full((64, 64), 0.3, np.float32)) - 0.3) < 1e-6


def test_score_is_the_mean_of_the_top_percent_so_smaller_regions_are_diluted():
    """1% of 200x300 is 600 pixels: a region of 300 at 0.9 over a background of 0.1 scores the mean
    of its 300 pixels and the 300 highest others; a 1-pixel map scores its only pixel."""
    prob = np.full((200, 300), 0.1, np.float32)
    prob[0:10, 0:30] = 0.9
    assert image_score(prob) == pytest.approx((300 * 0.9 + 300 * 0.1) / 600, abs=1e-6)
    assert image_score(np.full((1, 1), 0.7, np.float32)) == pytest.approx(0.7)
    assert image_score(np.zeros((0, 5), np.float32)) == 0.0


def test_find_regions():
    prob = np.zeros((100, 200), np.float32)
    prob[10:30, 20:60] = 0.8  # 800 px
    prob[15, 40] = 0.95
    prob[60:70, 150:160] = 0.6  # 100 px
    prob[90, 5] = 0.9  # 1 px: below the 0.01% minimum (2 px)
    regions, total = find_regions(prob, prob > 0.5)
    assert total == 2 and [r.id for r in regions] == [1, 2]
    big, small = regions
    assert (big.x, big.y, big.width, big.height, big.area_px) == (20, 10, 40, 20, 800)
    assert big.area_fraction == pytest.approx(800 / 20000)
    assert big.max_prob == pytest.approx(0.95) and big.mean_prob == pytest.approx((799 * 0.8 + 0.95) / 800)
    assert (small.x, small.y, small.area_px) == (150, 60, 100) and small.max_prob == pytest.approx(0.6)


# --- CLI ------------------------------------------------------------------------------------------

runner = CliRunner()


def _png(path, rgb):
    Image.fromarray(rgb).save(path)
    return path


def test_cli_scan_writes_everything(tmp_path, tiny_weights, photo):
    img = _png(tmp_path / "photo.png", photo)
    out = tmp_path / "out"
    args = ["scan", str(img), "--out", str(out), "--mask", "--prob", "--html", "--json", "--weights", str(tiny_weights)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["input"]["sha256"] == hashlib.sha256(img.read_bytes()).hexdigest()
    assert report["outputs"] == {
        "overlay": "photo.overlay.png",
        "mask": "photo.mask.png",
        "prob": "photo.prob.png",
        "html": "photo.html",
        "json": "photo.json",
    }
    for name in report["outputs"].values():
        assert (out / name).is_file()
    assert json.loads((out / "photo.json").read_text()) == report
    assert "score" in res.stderr and "flagged" in res.stderr  # the table goes to stderr, JSON alone on stdout
    assert report["warnings"] == [SMALL_IMAGE_WARNING]  # 100x72
    assert f"note: {img}: Small image" in " ".join(res.stderr.split())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_scan_same_stem_no_overwrite(tmp_path, tiny_weights, photo):
    a = _png(tmp_path / "x.png", photo)
    b = tmp_path / "x.jpg"
    Image.fromarray(photo[:, ::-1]).save(b)
    out = tmp_path / "o"
    res = runner.invoke(app, ["scan", str(a), str(b), "--out", str(out), "--weights", str(tiny_weights), "--json"])
    assert res.exit_code == 0, res.output
    reports = json.loads(res.stdout)
    assert [r["outputs"]["json"] for r in reports] == ["x.png.json", "x.jpg.json"]
    assert json.loads((out / "x.jpg.json").read_text())["input"]["format"] == "JPEG"


def test_cli_scan_bad_file_one_line_exit_1(tmp_path, tiny_weights):
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    res = runner.invoke(app, ["scan", str(bad), "--out", str(tmp_path / "o"), "--weights", str(tiny_weights)])
    assert res.exit_code == 1
    assert "empty file" in res.stderr and "Traceback" not in res.output


def test_cli_scan_partial_failure(tmp_path, tiny_weights, photo):
    good = _png(tmp_path / "good.png", photo)
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    out = tmp_path / "o"
    res = runner.invoke(app, ["scan", str(bad), str(good), "--out", str(out), "--weights", str(tiny_weights)])
    assert res.exit_code == 1
    assert (out / "good.json").is_file() and not (out / "bad.json").exists()
    assert "not an image" in res.stderr


def test_cli_scan_max_pixels(tmp_path, tiny_weights, photo):
    img = _png(tmp_path / "p.png", photo)
    res = runner.invoke(app, ["scan", str(img), "--max-pixels", "1000", "--weights", str(tiny_weights)])
    assert res.exit_code == 1 and "decompression bomb" in res.stderr and "--max-pixels" in res.stderr


@pytest.mark.parametrize(
    "extra",
    [["--mode", "sideways"], ["--threshold", "1.5"], ["--tile", "100", "--mode", "native"], ["--device", "tpu"]],
)
def test_cli_scan_usage_errors_exit_2(tmp_path, tiny_weights, photo, extra):
    img = _png(tmp_path / "p.png", photo)
    res = runner.invoke(app, ["scan", str(img), "--out", str(tmp_path / "o"), "--weights", str(tiny_weights), *extra])
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "o").exists()
