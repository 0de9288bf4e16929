"""Threshold calibration: the search is exact on the grid and the shifted file means what it says."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.eval.metrics import MetricAccumulator, grid_thresholds, pixel_f1
from imlscan.scanning.result import SCORE_VERSION

runner = CliRunner()


def _maps(rng, n_man=6, n_auth=4, size=24):
    """Manipulated maps where the region scores ~0.3 and the rest ~0.1, authentic maps with a
    bright blob: the best F1 is far below 0.5, and a cap on authentic flags pushes it up."""
    man, auth = [], []
    for i in range(n_man):
        m = np.zeros((size, size), bool)
        m[4 : 10 + i, 3:15] = True
        p = np.where(m, rng.uniform(0.15, 0.45, m.shape), rng.uniform(0.0, 0.25, m.shape))
        man.append((p, m))
    for _ in range(n_auth):
        p = rng.uniform(0.0, 0.2, (size, size))
        p[:6, :6] = rng.uniform(0.1, 0.35, (6, 6))
        auth.append((p, np.zeros((size, size), bool)))
    return man, auth


@pytest.mark.parametrize("cap", [None, 0.02, 0.0])
def test_calibrated_threshold_is_the_brute_force_optimum(rng, cap):
    bins = 200
    man, auth = _maps(rng)
    acc = MetricAccumulator(bins=bins)
    for p, m in man + auth:
        acc.update(p, m)
    t, f1, fpr = acc.calibrated_threshold(cap)
    best = (-1.0, None, None)
    for th in grid_thresholds(bins):
        mean_f1 = float(np.mean([pixel_f1(p, m, th) for p, m in man]))
        mean_fpr = float(np.mean([(p > th).mean() for p, _ in auth]))
        if (cap is None or mean_fpr <= cap) and mean_f1 > best[0] + 1e-12:
            best = (mean_f1, th, mean_fpr)
    assert t == pytest.approx(best[1])
    assert f1 == pytest.approx(best[0], abs=1e-12)
    assert fpr == pytest.approx(best[2], abs=1e-12)
    if cap is not None:
        assert fpr <= cap


def test_cap_raises_the_threshold(rng):
    man, auth = _maps(rng)
    acc = MetricAccumulator(bins=200)
    for p, m in man + auth:
        acc.update(p, m)
    free, _, fpr_free = acc.calibrated_threshold(None)
    capped, _, fpr_capped = acc.calibrated_threshold(0.0)
    assert free < 0.5 and fpr_free > 0.0
    assert capped > free and fpr_capped == 0.0


@pytest.fixture
def dataset(calib_pairs):
    return calib_pairs


def _logits(path, rgb):
    from imlscan.weights.store import load_model

    model = load_model(path, "cpu")
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        return model(x)


def _calibrate(src, dataset, out, *extra: str):
    """``imlscan weights calibrate`` on CPU without worker processes, every authentic flag allowed."""
    return runner.invoke(
        app,
        ["weights", "calibrate", str(src), str(dataset), "--out", str(out), "--device", "cpu"]
        + ["--workers", "0", "--max-authentic-fpr", "1", *extra],
    )


def test_cli_writes_a_shifted_copy_whose_masks_at_half_are_the_old_masks_at_t(tmp_path, dataset, tiny_weights):
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model, read_metadata

    out = tmp_path / "cal.safetensors"
    res = _calibrate(tiny_weights, dataset, out, "--json")
    assert res.exit_code == 0, res.output
    cal = json.loads(res.stdout)
    meta = read_metadata(out)
    ref = meta["calibration"].pop("authentic_scores")
    assert ref == cal.pop("authentic_scores") and len(ref) == 1
    assert meta["calibration"] == pytest.approx(cal)
    assert cal["n_manipulated"] == 3 and cal["n_authentic"] == 1
    assert cal["logit_offset"] == pytest.approx(-math.log(cal["threshold"] / (1 - cal["threshold"])))
    assert cal["f1_after"] >= cal["f1_before"]
    assert meta["tensors_sha256"] != read_metadata(tiny_weights)["tensors_sha256"]

    rgb = cv2.resize(np.asarray(Image.open(dataset.parent / "im0.png")), (512, 512), interpolation=cv2.INTER_LINEAR)
    diff = _logits(out, rgb) - _logits(tiny_weights, rgb)
    assert torch.allclose(diff, torch.full_like(diff, cal["logit_offset"]), atol=1e-4)

    old = Predictor(load_model(tiny_weights, "cpu"), mode="resize").predict_prob(rgb)
    new = Predictor(load_model(out, "cpu"), mode="resize").predict_prob(rgb)
    near = np.abs(old - cal["threshold"]) < 1e-4
    assert np.array_equal((new > 0.5)[~near], (old > cal["threshold"])[~near])

    again = tmp_path / "cal2.safetensors"
    res = runner.invoke(
        app,
        ["weights", "calibrate", str(out), str(dataset), "--out", str(again), "--device", "cpu", "--workers", "0"]
        + ["--max-authentic-fpr", "1"],
    )
    assert res.exit_code == 0, res.output
    second = read_metadata(again)["calibration"]
    assert second["total_logit_offset"] == pytest.approx(cal["logit_offset"] + second["logit_offset"])


def test_cli_errors_are_one_line(tmp_path, dataset, tiny_weights):
    res = runner.invoke(app, ["weights", "calibrate", str(tiny_weights), str(dataset), "--out", str(tiny_weights)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "--out must differ" in res.output

    only_auth = tmp_path / "auth.json"
    only_auth.write_text(json.dumps([[str(dataset.parent / "im3.png"), "Negative"]]))
    res = runner.invoke(
        app,
        ["weights", "calibrate", str(tiny_weights), str(only_auth), "--out", str(tmp_path / "x.safetensors")]
        + ["--workers", "0", "--device", "cpu"],
    )
    assert res.exit_code == 1 and "no manipulated image" in res.output
    assert not (tmp_path / "x.safetensors").exists()

    res = runner.invoke(
        app,
        ["weights", "calibrate", str(tiny_weights), str(dataset), "--out", str(tmp_path / "y.safetensors")]
        + ["--max-authentic-fpr", "2"],
    )
    assert res.exit_code == 2 and "outside [0, 1]" in res.output

    # Both arguments wrong: the first one named (the weights) is the one reported.
    res = runner.invoke(
        app,
        ["weights", "calibrate", str(tmp_path / "nope.safetensors"), str(tmp_path / "nope.json")]
        + ["--out", str(tmp_path / "z.safetensors"), "--device", "cpu"],
    )
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "nope.safetensors" in res.output and "nope.json" not in res.output


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_authentic_reference_is_what_scan_computes(tmp_path, rng, tiny_model, dtype):
    """The stored reference must be the scores 'imlscan scan' gives the calibrated file (its mode,
    the original resolution, the shifted and re-stored bias), or the percentages mean nothing."""
    from imlscan.weights.store import read_metadata, save_weights

    src = tmp_path / "tiny.safetensors"
    save_weights(tiny_model, src, name="tiny-test", variant="sparsevit-test", dtype=dtype)
    root = tmp_path / "calib"
    root.mkdir()
    pairs = []
    for i in range(5):
        h, w = 40 + 8 * i, 72 - 4 * i
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"im{i}.png")
        if i < 2:
            m = np.zeros((h, w), np.uint8)
            m[5:25, 10:40] = 255
            Image.fromarray(m).save(root / f"gt{i}.png")
            pairs.append([f"im{i}.png", f"gt{i}.png"])
        else:
            pairs.append([f"im{i}.png", "Negative"])
    (root / "pairs.json").write_text(json.dumps(pairs))
    out = tmp_path / "cal.safetensors"
    res = runner.invoke(
        app,
        ["weights", "calibrate", str(src), str(root / "pairs.json"), "--out", str(out), "--device", "cpu"]
        + ["--workers", "0", "--max-authentic-fpr", "1"],
    )
    assert res.exit_code == 0, res.output
    assert "3 stored, median" in res.output
    ref = read_metadata(out)["calibration"]["authentic_scores"]
    assert len(ref) == 3 and ref == sorted(ref)

    scanned = {}
    for i in range(2, 5):
        res = runner.invoke(
            app,
            [
                "scan",
                str(root / f"im{i}.png"),
                "--weights",
                str(out),
                "--device",
                "cpu",
                "--json",
                "--html",
                "-o",
                str(tmp_path / "s"),
            ],
        )
        assert res.exit_code == 0, res.output
        rep = json.loads(res.stdout)
        scanned[rep["score"]] = rep["score_vs_authentic"]
    assert sorted(scanned) == pytest.approx(ref, abs=1e-5)
    ranks = [scanned[s] for s in sorted(scanned)]
    assert len(set(np.round(ref, 5))) == 3
    assert [r["percent_lower"] for r in ranks] == pytest.approx([0.0, 33.3, 66.7])
    assert all(r["n_authentic"] == 3 and "not a probability" in r["definition"] for r in ranks)
    for i in range(2, 5):
        rep = json.loads((tmp_path / "s" / f"im{i}.json").read_text())
        html = (tmp_path / "s" / f"im{i}.html").read_text()
        assert f"Score higher than <b>{rep['score_vs_authentic']['percent_lower']:g}%</b> of the 3 authentic" in html

    (root / "gt0.png").unlink()  # only the photos in the batch
    (root / "gt1.png").unlink()
    (root / "pairs.json").unlink()
    res = runner.invoke(
        app,
        ["batch", str(root), "--out", str(tmp_path / "b"), "--weights", str(out), "--device", "cpu"]
        + ["--workers", "0", "--no-overlay"],
    )
    assert res.exit_code == 0, res.output
    import csv

    rows = {r["relpath"]: r for r in csv.DictReader((tmp_path / "b" / "summary.csv").open())}
    for i in range(2, 5):
        rep = json.loads((tmp_path / "s" / f"im{i}.json").read_text())
        assert float(rows[f"im{i}.png"]["authentic_percent_lower"]) == rep["score_vs_authentic"]["percent_lower"]


def test_authentic_rank_counts_strictly_lower_scores():
    from imlscan.scanning.result import authentic_rank

    cal = {"authentic_scores": [0.1, 0.2, 0.2, 0.9], "n_authentic": 4, "dataset": "d", "score_version": SCORE_VERSION}
    assert authentic_rank(0.05, cal)["percent_lower"] == 0.0
    assert authentic_rank(0.2, cal)["percent_lower"] == 25.0
    assert authentic_rank(0.5, cal)["percent_lower"] == 75.0
    assert authentic_rank(0.95, cal)["percent_lower"] == 100.0
    assert authentic_rank(0.5, {"threshold": 0.4}) is None
    assert authentic_rank(0.5, None) is None


def test_upfront_precision_note_agrees_with_the_per_scan_warning():
    """The note a batch prints before scanning must say what each scan's warning says."""
    from imlscan.scanning.result import authentic_rank, precision_mismatch_warning, rank_precision_note

    old = {"authentic_scores": [0.1, 0.9], "score_version": SCORE_VERSION}  # before reference_precision: fp32
    bf16_ref = {"authentic_scores": [0.1, 0.9], "reference_precision": "bf16", "score_version": SCORE_VERSION}
    for cal in (old, bf16_ref, {"threshold": 0.4}, None):
        for precision in ("fp32", "bf16", "fp16"):
            per_scan = precision_mismatch_warning(authentic_rank(0.5, cal, precision))
            assert rank_precision_note(cal, precision) == per_scan
    assert rank_precision_note(old, "bf16") and "--precision fp32" in rank_precision_note(old, "bf16")
    assert rank_precision_note(bf16_ref, "bf16") is None
    assert rank_precision_note(None, "bf16") is None


def test_scan_without_reference_says_so(tmp_path, tiny_weights):
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "a.png")
    res = runner.invoke(
        app,
        ["scan", str(tmp_path / "a.png"), "--weights", str(tiny_weights), "--device", "cpu"]
        + ["--json", "-o", str(tmp_path / "o")],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["score_vs_authentic"] is None


def test_off_protocol_scan_has_no_reference(tmp_path, dataset, tiny_weights):
    """A native-mode score is not comparable with references scored resized: no percentage."""
    out = tmp_path / "cal.safetensors"
    res = _calibrate(tiny_weights, dataset, out)
    assert res.exit_code == 0, res.output
    img = str(dataset.parent / "im3.png")
    base = ["scan", img, "--weights", str(out), "--device", "cpu", "--json", "-o", str(tmp_path / "o")]
    assert json.loads(runner.invoke(app, base).stdout)["score_vs_authentic"]["n_authentic"] == 1
    native = json.loads(runner.invoke(app, [*base, "--mode", "native"]).stdout)
    assert native["score_vs_authentic"] is None and native["preprocessing"]["override_note"]


def test_scan_at_another_precision_than_the_reference_is_marked(tmp_path, dataset, tiny_weights):
    """References are scored in fp32: a bf16 scan still gets a rank, flagged as approximate."""
    out = tmp_path / "cal.safetensors"
    res = _calibrate(tiny_weights, dataset, out, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["reference_precision"] == "fp32"
    img = str(dataset.parent / "im3.png")
    base = ["scan", img, "--weights", str(out), "--device", "cpu", "--json", "-o", str(tmp_path / "o")]
    same = json.loads(runner.invoke(app, base).stdout)
    assert same["score_vs_authentic"]["scan_precision"] == "fp32"
    assert not any("approximate" in w for w in same["warnings"])
    res = runner.invoke(app, [*base, "--precision", "bf16"])
    assert res.exit_code == 0, res.output
    bf16 = json.loads(res.stdout)
    rank = bf16["score_vs_authentic"]
    assert rank["scan_precision"] == "bf16" and rank["reference_precision"] == "fp32"
    assert rank["n_authentic"] == 1
    assert [w for w in bf16["warnings"] if "approximate" in w and "--precision fp32" in w]
    assert res.stderr.count("note: score_vs_authentic compares a bf16 score") == 1  # once, before the table
    assert "approximate" not in runner.invoke(app, base).stderr


def test_references_of_an_older_score_give_no_rank_until_recomputed(tmp_path, dataset, tiny_weights):
    """A file whose references were scored with the earlier score definition (no score_version)
    gets no score_vs_authentic and a warning naming the fix; 'weights references' rescored
    them with today's score, tensors untouched, and the rank comes back."""
    from safetensors.torch import load_file

    from imlscan.weights.store import read_metadata, rewrite_metadata

    cal = tmp_path / "cal.safetensors"
    assert _calibrate(tiny_weights, dataset, cal).exit_code == 0
    entry = read_metadata(cal)["calibration"]
    assert entry["score_version"] == SCORE_VERSION
    old = tmp_path / "old.safetensors"
    stale = {k: v for k, v in entry.items() if k != "score_version"} | {"authentic_scores": [0.99]}
    rewrite_metadata(cal, old, {"calibration": stale})

    img = str(dataset.parent / "im3.png")
    base = ["scan", img, "--device", "cpu", "--json", "-o", str(tmp_path / "o"), "--weights"]
    res = runner.invoke(app, [*base, str(old)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["score_vs_authentic"] is None
    assert [w for w in rep["warnings"] if "earlier definition of the score" in w]
    assert res.stderr.count("imlscan weights references") >= 1

    new = tmp_path / "new.safetensors"
    res = runner.invoke(app, ["weights", "references", str(old), str(dataset), "--out", str(new), "--json"])
    assert res.exit_code == 0, res.output
    redone = read_metadata(new)["calibration"]
    assert json.loads(res.stdout) == redone
    assert redone["score_version"] == SCORE_VERSION and redone["threshold"] == entry["threshold"]
    assert redone["references_dataset"] == str(dataset) and redone["n_references"] == 1
    assert redone["authentic_scores"] == pytest.approx(entry["authentic_scores"], abs=1e-6)
    for k, v in load_file(str(old)).items():
        assert torch.equal(v, load_file(str(new))[k])
    rep = json.loads(runner.invoke(app, [*base, str(new)]).stdout)
    assert rep["score_vs_authentic"]["n_authentic"] == 1
    assert not [w for w in rep["warnings"] if "earlier definition" in w]


def test_references_refuses_an_uncalibrated_file_and_its_own_path(tmp_path, dataset, tiny_weights):
    out = tmp_path / "x.safetensors"
    for src, dst in ((tiny_weights, out), (tiny_weights, tiny_weights)):
        res = runner.invoke(app, ["weights", "references", str(src), str(dataset), "--out", str(dst)])
        assert res.exit_code != 0 and "Traceback" not in res.output
    assert not out.exists()


def test_eval_ranks_each_score_against_the_references_as_a_scan_does(tmp_path, dataset, tiny_weights):
    """With calibrated weights in their own protocol, eval ranks every image among the file's
    authentic references (the scan's own function) and reports, per class, the share above 90%
    and 95%; uncalibrated weights, another protocol or references of an older score give none."""
    import csv

    from imlscan.scanning.result import authentic_rank
    from imlscan.weights.store import read_metadata, rewrite_metadata

    cal = tmp_path / "cal.safetensors"
    assert _calibrate(tiny_weights, dataset, cal).exit_code == 0
    calibration = read_metadata(cal)["calibration"]
    ranked = tmp_path / "ranked.safetensors"

    def run(weights, *extra):
        out = tmp_path / f"e-{weights.stem}-{len(extra)}"
        res = runner.invoke(
            app,
            ["eval", str(dataset), "--weights", str(weights), "--out", str(out), "--device", "cpu"]
            + ["--workers", "0", "--bootstrap", "0", *extra],
        )
        assert res.exit_code == 0, res.output
        rows = list(csv.DictReader((out / "per_image.csv").open()))
        md = (out / "metrics.md").read_text() + res.stderr
        return json.loads((out / "metrics.json").read_text())["metrics"], rows, md

    # References between the forgeries' scores: 20 equal values just under the middle forgery, so
    # the top two rank above all of them (100%) and the lowest under all (0%).
    forged = sorted(float(r["image_score"]) for r in run(cal)[1] if r["label"] == "manipulated")
    assert forged[0] < forged[1]
    spread = {**calibration, "authentic_scores": [forged[1] - 1e-5] * 20, "n_authentic": 20}
    rewrite_metadata(cal, ranked, {"calibration": spread})
    metrics, rows, md = run(ranked)
    by_label: dict[str, list[float]] = {"manipulated": [], "authentic": []}
    for r in rows:
        expected = authentic_rank(float(r["image_score"]), spread)["percent_lower"]
        assert float(r["authentic_percent_lower"]) == expected
        by_label[r["label"]].append(expected)
    assert len(by_label["manipulated"]) == 3 and len(by_label["authentic"]) == 1
    assert sorted(by_label["manipulated"]) == [0.0, 100.0, 100.0]
    for q in (90, 95):
        assert metrics[f"image_tpr_above_reference_p{q}"] == pytest.approx(2 / 3)
        assert metrics[f"image_fpr_above_reference_p{q}"] == float(by_label["authentic"][0] > q)
    assert "Ranked against the weights' authentic references" in md
    assert "ranked above 95% (90%) of the weights' authentic references: forgeries 66.7% (66.7%)" in md

    stale = tmp_path / "stale.safetensors"
    rewrite_metadata(ranked, stale, {"calibration": {k: v for k, v in spread.items() if k != "score_version"}})
    for weights, extra in ((tiny_weights, ()), (stale, ()), (ranked, ("--protocol", "native"))):
        metrics, rows, md = run(weights, *extra)
        assert not [k for k in metrics if "above_reference" in k]
        assert all(r["authentic_percent_lower"] == "" for r in rows)
        assert "Ranked against" not in md and "ranked above" not in md


def test_eval_ranks_a_set_of_forgeries_alone(tmp_path, dataset, tiny_weights):
    """Real forgeries without authentic photos (NoSo): the forged share above the references is
    defined, the authentic one is absent (not 0)."""
    cal = tmp_path / "cal.safetensors"
    assert _calibrate(tiny_weights, dataset, cal).exit_code == 0
    forged = [p for p in json.loads(dataset.read_text()) if p[1] != "Negative"]
    only = dataset.parent / "forged.json"
    only.write_text(json.dumps(forged))
    out = tmp_path / "e"
    res = runner.invoke(
        app,
        ["eval", str(only), "--weights", str(cal), "--out", str(out), "--device", "cpu", "--workers", "0"]
        + ["--bootstrap", "0"],
    )
    assert res.exit_code == 0, res.output
    import csv

    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    ranks = [float(r["authentic_percent_lower"]) for r in csv.DictReader((out / "per_image.csv").open())]
    assert len(ranks) == 3
    for q in (90, 95):
        assert metrics[f"image_tpr_above_reference_p{q}"] == pytest.approx(np.mean([v > q for v in ranks]))
        assert f"image_fpr_above_reference_p{q}" not in metrics
    assert "image_auc" not in metrics


def test_references_from_another_set_are_named_and_counted_apart_from_the_calibration(tmp_path, dataset, tiny_weights):
    """References recomputed from a set of authentic photos alone: the rank names that set and
    counts its photos, while the calibration's own numbers (its set, its authentic count) stay."""
    from imlscan.weights.store import read_metadata

    cal = tmp_path / "cal.safetensors"
    assert _calibrate(tiny_weights, dataset, cal).exit_code == 0
    refs = tmp_path / "refs"
    refs.mkdir()
    rng = np.random.default_rng(5)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(refs / f"a{i}.png")
    (refs / "pairs.json").write_text(json.dumps([[f"a{i}.png", "Negative"] for i in range(5)]))
    out = tmp_path / "refs.safetensors"
    res = runner.invoke(app, ["weights", "references", str(cal), str(refs / "pairs.json"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    before, after = read_metadata(cal)["calibration"], read_metadata(out)["calibration"]
    assert len(after["authentic_scores"]) == 5 and after["n_references"] == 5
    assert after["n_authentic"] == before["n_authentic"] == 1 and after["dataset"] == before["dataset"]
    img = str(dataset.parent / "im3.png")
    scan = ["scan", img, "--weights", str(out), "--device", "cpu", "--json", "-o", str(tmp_path / "o")]
    res = runner.invoke(app, scan)
    rank = json.loads(res.stdout)["score_vs_authentic"]
    assert rank["n_authentic"] == 5 and rank["dataset"] == str(refs / "pairs.json")
