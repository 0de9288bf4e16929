"""Decoding every input kind a newsroom meets, honestly: pixels, orientation, notes, errors."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps, features

from imlscan import inputgate
from imlscan.errors import ImlscanError, UsageError
from imlscan.imageio import (
    DEFAULT_MAX_PIXELS,
    apply_orientation,
    decode_bytes,
    load_image,
    read_mask_png,
    read_prob_png,
    write_mask_png,
    write_prob_png,
)


@pytest.fixture
def photo(rng) -> np.ndarray:
    """A small non-symmetric RGB picture (gradients + noise), so orientation errors show."""
    h, w = 24, 40
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 6, y * 10, (x + y) * 3], axis=2) + rng.integers(0, 20, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_path_input_hash_size_and_format(tmp_path, photo):
    p = save(Image.fromarray(photo), tmp_path / "a.png")
    d = load_image(p)
    assert d.rgb.dtype == np.uint8 and d.rgb.shape == photo.shape
    assert np.array_equal(d.rgb, photo)
    data = p.read_bytes()
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert d.file_size == len(data)
    info = d.to_dict()
    assert info["format"] == "PNG" and info["width"] == 40 and info["height"] == 24
    assert info["orientation"] == {"exif": None, "applied": "none"}
    assert info["path"] == str(p)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pil(tmp_path, photo, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = save(Image.fromarray(photo), tmp_path / "o.png", exif=exif)
    d = load_image(p)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    assert np.array_equal(d.rgb, expected)
    assert d.orientation == orientation
    assert d.rgb.shape[:2] == ((40, 24) if orientation >= 5 else (24, 40))
    assert (d.orientation_applied == "none") == (orientation == 1)


@pytest.mark.parametrize("orientation,turn", [(6, -1), (8, 1)])
def test_exif_rotated_jpeg(tmp_path, photo, orientation, turn):
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = save(Image.fromarray(photo), tmp_path / "rot.jpg", exif=exif, quality=95)
    d = load_image(p)
    assert d.rgb.shape == (40, 24, 3)
    assert d.stored_size == (40, 24)
    assert np.abs(d.rgb.astype(int) - np.rot90(photo, turn).astype(int)).mean() < 6
    assert any(f"orientation {orientation}" in n for n in d.notes)


def test_cmyk_jpeg_converted(tmp_path, photo):
    p = save(Image.fromarray(photo).convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(p).mode == "CMYK"
    d = load_image(p)
    assert d.mode == "CMYK" and d.rgb.shape == photo.shape
    assert np.abs(d.rgb.astype(int) - photo.astype(int)).mean() < 6
    assert any("CMYK" in n for n in d.notes)


def test_16bit_grayscale_png_scaled_not_clipped(tmp_path):
    k = np.arange(256, dtype=np.uint32).reshape(16, 16)
    a16 = (k * 257).astype(np.uint16)
    p = save(Image.fromarray(a16), tmp_path / "g16.png")
    assert Image.open(p).mode.startswith("I;16")
    d = load_image(p)
    assert np.array_equal(d.rgb[:, :, 0], k.astype(np.uint8))
    assert np.array_equal(d.rgb[:, :, 0], d.rgb[:, :, 2])
    assert any("16-bit" in n for n in d.notes)


def test_16bit_rgb_png_keeps_high_byte(tmp_path, rng):
    a = rng.integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    p = tmp_path / "rgb16.png"
    cv2.imwrite(str(p), a[:, :, ::-1])
    d = load_image(p)
    assert np.array_equal(d.rgb, (a >> 8).astype(np.uint8))
    assert any("16 bits per channel" in n for n in d.notes)


def test_rgba_png_composited_on_white(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # pure red
    rgba[0, :, 3] = 0  # transparent row
    rgba[1, :, 3] = 255  # opaque row
    rgba[2:, :, 3] = 128
    p = save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")
    d = load_image(p)
    assert (d.rgb[0] == 255).all()
    assert (d.rgb[1] == [255, 0, 0]).all()
    assert (d.rgb[2:] == [255, 127, 127]).all()  # (0*128 + 255*127 + 127) // 255 = 127
    assert any("composited on a white background" in n for n in d.notes)


def test_opaque_alpha_is_not_called_composited(tmp_path, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    d = load_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "o.png"))
    assert np.array_equal(d.rgb, photo)
    assert not any("composited" in n for n in d.notes)


def test_la_png_composited(tmp_path):
    la = Image.fromarray(np.dstack([np.full((3, 3), 10, np.uint8), np.zeros((3, 3), np.uint8)]), "LA")
    d = load_image(save(la, tmp_path / "la.png"))
    assert (d.rgb == 255).all()


def test_palette_gif(tmp_path, photo):
    pal = Image.fromarray(photo).quantize(colors=16)
    p = save(pal, tmp_path / "p.gif")
    d = load_image(p)
    expected = np.asarray(pal.convert("RGB"))
    assert np.array_equal(d.rgb, expected)
    assert d.format == "GIF" and d.frames == 1
    assert any("palette" in n for n in d.notes) and any("GIF" in n and "first" in n for n in d.notes)


def test_palette_transparency_composited(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 2, 4))
    p = save(img, tmp_path / "t.gif", transparency=0)
    d = load_image(p)
    assert (d.rgb[:, :2] == [255, 0, 0]).all()
    assert (d.rgb[:, 2:] == 255).all()  # the transparent index becomes white, not black


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    d = load_image(p)
    assert d.frames == 3
    assert (d.rgb == [255, 0, 0]).all()
    assert any("3 frames" in n and "first frame" in n for n in d.notes)


def test_gif_cut_inside_a_later_frame_still_gives_the_first(rng):
    # Found by tests/fuzz: Pillow counting the frames raised struct.error or IndexError.
    frames = [Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).convert("P") for _ in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    data = buf.getvalue()
    second = data.find(b"\x21\xf9\x04", data.find(b"\x21\xf9\x04") + 1) + 8  # its image descriptor
    whole = decode_bytes(data)
    for cut in (3, 7, 10):
        d = decode_bytes(data[: second + cut], name="cut.gif")
        assert np.array_equal(d.rgb, whole.rgb)
        assert "GIF damaged after its first frame: the first frame was analysed" in d.notes


@pytest.mark.parametrize("fmt,ext,kw", [("TIFF", "tif", {}), ("BMP", "bmp", {}), ("WEBP", "webp", {"lossless": True})])
def test_lossless_formats_exact(tmp_path, photo, fmt, ext, kw):
    p = save(Image.fromarray(photo), tmp_path / f"x.{ext}", format=fmt, **kw)
    d = load_image(p)
    assert d.format == fmt
    assert np.array_equal(d.rgb, photo)


def test_tiff_orientation_tag(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6
    p = save(Image.fromarray(photo), tmp_path / "r.tif", exif=exif)
    d = load_image(p)  # PIL's TIFF loader turns the pixels itself: they must not turn twice
    assert np.array_equal(d.rgb, np.rot90(photo, -1))
    assert d.orientation == 6 and d.stored_size == (40, 24)
    assert d.orientation_applied == "rotated 90 degrees clockwise"


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_avif(tmp_path, photo):
    p = save(Image.fromarray(photo), tmp_path / "x.avif", quality=95)
    d = load_image(p)
    assert d.format == "AVIF" and d.rgb.shape == photo.shape


def test_heic_without_decoder_says_how_to_install(tmp_path):
    pytest.importorskip("PIL")
    try:
        import pillow_heif  # noqa: F401

        pytest.skip("pillow-heif is installed here")
    except ImportError:
        pass
    p = tmp_path / "IMG_0001.HEIC"
    p.write_bytes(struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0mif1heic" + b"\0" * 64)
    with pytest.raises(ImlscanError) as e:
        load_image(p)
    assert "HEIC" in e.value.message and "imlscan[heic]" in e.value.hint


def test_grayscale_and_bilevel(tmp_path, photo):
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    d = load_image(save(Image.fromarray(gray), tmp_path / "g.png"))
    assert np.array_equal(d.rgb, np.repeat(gray[:, :, None], 3, 2))
    assert any("grayscale" in n for n in d.notes)
    d1 = load_image(save(Image.fromarray(gray > 100), tmp_path / "b.png"))
    assert set(np.unique(d1.rgb)) <= {0, 255}


def test_truncated_jpeg(tmp_path, rng):
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImlscanError) as e:
        load_image(p)
    assert "truncated or corrupt" in e.value.message and str(p) in e.value.message


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImlscanError, match="empty file"):
        load_image(p)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a photo\n")
    with pytest.raises(ImlscanError, match="not an image"):
        load_image(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImlscanError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImlscanError) as e:
        load_image(tmp_path)
    assert "batch" in e.value.hint


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(100_000, 100_000))  # 10 gigapixels declared in 60 bytes
    with pytest.raises(ImlscanError) as e:
        load_image(p)
    assert "decompression bomb" in e.value.message and "10,000,000,000" in e.value.message
    assert "--max-pixels" in e.value.hint
    assert Image.MAX_IMAGE_PIXELS != DEFAULT_MAX_PIXELS  # PIL's global limit is left alone


def test_pixel_limit_is_per_call(tmp_path, photo):
    before = Image.MAX_IMAGE_PIXELS
    p = save(Image.fromarray(photo), tmp_path / "x.png")
    with pytest.raises(ImlscanError, match="decompression bomb"):
        load_image(p, max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == before
    assert load_image(p, max_pixels=960).rgb.shape == photo.shape  # exactly at the limit passes
    assert load_image(p, max_pixels=None).rgb.shape == photo.shape
    assert Image.MAX_IMAGE_PIXELS == before


def test_raising_the_limit_lets_a_large_image_through(tmp_path, monkeypatch):
    # Above PIL's own hard limit (2 x MAX_IMAGE_PIXELS): only our per-call limit decides (and the
    # memory check, switched off here so the test does not depend on the machine's memory).
    monkeypatch.setattr(inputgate, "available_memory", lambda: None)
    data = _png_header_only(20_000, 10_000)
    with pytest.raises(ImlscanError, match="decompression bomb"):
        decode_bytes(data, name="big.png", max_pixels=1_000_000)
    with pytest.raises(ImlscanError, match="truncated or corrupt"):  # allowed, then fails on the empty IDAT
        decode_bytes(data, name="big.png", max_pixels=300_000_000)


def test_pil_and_array_inputs(photo):
    assert np.array_equal(load_image(Image.fromarray(photo)).rgb, photo)
    assert np.array_equal(load_image(photo).rgb, photo)
    with pytest.raises(UsageError):
        load_image(photo.astype(np.float32))
    with pytest.raises(UsageError):
        load_image(photo[:, :, 0])
    with pytest.raises(UsageError):
        load_image(12)


def test_apply_orientation_roundtrip(photo):
    # 6 then 8 (clockwise then counter-clockwise) is the identity; 3 twice too.
    assert np.array_equal(apply_orientation(apply_orientation(photo, 6), 8), photo)
    assert np.array_equal(apply_orientation(apply_orientation(photo, 3), 3), photo)


def test_prob_png_roundtrip(tmp_path, rng):
    prob = rng.random((33, 47)).astype(np.float32)
    prob[0, 0], prob[0, 1] = 0.0, 1.0
    p = tmp_path / "m.prob.png"
    write_prob_png(p, prob)
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == prob.shape
    assert np.array_equal(raw, np.round(prob.astype(np.float64) * 65535).astype(np.uint16))
    back = read_prob_png(p)
    assert back.dtype == np.float32 and back.shape == prob.shape
    assert np.abs(back - prob).max() <= 1 / 65535
    assert back[0, 0] == 0.0 and back[0, 1] == 1.0
    assert not list(tmp_path.glob(".*"))  # atomic write left no temporary behind


def test_mask_png_roundtrip(tmp_path, rng):
    mask = rng.random((20, 30)) > 0.5
    p = tmp_path / "m.mask.png"
    write_mask_png(p, mask)
    assert set(np.unique(cv2.imread(str(p), cv2.IMREAD_UNCHANGED))) <= {0, 255}
    assert np.array_equal(read_mask_png(p), mask)
    with pytest.raises(ImlscanError, match="probability PNG"):
        read_prob_png(p)
