"""The forensic traces under random damage: mutated baseline and progressive JPEGs whose
coefficients jpeglib (libjpeg) reads from the damaged bytes. Whatever the bytes, once the pixels
decode, ``compute_traces`` answers for every trace, quickly, with maps and scores in range and a
strict-JSON report; a trace that cannot read the file says so instead of raising or crashing."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
from fuzzseeds import CALL_SECONDS, JPEG_SEEDS, decode, fuzz, hang_guard, mutated, seeds
from hypothesis import HealthCheck, assume, given, settings

from imlscan.imageio import DecodedImage
from imlscan.safetext import dumps_json
from imlscan.scanning.traces import DEFAULT_TRACES, Photo, compute_traces


def traces(data: bytes, decoded: DecodedImage) -> None:
    with hang_guard(), warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        start = time.perf_counter()
        results = compute_traces(Photo(data, decoded), DEFAULT_TRACES)
        elapsed = time.perf_counter() - start
    assert not leaked, [str(w.message) for w in leaked]
    assert elapsed < CALL_SECONDS
    assert list(results) == list(DEFAULT_TRACES)
    for r in results.values():
        assert isinstance(r.reason, str) and "\n" not in r.reason
        if r.map is not None:
            assert r.map.shape == decoded.rgb.shape[:2] and np.isfinite(r.map).all()
            assert r.map.min() >= 0 and r.map.max() <= 1
        if r.score is not None:
            assert 0 <= r.score <= 1
        json.loads(dumps_json(r.to_dict()))


def test_seeds_have_traces():
    for name in JPEG_SEEDS:
        traces(seeds()[name], decode(seeds()[name]))


@settings(fuzz(80), suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=mutated(JPEG_SEEDS))
def test_damaged_jpegs_never_break_the_traces(data):
    decoded = decode(data)
    assume(decoded is not None)  # the traces read a photo whose pixels decode
    traces(data, decoded)
