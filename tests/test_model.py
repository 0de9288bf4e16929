"""SparseViT architecture: shapes, sparse grouping, padding invariance, gradients, sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imlscan.models import SparseViTConfig, count_macs, count_parameters, create_model, list_models
from imlscan.models.sparsevit import Attention, SparseBlock, sparse_group, sparse_ungroup


@pytest.mark.parametrize("h,w", [(300, 517), (64, 64), (1000, 750), (33, 47), (16, 16)])
def test_output_shape_any_size(tiny_model, h, w):
    with torch.no_grad():
        y = tiny_model(torch.randn(1, 3, h, w))
    assert y.shape == (1, 1, h, w)
    assert torch.isfinite(y).all()


def test_full_model_small_odd_input():
    torch.manual_seed(0)
    m = create_model("sparsevit-b").eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 72, 100))
    assert y.shape == (2, 1, 72, 100) and torch.isfinite(y).all()


@pytest.mark.parametrize("s,h,w", [(1, 5, 7), (2, 8, 8), (4, 9, 13), (8, 32, 32), (8, 5, 3), (3, 10, 4)])
def test_group_roundtrip_exact(s, h, w):
    x = torch.randn(2, h, w, 6)
    g, _ = sparse_group(x, s)
    assert torch.equal(sparse_ungroup(g, s, 2, h, w), x)


def test_groups_are_dilated_not_windows():
    """Tokens in one group share (row mod S, col mod S): the paper's sparse sampling."""
    s, h, w = 4, 8, 12
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    x = torch.stack([rows, cols], -1).float().unsqueeze(0)
    g, mask = sparse_group(x, s)
    assert mask is None and g.shape == (s * s, (h // s) * (w // s), 2)
    for grp in g:
        r, c = grp[:, 0].long(), grp[:, 1].long()
        assert len(set((r % s).tolist())) == 1 and len(set((c % s).tolist())) == 1
        assert len(set(r.tolist())) == h // s  # spread over the whole height, not a window


def _reference_sparse_attention(attn: Attention, x: torch.Tensor, s: int) -> torch.Tensor:
    """Attention computed group by group with explicit strided indexing and no padding."""
    b, h, w, c = x.shape
    out = torch.zeros_like(x)
    for a in range(s):
        for bb in range(s):
            tok = x[:, a::s, bb::s]
            if tok.numel() == 0:
                continue
            gh, gw = tok.shape[1:3]
            y = attn(tok.reshape(b, gh * gw, c))
            out[:, a::s, bb::s] = y.view(b, gh, gw, c)
    return out


@pytest.mark.parametrize("s,h,w", [(4, 9, 13), (8, 10, 6), (2, 7, 7), (8, 3, 20)])
def test_padding_is_invisible(s, h, w):
    """With a map that is not a multiple of S, padded tokens must not change real tokens."""
    torch.manual_seed(0)
    attn = Attention(32, 16, True).eval()
    x = torch.randn(2, h, w, 32)
    g, mask = sparse_group(x, s)
    with torch.no_grad():
        fast = sparse_ungroup(attn(g, mask), s, 2, h, w)
        # Garbage in the padded slots must not matter either.
        g2 = g.clone()
        if mask is not None:
            pad = ~mask.view(-1, mask.shape[-1])
            g2[pad] = torch.randn_like(g2[pad]) * 100
        fast2 = sparse_ungroup(attn(g2, mask), s, 2, h, w)
        ref = _reference_sparse_attention(attn, x, s)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast2, ref, atol=1e-5, rtol=1e-5)


def test_region_prediction_independent_of_attention_padding():
    """A whole sparse block on an odd map equals the same block where the map is processed
    with the reference (unpadded) attention."""
    torch.manual_seed(0)
    cfg = SparseViTConfig(
        depths=(1, 1, 1, 1),
        dims=(8, 16, 32, 32),
        head_dim=16,
        stage3_groups=(1,),
        stage3_sparsity=(4,),
        stage4_groups=(1,),
        stage4_sparsity=(1,),
        layer_scale_init=1.0,
    )
    blk = SparseBlock(32, 16, 4, cfg, 0.0).eval()
    x = torch.randn(1, 11, 6, 32)  # channels-last tokens
    with torch.no_grad():
        y = blk(x)
        a = _reference_sparse_attention(blk.attn, blk.norm1(x), 4)
        t = x + blk.gamma_1 * a
        t = t + blk.gamma_2 * blk.mlp(blk.norm2(t))
    torch.testing.assert_close(y, t, atol=1e-5, rtol=1e-5)


def test_sparsity_schedule_of_paper_config():
    cfg = create_model("sparsevit-b").cfg
    s3, s4 = cfg.sparsity_schedule()
    assert s3 == [2 ** (3 - i // 5) for i in range(20)]
    assert s4 == [2, 2, 2, 2, 1, 1, 1]
    enc = create_model("sparsevit-b").encoder
    assert [b.sparsity for b in enc.blocks3] == s3
    dpr = [b.drop_path for blk in (enc.blocks1, enc.blocks2, enc.blocks3, enc.blocks4) for b in blk]
    assert len(dpr) == 40 and dpr[0] == 0.0 and abs(dpr[-1] - 0.2) < 1e-7
    assert enc.taps3 == {5, 10, 15} and enc.taps4 == {4}


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    m = create_model("sparsevit-test", layer_scale_init=0.5, head_gamma_init=0.5).train()
    x = torch.randn(2, 3, 64, 80)
    target = (torch.rand(2, 1, 64, 80) > 0.5).float()
    F.binary_cross_entropy_with_logits(m(x), target).backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"no gradient for: {dead}"


def test_parameter_counts_and_macs():
    assert count_parameters(create_model("sparsevit-b")) == 50_245_697
    assert count_parameters(create_model("sparsevit-s")) == 13_030_913
    assert count_parameters(create_model("sparsevit-t")) == 3_360_513
    assert round(count_macs(create_model("sparsevit-b"), 512) / 1e9, 1) == 46.2
    assert set(list_models()) >= {"sparsevit-b", "sparsevit-s", "sparsevit-t"}


def test_unknown_model_name():
    with pytest.raises(KeyError, match="unknown model"):
        create_model("sparsevit-xxl")
