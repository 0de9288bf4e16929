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
    from imlscan.weights import save_weights

    path = tmp_path / "tiny.safetensors"
    save_weights(tiny_model, path, name="tiny-test", variant="sparsevit-test")
    return path
