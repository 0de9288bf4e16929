"""The JPEG grid (ZERO) and JPEG ghost traces on photos with known compression histories.

IoU floors are set below what was measured on these fixtures (grid: 0.96 on a PNG, 0.91 at
quality 98; ghost: 0.69 for a quality-60 paste, 0.76 for quality 70, final save at 90), so that a
regression fails and noise does not.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from jpeg_forgeries import EXAMPLES, compressed, decode, encode_jpeg, encode_png, iou, photo_pixels, splice
from PIL import Image

from imlscan.imageio import apply_orientation, decode_bytes
from imlscan.scanning.traces.base import Photo
from imlscan.scanning.traces.ghost import file_quality, trace_ghost
from imlscan.scanning.traces.grid import count_zeros, grid_votes, log10_binomial_tail, trace_grid

BOX = (64, 64, 96, 128)  # (y, x, h, w) of the paste in a 256 x 384 host


def photo(data: bytes) -> Photo:
    return Photo(data, decode_bytes(data))


def check_map(result, data: bytes) -> None:
    rgb = decode_bytes(data).rgb
    assert result.map is not None and result.map.dtype == np.float32
    assert result.map.shape == rgb.shape[:2]
    assert 0.0 <= float(result.map.min()) and float(result.map.max()) <= 1.0
    assert result.score is not None and 0.0 <= result.score <= 1.0


@pytest.fixture(scope="module")
def fresh() -> np.ndarray:
    """Pixels without any JPEG grid: an example photo divided by 3 (area average). The fixtures'
    halving keeps a period-4 trace of the example's own 8x8 grid, which ZERO still finds."""
    rgb = np.asarray(Image.open(EXAMPLES / "authentic-hats.jpg").convert("RGB"))
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (w // 3, h // 3), interpolation=cv2.INTER_AREA)


def pasted(host_quality: int, donor_quality: int, shift: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``splice`` before its final save: the pixels and the mask (True = pasted)."""
    host = compressed(photo_pixels("authentic-hats"), host_quality).copy()
    donor = compressed(photo_pixels("copymove-sails"), donor_quality)
    y, x, bh, bw = BOX
    dy, dx = shift
    host[y : y + bh, x : x + bw] = donor[y + dy : y + dy + bh, x + dx : x + dx + bw]
    mask = np.zeros(host.shape[:2], bool)
    mask[y : y + bh, x : x + bw] = True
    return host, mask


def exif_jpeg(stored: np.ndarray, quality: int, orientation: int) -> bytes:
    """``stored`` saved as a JPEG whose EXIF asks viewers to turn it (``orientation`` 6 or 8).

    The compression history stays in the stored orientation, as in a camera's file: turning a
    JPEG's pixels before a later save would transpose its quantization (the table is not
    symmetric) and blur its ghost."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode_jpeg(stored, quality, exif=exif.tobytes())


# --- grid -------------------------------------------------------------------------------------


def test_zero_counts_match_a_direct_dct():
    luma = np.rint(decode(encode_jpeg(photo_pixels()[:24, :32], 80))[..., 1]).astype(np.float32)
    n = np.arange(8)
    basis = np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16) * np.where(n == 0, np.sqrt(1 / 8), 0.5)[:, None]
    zeros = count_zeros(luma)
    assert zeros.shape == (17, 25)
    for y, x in [(0, 0), (3, 5), (8, 8), (16, 24), (9, 17)]:
        c = basis @ luma[y : y + 8, x : x + 8].astype(np.float64) @ basis.T
        expected = int((np.abs(c) < 0.5).sum()) - int(abs(c[0, 0]) < 0.5)
        assert abs(int(zeros[y, x]) - expected) <= 1  # float32 against float64 at |c| = 0.5


def test_votes_go_to_the_grid_of_a_jpeg_and_follow_a_crop():
    luma = decode(encode_jpeg(photo_pixels(), 80)).astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    votes = grid_votes(np.rint(luma))
    assert np.bincount(votes[votes >= 0]).argmax() == 0
    cropped = grid_votes(np.rint(luma[3:, 5:]))
    assert np.bincount(cropped[cropped >= 0]).argmax() == 3 + 8 * 5  # x mod 8 = 3, y mod 8 = 5
    assert (votes[:7] == -1).all() and (votes[:, -7:] == -1).all()


def direct_votes(luma: np.ndarray) -> np.ndarray:
    """ZERO's vote loop as written in the article: block by block, pixel by pixel."""
    n = np.arange(8)
    basis = np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16) * np.where(n == 0, np.sqrt(1 / 8), 0.5)[:, None]
    h, w = luma.shape
    votes = np.full((h, w), -1)
    best = np.zeros((h, w), int)
    for y in range(h - 7):
        for x in range(w - 7):
            block = luma[y : y + 8, x : x + 8].astype(np.float64)
            c = basis @ block @ basis.T
            z = int((np.abs(c) < 0.5).sum()) - int(abs(c[0, 0]) < 0.5)
            flat = (block == block[:, :1]).all() or (block == block[:1, :]).all()
            cover = (slice(y, y + 8), slice(x, x + 8))
            votes[cover] = np.where(z == best[cover], -1, votes[cover])
            higher = z > best[cover]
            votes[cover] = np.where(higher, -1 if flat else x % 8 + 8 * (y % 8), votes[cover])
            best[cover] = np.maximum(best[cover], z)
    votes[:7], votes[-7:], votes[:, :7], votes[:, -7:] = -1, -1, -1, -1
    return votes


def test_votes_match_the_direct_loop():
    rgb = decode(encode_jpeg(photo_pixels()[40:80, 100:148], 85))
    luma = np.rint(rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))
    luma[0:8, 0:16] = 100  # constant blocks: no vote
    # Blocks on the grid, constant along their columns: they win with 56 zeros but cast no vote.
    stripes = np.float32([10, 200, 37, 90, 150, 20, 240, 75])
    for y, x in [(8, 24), (16, 32), (24, 8)]:
        luma[y : y + 8, x : x + 8] = stripes[None, :]
    expected = direct_votes(luma)
    votes = grid_votes(luma)
    # Float32 against float64 can flip a coefficient at exactly |c| = 0.5: allow a handful.
    assert (votes != expected).mean() < 0.01
    assert (expected == -1).mean() > 0.3 and (expected >= 0).mean() > 0.1


def test_binomial_tail_bounds():
    assert log10_binomial_tail(100, 1, 1 / 64) == 0.0  # below the mean: tail taken as 1
    exact = np.log10(sum(math.comb(50, i) * (1 / 64) ** i * (63 / 64) ** (50 - i) for i in range(10, 51)))
    bound = log10_binomial_tail(50, 10, 1 / 64)
    assert exact <= bound <= exact + 0.1


@pytest.mark.parametrize("final", ["png", 98])
def test_grid_finds_a_misaligned_paste(final):
    rgb, mask = pasted(90, 70, (3, 5))
    data = encode_png(rgb) if final == "png" else encode_jpeg(rgb, final)
    r = trace_grid(photo(data))
    check_map(r, data)
    assert r.applies and r.details["grid_origin"] == [0, 0] and r.details["grid_meaningful"]
    assert iou(r.map >= 0.5, mask) >= 0.8  # measured 0.96 (PNG), 0.91 (q98)
    assert r.score > 0.5 and r.details["regions"][0]["grid"] == [3, 5]
    assert r.details["regions"][0]["log10_nfa"] < 0


def test_grid_single_jpeg_is_clean():
    for quality in (75, 95):
        data = encode_jpeg(photo_pixels("copymove-sails"), quality)
        r = trace_grid(photo(data))
        check_map(r, data)
        assert r.applies and r.details["grid_origin"] == [0, 0]
        assert (r.map >= 0.5).mean() <= 0.05 and r.score < 0.5


def test_grid_misses_a_paste_under_a_quality_90_save():
    """Documented limit: a later save at 90 re-quantizes the paste on the host's grid."""
    data, _ = splice(host_quality=90, donor_quality=70, final_quality=90, shift=(3, 5))
    r = trace_grid(photo(data))
    assert r.applies and r.details["regions"] == []


@pytest.mark.parametrize("final", ["png", 98, 99])
def test_grid_origin_of_a_cropped_jpeg(final):
    rgb = decode(encode_jpeg(photo_pixels(), 80))[3:, 5:]  # 3 rows and 5 columns cut off
    data = encode_png(rgb) if final == "png" else encode_jpeg(rgb, final)
    r = trace_grid(photo(data))
    assert r.applies and r.details["grid_origin"] == [3, 5]  # (x mod 8, y mod 8) of the blocks
    assert "shifted by (3, 5)" in r.reason and r.details["regions"] == []
    # At 98 the file's own grid (0, 0) is meaningful too, but never a foreign region.
    assert float(r.map.max()) == 0.0


def test_grid_not_applicable_without_a_grid(fresh):
    r = trace_grid(photo(encode_png(fresh)))
    assert not r.applies and r.map is None and r.score is None
    assert r.reason.startswith("no JPEG grid found")
    # The same pixels once saved as JPEG show the grid.
    assert trace_grid(photo(encode_jpeg(fresh, 90))).applies


def test_grid_map_follows_exif_rotation():
    rgb, mask = pasted(90, 70, (3, 5))
    data = exif_jpeg(rgb, 98, orientation=6)
    p = photo(data)
    shown = apply_orientation(mask, 6)
    assert p.orientation == 6 and p.decoded.rgb.shape[:2] == shown.shape != mask.shape
    r = trace_grid(p)
    check_map(r, data)
    assert iou(r.map >= 0.5, shown) >= 0.8


@pytest.mark.parametrize("trace", [trace_grid, trace_ghost])
@pytest.mark.parametrize("kind", ["tiny", "flat", "flat-png"])
def test_tiny_and_flat_do_not_crash(trace, kind):
    rgb = np.full((20, 20, 3), 128, np.uint8) if kind == "tiny" else np.full((120, 160, 3), 77, np.uint8)
    if kind == "tiny":
        rgb[5:9, 3:17] = 200
    data = encode_png(rgb) if kind == "flat-png" else encode_jpeg(rgb, 90)
    r = trace(photo(data))
    if r.applies:
        check_map(r, data)
        assert r.score < 0.5
    else:
        assert r.map is None and r.reason


# --- ghost ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("donor_quality", "floor"), [(60, 0.55), (70, 0.65)])
def test_ghost_finds_an_aligned_lower_quality_paste(donor_quality, floor):
    data, mask = splice(host_quality=90, donor_quality=donor_quality, final_quality=90)
    r = trace_ghost(photo(data))
    check_map(r, data)
    assert r.applies and r.details["ghost_quality"] == donor_quality
    assert iou(r.map >= 0.5, mask) >= floor  # measured 0.69 (q60), 0.76 (q70)
    assert r.score >= 0.5
    assert r.details["qualities"][0] == 90 and donor_quality in r.details["qualities"]


def test_ghost_single_jpeg_is_clean():
    for name, quality in [("authentic-hats", 90), ("copymove-sails", 75), ("removal-portrait", 95)]:
        data = encode_jpeg(photo_pixels(name), quality)
        r = trace_ghost(photo(data))
        check_map(r, data)
        assert r.applies and (r.map >= 0.5).mean() <= 0.05
        if r.details["ghost_quality"] is None:
            assert r.reason == "no ghost found" and r.score == 0.0


def test_ghost_is_silent_on_a_misaligned_paste():
    """Documented limit: off the 8x8 grid the paste is re-quantized on another grid, no dip."""
    data, _ = splice(host_quality=90, donor_quality=60, final_quality=90, shift=(3, 5))
    r = trace_ghost(photo(data))
    assert r.applies and r.reason == "no ghost found" and float(r.map.max()) < 0.5


def test_ghost_reads_the_quality_from_the_header_or_the_shared_read():
    p = photo(encode_jpeg(photo_pixels(), 87))
    assert file_quality(p) == 87  # Pillow's header, no coefficient read
    vars(p)["jpeg"] = SimpleNamespace(error=None, qualities={"luma": {"quality": 77}})
    assert file_quality(p) == 77  # what another trace already read
    vars(p)["jpeg"] = SimpleNamespace(error="truncated", qualities={})
    assert file_quality(p) == 87


def test_ghost_not_a_jpeg():
    r = trace_ghost(photo(encode_png(photo_pixels())))
    assert not r.applies and r.reason == "not a JPEG" and r.map is None


def test_ghost_map_follows_exif_rotation():
    rgb, mask = pasted(90, 70, (0, 0))
    data = exif_jpeg(rgb, 90, orientation=8)
    p = photo(data)
    shown = apply_orientation(mask, 8)
    assert p.orientation == 8 and p.decoded.rgb.shape[:2] == shown.shape != mask.shape
    r = trace_ghost(p)
    check_map(r, data)
    assert r.details["ghost_quality"] == 70 and iou(r.map >= 0.5, shown) >= 0.65
