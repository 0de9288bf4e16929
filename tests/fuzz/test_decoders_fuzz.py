"""The decoder under random damage: mutated JPEG (with EXIF, progressive), PNG with text chunks,
TIFF, WebP and animated GIF files. Whatever the bytes, ``decode_bytes`` returns RGB pixels or
raises a one-line ImlscanError, quickly, and no Pillow warning escapes."""

from __future__ import annotations

from fuzzseeds import decode, fuzz, mutated, seeds
from hypothesis import given


def test_every_seed_decodes():
    for name, data in seeds().items():
        assert decode(data) is not None, name


@fuzz(250)
@given(data=mutated())
def test_damaged_files_decode_or_fail_in_one_line(data):
    decode(data)
