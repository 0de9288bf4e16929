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
    args = ["bench", "--model", "sparsevit-test", "--size", "64", "--folder", str(tmp_path), "--workers", "0"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["images"] == 2 and [x["path"] for x in d["rows"]] == ["fast", "plain"]
    assert all(abs(sum(x["share"].values()) - 1) < 1e-9 for x in d["rows"])
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
        args = ["bench", "--weights", str(cm), "--size", "64", "--folder", str(photos), "--workers", "0", flag]
        r = runner.invoke(app, [*args, "--no-baseline", "--json"])
        assert r.exit_code == 0, r.output
        runs[flag] = json.loads(r.stdout)
    on, off = runs["--copy-move"], runs["--no-copy-move"]
    assert on["copy_move"]["size"] == 64 and on["rows"][0]["seconds"]["dense"] > 0
    assert "keypoints" not in on["rows"][0]["seconds"]  # these weights carry the dense matcher only
    assert off["copy_move"] is None and "dense" not in off["rows"][0]["seconds"]
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


# --- bench --folder: the real batch run -----------------------------------------------------------


def _photos(folder, rng, n=3):
    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_bench_folder_times_the_real_batch_run_beside_the_plain_network(tmp_path, rng, tiny_weights):
    """One row per setting and the plain row last; each row's stages are what the batch run
    recorded: they cover every default stage, fit inside the side's busy time, and their
    shares sum to 1; the keypoint detector is counted on the side where it ran."""
    from imlscan.calibrate import attach_copy_move, attach_keypoints
    from imlscan.scanning.copymove import CopyMoveConfig
    from imlscan.scanning.copymove_keypoints import KeypointConfig
    from imlscan.scanning.traces import DEFAULT_TRACES

    dense = attach_copy_move(tiny_weights, tmp_path / "cm.safetensors", CopyMoveConfig(size=64))
    weights = attach_keypoints(dense, tmp_path / "kp.safetensors", KeypointConfig(min_inliers=5))
    photos = _photos(tmp_path / "photos", rng)
    args = ["bench", "--weights", str(weights), "--size", "64", "--folder", str(photos), "--precision", "fp32"]
    r = runner.invoke(app, [*args, "--workers", "0,1", "--keypoints-in", "main,workers", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["images"] == 3 and d["megapixels"] > 0 and d["traces"] == list(DEFAULT_TRACES)
    rows = d["rows"]
    assert [(x["path"], x["workers"], x["keypoints_in"]) for x in rows] == [
        ("fast", 0, "main"),
        ("fast", 0, "workers"),
        ("fast", 1, "main"),
        ("fast", 1, "workers"),
        ("plain", 0, "main"),
    ]
    plain = rows[-1]
    assert plain["speedup_vs_plain"] == 1.0 and plain["network_speedup_vs_plain"] == 1.0
    stages = {"read", "decode", "provenance", "preprocess", "network", "dense", "keypoints", "fusion", "result"}
    stages |= {"write", "aggregates", "trace_setup"} | {f"trace:{t}" for t in DEFAULT_TRACES}
    for x in rows:
        assert x["images"] == 3 and x["photos_per_s"] > 0
        assert abs(x["photos_per_s"] - 3 / x["wall_s"]) < 1e-9
        assert abs(x["speedup_vs_plain"] - x["photos_per_s"] / plain["photos_per_s"]) < 1e-9
        assert set(x["seconds"]) == stages and min(x["seconds"].values()) >= 0
        assert abs(sum(x["share"].values()) - 1) < 1e-9
        assert abs(x["main_busy_s"] + x["main_wait_s"] - x["wall_s"]) < 1e-9
        on = {side: sum(v for k, v in x["seconds"].items() if x["side"][k] == side) for side in ("main", "workers")}
        assert on["main"] <= x["main_busy_s"] and on["workers"] <= x["worker_busy_s"]
        assert x["side"]["network"] == x["side"]["dense"] == x["side"]["write"] == "main"
        assert x["side"]["decode"] == x["side"]["trace:adq"] == ("workers" if x["workers"] else "main")
        assert x["side"]["keypoints"] == ("workers" if x["workers"] and x["keypoints_in"] == "workers" else "main")
        assert x["limited_by"] in ("main", "workers") and 0 < x["cpu_use"]
    assert rows[0]["worker_cpu_s"] == 0 and rows[2]["worker_cpu_s"] > 0  # inline, the main process holds it
    r = runner.invoke(app, [*args, "--workers", "0", "--no-baseline"])
    assert r.exit_code == 0, r.output
    assert "photos/s" in r.output and "trace:adq" in r.output and "keypoints" in r.output


def test_bench_folder_refuses_bad_settings_in_one_line(tmp_path, rng):
    photos = _photos(tmp_path / "photos", rng, n=1)
    base = ["bench", "--model", "sparsevit-test", "--size", "64", "--folder", str(photos)]
    for extra, says in (
        (["--workers", "-1"], "--workers"),
        (["--workers", "x"], "--workers"),
        (["--batch-size", "0"], "--batch-size"),
        (["--keypoints-in", "gpu"], "keypoint placement"),
    ):
        r = runner.invoke(app, [*base, *extra])
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, (extra, r.output)
    r = runner.invoke(app, ["bench", "--model", "sparsevit-test", "--folder", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "not found" in r.output


def test_timing_hooks_change_no_map(tiny_weights, tmp_path):
    """``predict_parts(seconds=...)`` times the keypoint detector apart from the dense matcher by
    running it before ``image_map``: the maps must be those ``image_map`` makes on its own."""
    import cv2

    from imlscan.scanning.copymove import fuse
    from imlscan.scanning.predict import Predictor, _to_original
    from imlscan.weights.store import load_model
    from tests.test_copymove_keypoints import _forged, _weights_with_keypoints

    pred = Predictor(load_model(_weights_with_keypoints(tiny_weights, tmp_path), "cpu"), mode="resize", size=64)
    rgb = cv2.resize(_forged(25, 1.1, False)[0], (300, 280), interpolation=cv2.INTER_LINEAR)
    seconds: dict[str, float] = {}
    ((fused, cm),) = pred.predict_parts([rgb], seconds=seconds)
    assert set(seconds) == {"preprocess", "network", "dense", "keypoints"} and min(seconds.values()) > 0
    prob = pred._probs([pred.model_input(rgb)])[0]
    s = pred.copy_move.config.size
    small = cv2.resize(rgb, (s, s), interpolation=cv2.INTER_LINEAR)
    own = pred.copy_move.image_map(small, pred.to_tensor([small]), prob.shape, None)  # detects by itself
    assert own.max() > 0.9  # a copy was found: the comparison is not between two empty maps
    np.testing.assert_array_equal(cm, _to_original(own, rgb.shape[:2]))
    np.testing.assert_array_equal(fused, _to_original(fuse(prob, own), rgb.shape[:2]))
    np.testing.assert_array_equal(fused, pred.predict_batch([rgb])[0])  # untimed: the same


def test_a_profiled_batch_run_writes_the_same_files(tiny_weights, tmp_path, rng):
    """The profile only reads clocks: every file a batch run writes is the same with it as
    without it (the reports but for the times they hold)."""
    from imlscan.scanning.batch import BatchOptions, BatchProfile, run_batch
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model
    from tests.test_copymove_keypoints import _weights_with_keypoints

    pred = Predictor(load_model(_weights_with_keypoints(tiny_weights, tmp_path), "cpu"), mode="resize", size=64)
    photos = _photos(tmp_path / "photos", rng)
    outs = {}
    for profiled in (False, True):
        profile = BatchProfile() if profiled else None
        out = tmp_path / f"out-{profiled}"
        opts = BatchOptions(out_dir=out, workers=0, batch_size=2, mask=True, prob=True)
        run_batch(photos, pred, opts, profile=profile)
        files = {}
        for p in sorted(out.rglob("*")):
            if p.suffix == ".json":
                files[p.name] = _untimed(json.loads(p.read_text()))
            elif p.is_file() and p.name not in ("results.jsonl", "index.html"):
                files[p.name] = p.read_bytes()
        outs[profiled] = files
        assert profile is None or profile.images == 3
    assert len(outs[True]) == 3 * 5 + 1 and outs[True] == outs[False]  # json, overlay, mask, prob, thumbnail


def _untimed(report):
    """A report without what a clock wrote into it: timings, seconds, the creation time."""
    if isinstance(report, dict):
        return {k: _untimed(v) for k, v in report.items() if k not in ("timings", "seconds", "elapsed_s", "created")}
    if isinstance(report, list):
        return [_untimed(v) for v in report]
    return report
