"""CUDA paths (inference, training, benchmark). CI has no GPU, so these are skipped there; they run
on the lent GPU machines (`python3 -m pytest tests/test_cuda.py`), where they catch what the CPU
suite cannot: device placement, autocast on CUDA, and CUDA memory reporting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import textured_photo
from PIL import Image

from imlscan.scanning.predict import Predictor
from imlscan.train.config import TrainConfig
from imlscan.train.trainer import train
from imlscan.weights.store import load_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("mode", ["resize", "native"])
def test_cuda_fp32_probabilities_match_the_cpu(tiny_model, rng, mode):
    img = textured_photo(rng, 150, 230)
    kw = dict(mode=mode, size=64, tile=64, overlap=16)
    cpu = Predictor(tiny_model, device="cpu", precision="fp32", **kw).predict_prob(img)
    gpu = Predictor(tiny_model, device="cuda", precision="fp32", **kw).predict_prob(img)
    assert gpu.shape == cpu.shape == img.shape[:2]
    # TF32 convolutions (PyTorch's default on CUDA) round to about 1e-3 relative
    assert float(np.abs(gpu - cpu).max()) < 2e-3


def test_cuda_bf16_probabilities_are_close_and_finite(tiny_model, rng):
    img = textured_photo(rng, 96, 96)
    ref = Predictor(tiny_model, device="cpu", precision="fp32", size=64).predict_prob(img)
    got = Predictor(tiny_model, device="cuda", precision="bf16", size=64).predict_prob(img)
    assert np.isfinite(got).all() and float(np.abs(got - ref).max()) < 0.05


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_runs_on_cuda_and_its_weights_load_on_the_cpu(tmp_path, rng, precision):
    hosts = tmp_path / "hosts"
    hosts.mkdir()
    for i in range(12):
        Image.fromarray(textured_photo(rng, 60, 80)).save(hosts / f"h{i:02d}.png")
    cfg = TrainConfig(
        data=[f"synth:{hosts}?split=all"],
        out=str(tmp_path / "run"),
        model="sparsevit-test",
        size=64,
        batch_size=2,
        lr=1e-3,
        precision=precision,
        device="cuda",
        workers=0,
        max_steps=3,
        val_every=3,
        val_samples=2,
        val=[f"synth:{hosts}?split=all&seed=9"],
    )
    summary = train(cfg)
    assert summary["device"].startswith("cuda") and summary["precision"] == precision
    assert summary["steps"] == 3 and summary["skipped_steps"] == 0
    model = load_model(tmp_path / "run" / "best.safetensors", "cpu", "fp32")
    assert next(model.parameters()).device.type == "cpu"


def test_bench_reports_cuda_memory(tmp_path):
    from typer.testing import CliRunner

    from imlscan.cli import app

    args = ["bench", "--model", "sparsevit-test", "--size", "64", "--device", "cuda", "--iters", "2", "--json"]
    r = CliRunner().invoke(app, [*args, "--precision", "fp32,bf16"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["results"]
    assert rows and all(x["memory_kind"] == "cuda max allocated" and x["peak_memory_mb"] > 0 for x in rows)


def test_cudnn_off_by_default_same_maps_flag_restored(tiny_model, rng):
    """Scans run with cuDNN off (its per-shape set-up made first scans take seconds); the maps
    match a cuDNN run, and the process-wide flag is left as it was."""
    img = textured_photo(rng, 150, 230)
    kw = dict(device="cuda", precision="fp32", mode="native", tile=64, overlap=16)
    before = torch.backends.cudnn.enabled
    off = Predictor(tiny_model, **kw).predict_prob(img)
    on = Predictor(tiny_model, cudnn=True, **kw).predict_prob(img)
    assert torch.backends.cudnn.enabled == before
    assert float(np.abs(off - on).max()) < 2e-3
