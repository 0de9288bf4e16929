"""imlscan bench reports what it measured (structure and arithmetic, never speed)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from imlscan.cli import app

runner = CliRunner()


def test_bench_json_has_every_setting_and_ratios():
    r = runner.invoke(
        app,
        [
            "bench",
            "--model",
            "sparsevit-test",
            "--size",
            "64",
            "--batch",
            "1,2",
            "--precision",
            "fp32",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    rows = d["results"]
    assert [(x["path"], x["batch"]) for x in rows] == [("plain", 1), ("fast", 1), ("plain", 2), ("fast", 2)]
    for plain, fast in zip(rows[::2], rows[1::2]):
        assert plain["speedup_vs_plain_fp32"] == 1.0
        assert abs(fast["speedup_vs_plain_fp32"] - fast["images_per_s"] / plain["images_per_s"]) < 1e-9
        assert fast["latency_p95_ms"] >= fast["latency_p50_ms"] > 0
        assert abs(fast["tflops"] - 2 * d["gmacs_per_image"] * 1e9 * fast["images_per_s"] / 1e12) < 1e-9


def test_bench_end_to_end_and_native(tmp_path, rng):
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    r = runner.invoke(app, ["bench", "--model", "sparsevit-test", "--size", "64", "--folder", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["images"] == 2 and abs(sum(d["share"].values()) - 1) < 1e-9
    r = runner.invoke(
        app, ["bench", "--model", "sparsevit-test", "--native", "0.05,0.1", "--precision", "fp32", "--json"]
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert len(rows) == 2 and rows[1]["megapixels"] > rows[0]["megapixels"]
    for row in rows:
        assert row["seconds_first"] > 0 and row["seconds"] > 0
        assert abs(row["seconds_per_megapixel"] - row["seconds"] / row["megapixels"]) < 1e-9


def test_bench_bad_batch_is_usage_error():
    r = runner.invoke(app, ["bench", "--batch", "0"])
    assert r.exit_code == 2


def test_bench_cudnn_needs_native():
    """--cudnn only changes native scans; elsewhere it would be silently ignored, so it is refused."""
    r = runner.invoke(app, ["bench", "--model", "sparsevit-test", "--cudnn"])
    assert r.exit_code == 2 and "--native" in r.output and "Traceback" not in r.output


def test_native_bench_warms_up_at_the_tile_shape(monkeypatch):
    """The first timed size must not pay for the tile shape's first run (kernel selection and
    allocator growth on a GPU): the warm-up has to run a full tile before any timed scan."""
    from imlscan.models import create_model
    from imlscan.scanning.bench import run_native_scaling
    from imlscan.scanning.predict import Predictor

    shapes = []
    real = Predictor.predict_prob

    def recording(self, rgb, *a, **k):
        shapes.append(rgb.shape[:2])
        return real(self, rgb, *a, **k)

    monkeypatch.setattr(Predictor, "predict_prob", recording)
    out = run_native_scaling(create_model("sparsevit-test"), [0.02], device="cpu", tile=128, overlap=32)
    assert shapes[0] == (128, 128)
    assert len(shapes) == 3 and out["rows"][0]["tiles"] > 1


def test_bench_times_the_copy_move_matcher_as_its_own_stage(tmp_path, rng, tiny_weights):
    from imlscan.calibrate import attach_copy_move
    from imlscan.scanning.copymove import CopyMoveConfig

    cm = tmp_path / "cm.safetensors"
    attach_copy_move(tiny_weights, cm, CopyMoveConfig(size=64))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    runs = {}
    for flag in ("--copy-move", "--no-copy-move"):
        args = ["bench", "--weights", str(cm), "--size", "64", "--folder", str(photos), "--json", flag]
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        runs[flag] = json.loads(r.stdout)
    on, off = runs["--copy-move"], runs["--no-copy-move"]
    assert (
        on["copy_move"]["size"] == 64 and on["seconds"]["copy_move"] > 0 and abs(sum(on["share"].values()) - 1) < 1e-9
    )
    assert off["copy_move"] is None and "copy_move" not in off["seconds"] and off["copy_move_seconds"] is None
    assert set(on["copy_move_seconds"]) == {"dense"} and on["copy_move_seconds"]["dense"] > 0
    r = runner.invoke(app, ["bench", "--weights", str(cm), "--size", "64", "--folder", str(photos), "--keypoints"])
    assert r.exit_code == 0, r.output
    assert "dense" in r.output and "keypoints" in r.output and "s per photo" in r.output
    r = runner.invoke(
        app, ["bench", "--weights", str(cm), "--size", "64", "--folder", str(photos), "--keypoints", "--json"]
    )
    both = json.loads(r.stdout)
    split = both["copy_move_seconds"]
    assert set(split) == {"dense", "keypoints"} and min(split.values()) > 0
    assert abs(sum(split.values()) - both["seconds"]["copy_move"]) < 1e-9  # the stage, split by detector
    r = runner.invoke(app, ["bench", "--weights", str(cm), "--native", "0.05", "--precision", "fp32", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["copy_move"]["size"] == 64


def test_bench_times_the_weights_scan_uses_unless_told_otherwise(tmp_path, rng):
    from imlscan.weights.store import load_model

    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    args = ["bench", "--folder", str(tmp_path), "--no-copy-move", "--precision", "fp32", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    default = load_model(None, "cpu").weights_info
    assert json.loads(r.stdout)["model"] == (default.path if default is not None else "untrained default")
    r = runner.invoke(app, [*args, "--model", "sparsevit-test"])
    assert r.exit_code == 0 and json.loads(r.stdout)["model"] == "sparsevit-test"
    r = runner.invoke(app, ["bench", "--model", "sparsevit-test", "--weights", "x.safetensors"])
    assert r.exit_code == 2 and "not both" in r.output
