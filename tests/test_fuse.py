"""The fast inference path must compute what the plain model computes."""

from __future__ import annotations

import numpy as np
import torch
from helpers import trained_looking

from imlscan.models.fuse import fuse_for_inference


def test_fused_equals_plain_fp32():
    m = trained_looking("sparsevit-test")
    f = fuse_for_inference(m)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        ref, out = m(x), f(x.contiguous(memory_format=torch.channels_last))
    assert (ref - out).abs().max().item() < 1e-4
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in f.modules())


def test_fused_equals_plain_full_model_small_input():
    m = trained_looking("sparsevit-t")
    f = fuse_for_inference(m)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (m(x) - f(x)).abs().max().item() < 1e-4


def test_fuse_leaves_original_untouched():
    m = trained_looking("sparsevit-test")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fuse_for_inference(m)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_bf16_masks_agree_with_fp32():
    """bf16 (weights and activations) must give the same masks as fp32 (IoU >= 0.99)."""
    m = trained_looking("sparsevit-t")
    f32 = fuse_for_inference(m)
    f16 = fuse_for_inference(m).to(torch.bfloat16)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        a = f32(x) > 0
        b = f16(x.bfloat16()).float() > 0
    # Uninformative random models hover around logit 0; compare where fp32 is confident.
    with torch.no_grad():
        conf = f32(x).abs() > 0.05
    inter = (a & b & conf).sum().item()
    union = ((a | b) & conf).sum().item()
    assert union == 0 or inter / union >= 0.99


def test_predictor_fast_path_equals_plain_path(rng):
    from imlscan.scanning.predict import Predictor

    m = trained_looking("sparsevit-test")
    img = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    fast = Predictor(m, device="cpu", precision="fp32", mode="native", fast=True)
    plain = Predictor(m, device="cpu", precision="fp32", mode="native", fast=False)
    assert fast.fast and not plain.fast
    assert np.abs(fast.predict_prob(img) - plain.predict_prob(img)).max() < 1e-4
