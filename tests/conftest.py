"""Shared fixtures: tests are offline, use tiny models and images made here."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# Tests never reach the network: any Hub access must go to a local test server.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_model():
    from imlscan.models import create_model

    torch.manual_seed(0)
    return create_model("sparsevit-test").eval()


@pytest.fixture
def tiny_weights(tmp_path, tiny_model):
    """A real safetensors weights file of the unit-test model, with full metadata."""
    from imlscan.weights.store import save_weights

    path = tmp_path / "tiny.safetensors"
    save_weights(tiny_model, path, name="tiny-test", variant="sparsevit-test")
    return path


@pytest.fixture
def calib_pairs(tmp_path, rng):
    """A tiny labelled set (pairs.json): three forgeries with masks of growing size, one authentic."""
    import json

    from PIL import Image

    root = tmp_path / "calib"
    root.mkdir()
    pairs = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / f"im{i}.png")
        if i < 3:
            m = np.zeros((48, 64), np.uint8)
            m[8 : 30 + 4 * i, 10:40] = 255
            Image.fromarray(m).save(root / f"im{i}_gt.png")
            pairs.append([f"im{i}.png", f"im{i}_gt.png"])
        else:
            pairs.append([f"im{i}.png", "Negative"])
    (root / "pairs.json").write_text(json.dumps(pairs))
    return root / "pairs.json"
