"""The duplication cue: what it measures, that growing a model into it changes nothing, and that
training and inference run with it."""

from __future__ import annotations

import pytest
import torch

from imlscan.errors import ImlscanError
from imlscan.models import create_model
from imlscan.models.convert import load_grown
from imlscan.models.sparsevit import DuplicationCue, SparseViTConfig


def _textured(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, h, w, generator=g)


def test_a_region_that_occurs_twice_scores_one_and_neighbours_do_not_count():
    x = _textured(128, 160)
    x[..., 80:112, 96:128] = 1.3 * x[..., 16:48, 16:48] + 0.5  # a far copy, with gain and offset
    cue = DuplicationCue(4, 8, topk=3, exclude=2)
    top, contrast = cue.scores(x)
    assert top.shape == (1, 16, 20, 3) and contrast.shape == (1, 16, 20)
    # cells whose 16x16 patch lies inside the copy (cells 11-12 x 13-14) and inside its source
    assert torch.all(top[0, 11:13, 13:15, 0] > 0.99) and torch.all(top[0, 3:5, 3:5, 0] > 0.99)
    untouched = torch.ones(16, 20, dtype=torch.bool)
    untouched[1:7, 1:7] = False
    untouched[9:15, 11:17] = False
    assert top[0, ..., 0][untouched].max() < 0.9  # noise matches nothing
    assert torch.all(top[..., :-1] >= top[..., 1:])  # sorted, best first


def test_a_copy_next_to_its_source_is_not_a_duplicate():
    x = _textured(64, 64, seed=1)
    x[..., 16:48, 24:56] = x[..., 16:48, 16:48].clone()  # shifted by one cell only
    top, _ = DuplicationCue(4, 8, topk=2, exclude=2).scores(x)
    assert top[..., 0].max() < 0.9


def test_flat_patches_read_low_contrast():
    x = _textured(64, 64, seed=2)
    x[..., :32, :] = 0.25
    _, contrast = DuplicationCue(4, 8, topk=2, exclude=1).scores(x)
    assert contrast[0, :3].max() < 1e-3 and contrast[0, 5:].min() > 0.1


def test_chunked_scores_equal_the_whole_matrix():
    x = torch.cat([_textured(48, 80, seed=3), _textured(48, 80, seed=4)])
    whole, _ = DuplicationCue(4, 8, topk=3, exclude=1).scores(x)
    chunked, _ = DuplicationCue(4, 8, topk=3, exclude=1, max_elements=7 * 2 * 60).scores(x)
    assert torch.allclose(chunked, whole, atol=1e-6)


def test_maps_with_fewer_cells_than_topk_read_minus_one():
    top, _ = DuplicationCue(4, 8, topk=5, exclude=1).scores(_textured(16, 16))
    assert top.shape == (1, 2, 2, 5) and torch.all(top == -1.0)  # every cell neighbours every other
    top, _ = DuplicationCue(4, 8, topk=5, exclude=0).scores(_textured(16, 16))
    assert torch.all(top[..., 3:] == -1.0) and torch.all(top[..., :3] > -1.0)


def test_the_cue_fits_the_head_grid_at_any_size():
    cue = DuplicationCue(4, 8, topk=2, exclude=1)
    for h, w in ((64, 64), (50, 70), (17, 33)):
        assert cue(_textured(h, w)).shape == (1, -(-h // 16), -(-w // 16), 4)


def test_a_grown_model_predicts_exactly_what_its_weights_did(tiny_model):
    grown = create_model("sparsevit-test-dup").eval()
    added = load_grown(grown, tiny_model.state_dict())
    assert added and all(k.startswith("head.dup.") for k in added)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        assert torch.equal(grown(x), tiny_model(x))
    with pytest.raises(ImlscanError, match="do not fit"):
        load_grown(create_model("sparsevit-t-dup"), tiny_model.state_dict())


def test_the_cue_learns_from_the_loss(tiny_model):
    grown = create_model("sparsevit-test-dup").train()
    load_grown(grown, tiny_model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    x[..., 40:56, 40:56] = x[..., 0:16, 0:16]
    loss = grown(x).sigmoid().mean()
    loss.backward()
    assert grown.head.dup.fc2.weight.grad.abs().sum() > 0  # zero-initialized, yet it gets a gradient


def test_config_without_the_cue_reads_as_before():
    plain = create_model("sparsevit-test").cfg.to_dict()
    assert not any(k.startswith("dup_") for k in plain)
    cfg = create_model("sparsevit-test-dup").cfg
    assert SparseViTConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["dup_dim"] == 8
    with pytest.raises(ValueError, match="dup_dim"):
        SparseViTConfig(dup_dim=-1)


def test_fused_bf16_cpu_inference_keeps_the_cue(tmp_path):
    from imlscan.models.fuse import fast_forward

    torch.manual_seed(3)
    model = create_model("sparsevit-test-dup").eval()
    with torch.no_grad():
        model.head.dup.fc2.weight.normal_(0, 0.5)
        x = torch.randn(1, 3, 64, 96)
        ref = model(x)
    out = fast_forward(model, torch.device("cpu"), "fp32")(x)
    assert torch.allclose(out, ref, atol=1e-4)
    out16 = fast_forward(model, torch.device("cpu"), "bf16")(x)
    assert (out16 - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_neighbour_index_lists_exactly_the_cells_within_the_radius():
    from imlscan.models.sparsevit import neighbour_index

    h, w, r = 4, 5, 1
    idx = neighbour_index(h, w, r)
    assert idx.shape == (h * w, 9)
    for i in range(h * w):
        want = {y * w + x for y in range(h) for x in range(w) if abs(y - i // w) <= r and abs(x - i % w) <= r}
        assert set(idx[i].tolist()) == want


def test_dense_keys_find_a_copy_moved_off_the_cell_grid():
    """A copy shifted by a distance that is not a multiple of 8 pixels is only partly found on
    the cell grid (its patches fall between the source's); keys every 2 pixels find it."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(5)
    x = F.avg_pool2d(torch.randn(1, 3, 136, 168, generator=g), 5, stride=1, padding=0) * 3  # smooth texture
    x[..., 70:118, 92:140] = x[..., 8:56, 10:58].clone()  # shifted by (62, 82) pixels
    inside = (slice(10, 13), slice(13, 16))  # cells whose patches lie wholly in the copy
    coarse, _ = DuplicationCue(4, 8, topk=1, exclude=2, key_stride=8).scores(x)
    dense, _ = DuplicationCue(4, 8, topk=1, exclude=2, key_stride=2).scores(x)
    assert dense[0, inside[0], inside[1], 0].min() > 0.99
    assert coarse[0, inside[0], inside[1], 0].mean() < dense[0, inside[0], inside[1], 0].mean() - 0.05
    with pytest.raises(ValueError, match="key_stride"):
        DuplicationCue(4, 8, topk=1, exclude=2, key_stride=3)


def test_neighbour_index_on_a_denser_key_grid():
    from imlscan.models.sparsevit import neighbour_index

    h, w, r, step = 3, 4, 1, 2
    kh, kw = 6, 7
    idx = neighbour_index(h, w, r, keys=(kh, kw), step=step)
    assert idx.shape == (h * w, 25)
    for i in range(h * w):
        qy, qx = (i // w) * step, (i % w) * step
        want = {a * kw + b for a in range(kh) for b in range(kw) if abs(a - qy) <= r * step and abs(b - qx) <= r * step}
        assert set(idx[i].tolist()) == want
