"""Converting the authors' checkpoints (their key names) to ours."""

from __future__ import annotations

import re

import pytest
import torch

from imlscan.errors import ImlscanError
from imlscan.models import check_state_dict, convert_official_checkpoint, create_model


def authors_state_dict(model) -> dict[str, torch.Tensor]:
    """Our weights under the authors' names and layout, plus the parameters they build but
    never use (positional convs in sparse blocks, stage norms 1-2)."""
    sd = {}
    cfg = model.cfg
    for k, v in model.state_dict().items():
        if k == "head.gamma":
            for i, g in enumerate(v, 1):
                sd[f"lmu.gamma{i}"] = g.clone()
            continue
        k2 = re.sub(r"^encoder\.blocks([34])\.(\d+)\.mlp\.dwconv\.", r"encoder_net.blocks\1.\2.mlp.dwconv.dwconv.", k)
        k2 = re.sub(r"^encoder\.", "encoder_net.", k2)
        k2 = re.sub(r"^head\.proj\.(\d)\.", lambda m: f"lmu.conv_layer{int(m.group(1)) + 1}.", k2)
        k2 = k2.replace("head.norm.", "lmu.norm.").replace("head.classifier.", "lmu.conv_last.")
        sd[k2] = v.clone()
    for stage, dim, depth in ((3, cfg.dims[2], cfg.depths[2]), (4, cfg.dims[3], cfg.depths[3])):
        for i in range(depth):
            sd[f"encoder_net.blocks{stage}.{i}.pos_embed.weight"] = torch.randn(dim, 1, 3, 3)
            sd[f"encoder_net.blocks{stage}.{i}.pos_embed.bias"] = torch.randn(dim)
    for n, dim in ((1, cfg.dims[0]), (2, cfg.dims[1])):
        sd[f"encoder_net.norm{n}.weight"] = torch.ones(dim)
        sd[f"encoder_net.norm{n}.bias"] = torch.zeros(dim)
    return sd


def test_convert_paper_checkpoint_loads_strictly_and_matches():
    torch.manual_seed(0)
    src = create_model("sparsevit-b").eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    official = {"model": authors_state_dict(src)}
    params = [v for k, v in official["model"].items() if not re.search(r"running_|num_batches", k)]
    assert sum(v.numel() for v in params) == 50_345_921  # the paper's "50.3M"
    converted = convert_official_checkpoint(official)
    dst = create_model("sparsevit-b").eval()
    dst.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_convert_strips_ddp_prefix():
    m = create_model("sparsevit-test")
    sd = {f"module.{k}": v for k, v in authors_state_dict(m).items()}
    conv = convert_official_checkpoint(sd)
    check_state_dict(m, conv)


def test_convert_refuses_foreign_keys():
    sd = authors_state_dict(create_model("sparsevit-test"))
    sd["decoder.extra.weight"] = torch.zeros(3)
    with pytest.raises(ImlscanError, match="decoder.extra.weight"):
        convert_official_checkpoint(sd)


def test_missing_and_misshaped_keys_are_named():
    m = create_model("sparsevit-test")
    conv = convert_official_checkpoint(authors_state_dict(m))
    del conv["head.norm.weight"]
    conv["head.classifier.bias"] = torch.zeros(2)
    with pytest.raises(ImlscanError) as e:
        check_state_dict(m, conv)
    assert "head.norm.weight" in str(e.value) and "head.classifier.bias" in str(e.value)
