"""Robustness perturbations: strict parsing, determinism, and masks that stay aligned."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.errors import UsageError
from imlscan.eval.perturb import GRAMMAR, Perturbation, Step, parse_perturbation, parse_perturbations

runner = CliRunner()


def test_parse_lists_and_chains():
    settings = parse_perturbations(["jpeg:50,70,90", "blur:3,7", "noise:3", "resize:0.5,0.75", "resize:0.5+jpeg:70"])
    labels = [p.label for p in settings]
    assert labels == [
        "jpeg:50",
        "jpeg:70",
        "jpeg:90",
        "blur:3",
        "blur:7",
        "noise:3",
        "resize:0.5",
        "resize:0.75",
        "resize:0.5+jpeg:70",
    ]
    chain = settings[-1]
    assert chain.steps == (Step("resize", 0.5), Step("jpeg", 70.0))
    assert chain.family == "resize:0.5+jpeg" and chain.strength == 70 and chain.geometric
    assert settings[0].family == "jpeg" and not settings[0].geometric
    assert parse_perturbations(["jpeg:50", "JPEG:50"]) == parse_perturbation("jpeg:50")  # no duplicate rows


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "jpeg",
        "jpeg:",
        "jpeg:0",
        "jpeg:101",
        "jpeg:70.5",
        "jpeg:abc",
        "jpeg:50,,70",
        "blur:4",
        "blur:1",
        "noise:0",
        "noise:-3",
        "resize:0",
        "resize:5",
        "rotate:10",
        "resize:0.5+jpeg:70,90",
        "resize:0.5+",
        "jpeg:50:60",
        "jpeg:nan",
        "resize:inf",
    ],
)
def test_bad_specs_are_usage_errors_with_the_grammar(spec):
    with pytest.raises(UsageError) as e:
        parse_perturbation(spec)
    assert e.value.hint == GRAMMAR and e.value.exit_code == 2


def _square(h=40, w=60):
    rgb = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), bool)
    rgb[8:28, 20:44] = 255
    mask[8:28, 20:44] = True
    return rgb, mask


@pytest.mark.parametrize("spec", ["resize:0.5", "resize:0.75", "resize:1.5", "resize:0.6+jpeg:90", "blur:3"])
def test_geometric_perturbations_keep_image_and_mask_aligned(spec):
    rgb, mask = _square()
    (p,) = parse_perturbation(spec)
    out, m = p.apply(rgb, mask)
    assert m is not None and m.shape == out.shape[:2] and m.dtype == bool
    bright = out.mean(axis=2) > 127
    iou = (bright & m).sum() / (bright | m).sum()
    assert iou > 0.85, (spec, iou)
    if spec == "resize:0.5":
        assert out.shape[:2] == (20, 30) and m.sum() == 10 * 12


def test_photometric_perturbations_keep_shape_and_mask(rng):
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    mask = rng.random((32, 48)) < 0.3
    for spec in ("jpeg:30", "blur:7", "noise:7"):
        (p,) = parse_perturbation(spec)
        out, m = p.apply(rgb, mask, seed=1, index=3)
        assert out.shape == rgb.shape and out.dtype == np.uint8 and m is mask
        assert not np.array_equal(out, rgb)
    assert Perturbation((Step("jpeg", 70),)).apply(rgb, None)[1] is None  # authentic image: no mask


def test_noise_is_deterministic_per_seed_and_image(rng):
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    (p,) = parse_perturbation("noise:5")
    a = p.apply(rgb, None, seed=0, index=1)[0]
    assert np.array_equal(a, p.apply(rgb, None, seed=0, index=1)[0])
    assert not np.array_equal(a, p.apply(rgb, None, seed=0, index=2)[0])
    assert not np.array_equal(a, p.apply(rgb, None, seed=1, index=1)[0])
    assert 3 < np.abs(a.astype(int) - rgb).mean() < 6  # sigma 5 on the 0-255 scale (clipping aside)


def test_cli_bad_perturb_is_one_line_exit_2(tmp_path):
    (tmp_path / "d.json").write_text('[["a.png", "Negative"]]')
    res = runner.invoke(app, ["eval", str(tmp_path / "d.json"), "--perturb", "jpeg:500"])
    assert res.exit_code == 2 and "JPEG quality" in res.stderr and "Traceback" not in res.output
