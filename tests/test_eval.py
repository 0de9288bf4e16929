"""End-to-end ``imlscan eval`` with the tiny test model on datasets made here."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score, roc_auc_score
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.errors import UsageError
from imlscan.eval.evaluate import METRIC_NAMES, parse_gates

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path, rng):
    """3 images (2 manipulated with masks, 1 authentic) and a JSON list with relative paths."""
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    pairs = []
    for i, (h, w) in enumerate([(40, 56), (48, 40), (36, 36)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "img" / f"im{i}.png")
        if i < 2:
            m = np.zeros((h, w), np.uint8)
            m[5:20, 8 + 4 * i : 30] = 255
            Image.fromarray(m).save(root / "gt" / f"im{i}_gt.png")
            pairs.append([f"img/im{i}.png", f"gt/im{i}_gt.png"])
        else:
            pairs.append([f"img/im{i}.png", "Negative"])
    (root / "pairs.json").write_text(json.dumps(pairs))
    return root / "pairs.json"


def _eval(*args):
    return runner.invoke(app, ["eval", *map(str, args), "--device", "cpu", "--workers", "0", "--bootstrap", "50"])


def test_eval_end_to_end_outputs_and_gate(tmp_path, dataset, tiny_weights):
    out = tmp_path / "out"
    res = _eval(
        dataset, "--weights", tiny_weights, "--out", out, "--perturb", "jpeg:70", "--perturb", "resize:0.5",
        "--save-predictions", "--json", "--fail-under", "pixel_f1=1.5",
    )  # fmt: skip
    assert res.exit_code == 3, res.output
    assert "gate failed" in res.stderr and "pixel_f1" in res.stderr
    report = json.loads(res.stdout)
    assert report == json.loads((out / "metrics.json").read_text())
    for key in ("dataset", "protocol", "weights", "n_images", "metrics", "ci", "conventions", "timing"):
        assert key in report
    assert report["n_images"] == 3 and (report["n_manipulated"], report["n_authentic"]) == (2, 1)
    assert report["protocol"]["name"] == "paper" and report["weights"]["sha256"]
    m = report["metrics"]
    for key in ("pixel_f1", "pixel_f1_best", "pixel_auc", "pixel_iou", "image_auc", "image_acc", "pooled_pixel_f1"):
        assert isinstance(m[key], float) and 0.0 <= m[key] <= 1.0
    assert set(m) <= set(METRIC_NAMES)
    assert m["pixel_f1_best"] >= m["pixel_f1"] - 1e-12
    lo, hi = report["ci"]["pixel_f1"]
    assert lo <= m["pixel_f1"] <= hi
    assert [r["setting"] for r in report["robustness"]] == ["clean", "jpeg:70", "resize:0.5"]
    assert report["torch_version"] and report["imlscan_version"]
    for name in ("per_image.csv", "metrics.md", "report.html", "roc.png", "f1_threshold.png"):
        assert (out / name).is_file(), name
    for name in ("robustness_jpeg.png", "robustness_resize.png"):
        assert cv2.imread(str(out / name)).shape == (560, 800, 3)
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert "| clean |" in (out / "metrics.md").read_text()
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 9 and {r["setting"] for r in rows} == {"clean", "jpeg:70", "resize:0.5"}
    assert all(r["eval_width"] == "512" for r in rows)
    preds = sorted((out / "predictions" / "clean").glob("*.png"))
    assert len(preds) == 3
    p16 = cv2.imread(str(preds[0]), cv2.IMREAD_UNCHANGED)
    assert p16.dtype == np.uint16 and p16.shape == (512, 512)
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind


def test_eval_numbers_match_an_independent_computation(tmp_path, dataset, tiny_weights):
    """Paper protocol by hand: resize to 512 (bilinear), mask to 512 (nearest), sklearn metrics."""
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model

    out = tmp_path / "o"
    res = _eval(dataset, "--weights", tiny_weights, "--out", out, "--threshold", "0.5")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    pred = Predictor(load_model(tiny_weights, "cpu"), mode="resize", size=512)
    root = dataset.parent
    f1s, aucs = [], []
    for row in rows[:2]:
        rgb = np.asarray(Image.open(row["image"]).convert("RGB"))
        prob = pred.predict_prob(cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_LINEAR))
        gt = np.asarray(Image.open(root / "gt" / f"{row['image'].split('/')[-1][:-4]}_gt.png")) > 127
        gt = cv2.resize(gt.astype(np.uint8), (512, 512), interpolation=cv2.INTER_NEAREST).astype(bool)
        f1s.append(f1_score(gt.ravel(), prob.ravel() > 0.5))
        aucs.append(roc_auc_score(gt.ravel(), prob.ravel()))
        assert float(row["pixel_f1"]) == pytest.approx(f1s[-1], abs=1e-9)
        assert float(row["pixel_auc"]) == pytest.approx(aucs[-1], abs=1e-9)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["pixel_f1"] == pytest.approx(np.mean(f1s), abs=1e-9)  # mean over the 2 manipulated images
    assert metrics["pixel_auc"] == pytest.approx(np.mean(aucs), abs=1e-9)
    assert rows[2]["label"] == "authentic" and rows[2]["pixel_f1"] == ""


def test_native_protocol_keeps_original_resolution_and_worker_processes(tmp_path, dataset, tiny_weights):
    out = tmp_path / "n"
    res = runner.invoke(
        app,
        ["eval", str(dataset), "--weights", str(tiny_weights), "--out", str(out), "--protocol", "native",
         "--device", "cpu", "--workers", "1", "--bootstrap", "0", "--limit", "2", "--fail-under", "pixel_f1=0"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"]["name"] == "native" and report["n_images"] == 2 and report["ci"] == {}
    assert "image_auc" not in report["metrics"]  # only manipulated images in the first 2: undefined
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [(r["eval_width"], r["eval_height"]) for r in rows] == [("56", "40"), ("40", "48")]


def test_two_datasets_give_a_comparison_table(tmp_path, dataset, tiny_weights):
    out = tmp_path / "cmp"
    res = _eval(f"first={dataset}", f"second={dataset}", "--weights", tiny_weights, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [d["dataset"]["name"] for d in doc["datasets"]] == ["first", "second"]
    assert (out / "first" / "metrics.json").is_file() and (out / "second" / "metrics.json").is_file()
    comparison = json.loads((out / "comparison.json").read_text())
    assert [c["dataset"] for c in comparison] == ["first", "second"]
    assert comparison[0]["metrics"]["pixel_f1"] == comparison[1]["metrics"]["pixel_f1"]
    md = (out / "comparison.md").read_text()
    assert "| first |" in md and "| second |" in md
    assert "Comparison" in res.stderr


def test_gates_parse_strictly():
    assert parse_gates(["pixel_f1=0.45", "image_auc=0.7"]) == [("pixel_f1", 0.45), ("image_auc", 0.7)]
    for bad in ("pixel_f2=0.4", "pixel_f1", "pixel_f1=high", "=0.3"):
        with pytest.raises(UsageError):
            parse_gates([bad])


def test_cli_usage_and_data_errors_are_one_line(tmp_path, dataset, tiny_weights):
    res = _eval(dataset, "--weights", tiny_weights, "--fail-under", "f1=0.4")
    assert res.exit_code == 2 and "unknown metric" in res.stderr
    res = _eval(dataset, "--protocol", "weird", "--weights", tiny_weights)
    assert res.exit_code == 2 and "protocol" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([["nope.png", "Negative"]]))
    res = _eval(bad, "--weights", tiny_weights)
    assert res.exit_code == 1 and "missing" in res.stderr and "--check" in res.stderr
    assert "Traceback" not in res.output


def test_undefined_gate_metric_fails_the_gate(tmp_path, dataset, tiny_weights):
    res = _eval(dataset, "--weights", tiny_weights, "--limit", "1", "--fail-under", "image_auc=0.1")
    assert res.exit_code == 3 and "undefined" in res.stderr


def test_python_api_and_untrained_model_warning(tmp_path, dataset):
    from imlscan.data import load_dataset
    from imlscan.eval.evaluate import EvalOptions, evaluate_dataset
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import untrained_model

    model, info = untrained_model("sparsevit-test")
    model.weights_info = info
    predictor = Predictor(model, device="cpu", mode="resize", size=512)
    seen = []
    report, settings = evaluate_dataset(
        load_dataset(dataset),
        predictor,
        EvalOptions(workers=0, bootstrap=20),
        out_dir=tmp_path / "u",
        advance=seen.append,
    )
    assert sum(seen) == 3 and len(settings) == 1
    assert report["weights"]["trained"] is False
    assert any("UNTRAINED" in w for w in report["warnings"])
    assert "UNTRAINED" in (tmp_path / "u" / "metrics.md").read_text()
    assert "UNTRAINED" in (tmp_path / "u" / "report.html").read_text()


def test_shipped_examples_are_an_eval_dataset_covering_every_example():
    from pathlib import Path

    from imlscan.data.datasets import load_dataset

    root = Path(__file__).resolve().parents[1] / "examples"
    ds = load_dataset(root / "pairs.json")
    assert not ds.problems
    assert {s.image_path.name for s in ds.items} == {p.name for p in root.glob("*.jpg")}
    for s in ds.items:
        assert s.image_path.is_file() and (s.mask_path is None or s.mask_path.is_file())
        if s.mask_path is not None:
            assert Image.open(s.mask_path).size == Image.open(s.image_path).size
    assert sum(s.mask_path is None for s in ds.items) == 1
