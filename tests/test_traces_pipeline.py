"""The forensic traces inside the product: `imlscan traces`, scan, batch, eval, the fusion rule
stored in a weights file, and the HTML report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from jpeg_forgeries import encode_png, photo_pixels, splice
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.scanning.fusion import FusionRule
from imlscan.scanning.predict import Predictor, scan
from imlscan.scanning.traces import DEFAULT_TRACES, TRACE_VERSIONS
from imlscan.weights.store import load_model, read_metadata, rewrite_metadata

runner = CliRunner()
RULE = FusionRule(terms={"adq": (0.5, 6.0), "grid": (0.2, 3.0), "noise": (0.0, 1.0)}, fitted={"dataset": "test"})


@pytest.fixture
def files(tmp_path):
    """A splice with a JPEG history (host q70 -> paste -> q90), its mask, and a PNG photo."""
    data, mask = splice(host_quality=70, donor_quality=None, final_quality=90)
    jpg = tmp_path / "splice.jpg"
    jpg.write_bytes(data)
    png = tmp_path / "plain.png"
    png.write_bytes(encode_png(photo_pixels("removal-portrait")))
    return jpg, png, mask


@pytest.fixture
def fused_weights(tiny_weights, tmp_path):
    out = tmp_path / "fused.safetensors"
    rewrite_metadata(tiny_weights, out, {"fusion": RULE.to_dict()})
    return out


def test_traces_cli_writes_a_picture_and_strict_json_per_trace(files, tmp_path):
    jpg, png, _ = files
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = runner.invoke(app, ["traces", str(jpg), str(png), str(bad), "--out", str(tmp_path / "t"), "--json"])
    assert res.exit_code == 1 and "bad.jpg" in res.stderr and "Traceback" not in res.output
    for stem in ("splice", "plain"):
        report = json.loads((tmp_path / "t" / f"{stem}.traces.json").read_text())
        assert list(report["traces"]) == list(DEFAULT_TRACES)
        for name in DEFAULT_TRACES:
            assert (tmp_path / "t" / f"{stem}.trace-{name}.png").stat().st_size > 0
    plain = json.loads((tmp_path / "t" / "plain.traces.json").read_text())["traces"]
    assert not plain["adq"]["applies"] and "not a JPEG" in plain["adq"]["reason"]
    assert plain["ela"]["fusable"] is False
    res = runner.invoke(app, ["traces", str(png), "--traces", "nope"])
    assert res.exit_code == 2 and "unknown trace" in res.stderr


def test_scan_shows_traces_but_keeps_the_map_without_a_fusion_rule(tiny_weights, files):
    jpg, _, _ = files
    model = load_model(str(tiny_weights), device="cpu")
    with_traces = scan(jpg, Predictor(model))
    without = scan(jpg, Predictor(model, traces=()))
    assert np.array_equal(with_traces.prob, without.prob)
    assert list(with_traces.traces) == list(DEFAULT_TRACES) and without.traces == {}
    d = json.loads(json.dumps(with_traces.to_dict(), allow_nan=False))
    assert d["fusion"]["applied"] is False and d["traces"]["adq"]["applies"] is True  # q70 -> q90: found
    assert with_traces.timings["traces_s"] > 0 and without.fusion is None


def test_a_fusion_rule_in_the_weights_changes_jpegs_and_leaves_pngs_alone(tiny_weights, fused_weights, files, tmp_path):
    jpg, png, mask = files
    plain = Predictor(load_model(str(tiny_weights), device="cpu"))
    fused = Predictor(load_model(str(fused_weights), device="cpu"))
    assert fused.fusion == RULE
    # A rule of JPEG traces only: a PNG that never was a JPEG is scored exactly as without it.
    jpeg_only = tmp_path / "jpeg-only.safetensors"
    rewrite_metadata(tiny_weights, jpeg_only, {"fusion": FusionRule(terms={"adq": (0.5, 6.0)}).to_dict()})
    a, b = scan(png, plain), scan(png, Predictor(load_model(str(jpeg_only), device="cpu")))
    assert not b.traces["adq"].applies and b.fusion["applied"] is False and np.array_equal(a.prob, b.prob)
    ja, jb = scan(jpg, plain), scan(jpg, fused)
    assert jb.traces["adq"].applies and jb.fusion["applied"] and "adq" in jb.fusion["contributions_logit"]
    moved = jb.fusion["pixels_moved"]["adq"]
    assert 0 < moved["raised_share"] <= 1 and 0 <= moved["lowered_share"] <= 1
    from imlscan.scanning.report import render_html

    assert f"raising {100 * moved['raised_share']:.1f}% of the pixels" in render_html(jb)
    # RULE records no trace versions: fitted on adq version 1, so the report says the map differs
    # from the one such weights were evaluated with; a rule fitted on today's traces says nothing.
    assert "adq version 1, this is version 2" in jb.fusion["note"] and "Note: the rule" in render_html(jb)
    current = tmp_path / "current.safetensors"
    fitted = {"trace_versions": dict(TRACE_VERSIONS)}
    rewrite_metadata(tiny_weights, current, {"fusion": FusionRule(terms=RULE.terms, fitted=fitted).to_dict()})
    assert "note" not in scan(jpg, Predictor(load_model(str(current), device="cpu"))).fusion
    inside, outside = jb.prob[mask].mean() - ja.prob[mask].mean(), jb.prob[~mask].mean() - ja.prob[~mask].mean()
    assert inside > outside  # the trace pushes the pasted region up relative to the rest


def test_html_report_has_a_panel_per_trace_and_escapes_reasons(tiny_weights, files, tmp_path):
    jpg, _, _ = files
    res = runner.invoke(app, ["scan", str(jpg), "--out", str(tmp_path / "o"), "--html", "--weights", str(tiny_weights)])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "o" / "splice.html").read_text()
    assert page.count("<figure class='trace'>") == len(DEFAULT_TRACES) and "Forensic traces" in page
    assert "weak evidence" in page and "data:image/jpeg;base64," in page
    report = json.loads((tmp_path / "o" / "splice.json").read_text())
    assert set(report["traces"]) == set(DEFAULT_TRACES)


def test_batch_computes_traces_in_its_workers_and_they_change_the_settings_key(
    tiny_weights, files, tmp_path, monkeypatch
):
    from imlscan.scanning.batch import settings_key

    jpg, png, _ = files
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpg.read_bytes())
    (folder / "b.png").write_bytes(png.read_bytes())
    args = ["batch", str(folder), "--out", str(tmp_path / "out"), "--weights", str(tiny_weights), "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    rec = json.loads((tmp_path / "out" / "a.jpg.json").read_text())
    assert rec["traces"]["adq"]["applies"] and rec["timings"]["traces_s"] > 0
    assert rec["traces"]["adq"]["version"] == TRACE_VERSIONS["adq"]  # which method made the map
    model = load_model(str(tiny_weights), device="cpu")
    key = settings_key(Predictor(model), 0.5)
    assert key != settings_key(Predictor(model, traces=()), 0.5)
    # A trace whose method changed gives other maps: results made with the old one are rescanned.
    monkeypatch.setitem(TRACE_VERSIONS, "adq", TRACE_VERSIONS["adq"] + 1)
    assert settings_key(Predictor(model), 0.5) != key


def _history_set(tmp_path, n: int = 4):
    folder = tmp_path / "set"
    (folder / "m").mkdir(parents=True)
    pairs = []
    for i in range(n):
        data, mask = splice(host_quality=70, donor_quality=None, final_quality=90, box=(48 + 8 * i, 56, 80, 96))
        (folder / f"{i}.jpg").write_bytes(data)
        (folder / "m" / f"{i}.png").write_bytes(encode_png(np.repeat(mask[..., None] * 255, 3, 2).astype(np.uint8)))
        pairs.append([f"{i}.jpg", f"m/{i}.png"])
    (folder / "pairs.json").write_text(json.dumps(pairs))
    return folder / "pairs.json"


def test_eval_scores_a_trace_alone_the_network_alone_and_the_fused_map(tiny_weights, fused_weights, tmp_path):
    pairs = _history_set(tmp_path)
    base = ["eval", str(pairs), "--device", "cpu", "--workers", "0", "--bootstrap", "0", "--json"]

    def run(*extra):
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    alone = run("--weights", str(tiny_weights), "--trace-alone", "adq")
    assert alone["traces"]["alone"] == "adq" and alone["metrics"]["pixel_f1"] > 0.5  # the trace finds the pastes
    net = run("--weights", str(fused_weights), "--traces", "none")
    plain = run("--weights", str(tiny_weights))
    assert net["metrics"]["pixel_auc"] == plain["metrics"]["pixel_auc"] and net["traces"]["fusion"] is None
    fused = run("--weights", str(fused_weights))
    assert fused["traces"]["fusion"]["terms"]["adq"]["weight"] == 6.0
    assert fused["metrics"]["pixel_auc"] > plain["metrics"]["pixel_auc"]
    only_grid = run("--weights", str(fused_weights), "--traces", "grid")
    assert list(only_grid["traces"]["fusion"]["terms"]) == ["grid"]


def test_weights_fuse_fits_a_rule_stores_it_and_reproduces(tiny_weights, tmp_path):
    pairs = _history_set(tmp_path, 3)
    outs = []
    for k in (1, 2):
        out = tmp_path / f"f{k}.safetensors"
        args = ["weights", "fuse", str(tiny_weights), str(pairs), "--out", str(out), "--pixels", "256", "--json"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        outs.append(read_metadata(out)["fusion"])
    assert outs[0] == outs[1]  # deterministic
    rule = FusionRule.from_dict(outs[0])
    # the default fits adq alone (defaults.DEFAULT_FUSION_TRACES): its bias-free term moves no pixel
    # where the file shows no double quantization, so a re-saved photo is scored as the network scores it
    assert set(rule.terms) == {"adq"} and rule.terms["adq"] == (0.0, rule.terms["adq"][1])
    assert rule.terms["adq"][1] > 0
    assert rule.fitted["log_loss_fused"] < rule.fitted["log_loss_network_alone"]
    assert "ela" not in rule.terms


def test_no_traces_flag_skips_them_in_scan_and_batch(tiny_weights, files, tmp_path):
    jpg, _, _ = files
    res = runner.invoke(
        app, ["scan", str(jpg), "--out", str(tmp_path / "o"), "--no-traces", "--weights", str(tiny_weights)]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "splice.json").read_text())
    assert report["traces"] == {} and report["fusion"] is None and report["timings"]["traces_s"] == 0


def test_weights_fuse_refuses_a_calibrated_file_whose_references_it_cannot_recompute(tiny_weights, tmp_path):
    """A fused map ranked among unfused reference scores would mislead: refused before the long part."""
    pairs = _history_set(tmp_path, 1)
    calibrated = tmp_path / "cal.safetensors"
    calibration = {"threshold": 0.5, "authentic_scores": [0.1, 0.2], "dataset": str(tmp_path / "gone.json")}
    rewrite_metadata(tiny_weights, calibrated, {"calibration": calibration})
    res = runner.invoke(app, ["weights", "fuse", str(calibrated), str(pairs), "--out", str(tmp_path / "f.safetensors")])
    assert res.exit_code == 2 and "--references" in res.stderr and not (tmp_path / "f.safetensors").exists()
