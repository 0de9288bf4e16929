"""What the fuzz tests share: real seed files of every format made here with Pillow, the mutations
applied to them, the settings that keep the suite within a minute, and a hard time bound per call.

``IMLSCAN_FUZZ_EXAMPLES=N`` runs every fuzz test with N examples instead of its default (see
README.md in this folder)."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from functools import cache

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from imlscan.errors import ImlscanError
from imlscan.imageio import DecodedImage, decode_bytes
from imlscan.safetext import dumps_json

EXAMPLES = int(os.environ.get("IMLSCAN_FUZZ_EXAMPLES", "0") or 0)
# A call that takes longer has hung: the run stops with every thread's traceback rather than
# waiting for ever (time bounds inside a test are measured, this is the backstop).
HANG_SECONDS = 120


def fuzz(default: int) -> settings:
    """Hypothesis settings: ``default`` examples (``IMLSCAN_FUZZ_EXAMPLES`` overrides), no deadline
    (a loaded shared machine would make it flaky: each test bounds its calls itself), no database."""
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextlib.contextmanager
def hang_guard(seconds: float = HANG_SECONDS) -> Iterator[None]:
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _pixels(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 3, y * 4, (x + y) * 2], axis=2) + rng.integers(0, 40, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@cache
def seeds() -> dict[str, bytes]:
    """One small real file per kind the decoders and metadata readers meet."""
    img = Image.fromarray(_pixels())
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    exif[0x0110] = "Model 1"
    exif[0x0131] = "Editor 2.0"
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_text("Software", "Editor 2.0")
    text.add_text("Comment", "compressed text " * 8, zip=True)
    text.add_itxt("Description", "international text \u00e9", lang="fr")
    frames = [Image.fromarray(_pixels()[:, :, ::-1]).convert("P"), img.convert("P")]
    found = {
        "jpeg_exif": _save(img, "JPEG", quality=85, exif=exif.tobytes()),
        "jpeg_progressive": _save(img, "JPEG", quality=75, progressive=True),
        "png_text": _save(img.convert("RGBA"), "PNG", pnginfo=text, exif=exif.tobytes()),
        "tiff": _save(img, "TIFF", compression="tiff_deflate", exif=exif.tobytes()),
        "gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
    }
    with contextlib.suppress(KeyError, OSError):  # WebP support is optional in Pillow
        found["webp"] = _save(img, "WEBP", quality=80, exif=exif.tobytes())
    return found


JPEG_SEEDS = ("jpeg_exif", "jpeg_progressive")
FLIP = st.tuples(st.integers(0, 16), st.integers(0, 255))  # (offset from the spot, new value)
MARKERS = [b"\xff\xd8", b"\xff\xc0", b"\xff\xda", b"\xff\xdb", b"\xff\xe1\xff\xff", b"IDAT", b"IFD", b""]


@st.composite
def mutated(draw: st.DrawFn, names: tuple[str, ...] | None = None) -> bytes:
    """A seed file damaged the ways real files are: bytes overwritten (mostly in the headers),
    cut short, a run of bytes repeated or removed, or a marker-like run inserted."""
    all_seeds = seeds()
    name = draw(st.sampled_from(sorted(names or all_seeds)))
    b = bytearray(all_seeds[name])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip_head", "flip_any", "cut", "repeat", "drop", "insert"]))
        where = draw(st.floats(0, 1, exclude_max=True))
        span = min(len(b), 1024) if kind == "flip_head" else len(b)
        at = int(where * span) if span else 0
        if kind in ("flip_head", "flip_any"):
            for off, value in draw(st.lists(FLIP, min_size=1, max_size=8)):
                if at + off < len(b):
                    b[at + off] = value
        elif kind == "cut":
            b = b[:at]
        elif kind == "repeat":
            n = draw(st.integers(1, 64))
            b[at:at] = b[at : at + n]
        elif kind == "drop":
            del b[at : at + draw(st.integers(1, 64))]
        else:
            b[at:at] = draw(st.sampled_from(MARKERS))
            b[at:at] = draw(st.binary(max_size=24))
    return bytes(b)


# A damaged header may declare any size: the fuzz decodes under a small pixel limit, so that the
# limit's refusal is exercised too and no example allocates gigabytes.
FUZZ_MAX_PIXELS = 1_000_000
CALL_SECONDS = 20


def decode(data: bytes) -> DecodedImage | None:
    """``decode_bytes`` held to the property: pixels or a one-line ImlscanError, in time, silently."""
    with hang_guard(), warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            decoded = decode_bytes(data, name="fuzz.img", max_pixels=FUZZ_MAX_PIXELS)
        except ImlscanError as e:
            assert e.message.startswith("fuzz.img") and "\n" not in str(e), str(e)
            decoded = None
        elapsed = time.perf_counter() - start
    assert not leaked, [str(w.message) for w in leaked]
    assert elapsed < CALL_SECONDS
    if decoded is not None:
        rgb = decoded.rgb
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
        assert 0 < rgb.shape[0] * rgb.shape[1] <= FUZZ_MAX_PIXELS
        assert all("\n" not in n for n in decoded.notes)
        json.loads(dumps_json(decoded.to_dict()))
    return decoded
