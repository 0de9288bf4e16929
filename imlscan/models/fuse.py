"""Inference-time rewrites that change no result: fold BatchNorm and layer scale into the
weights next to them, and lay the network out for the CPU/GPU kernels that run it fastest.

Folding removes elementwise passes over large activation maps (two BatchNorms per conv block,
two layer-scale products per sparse block). The rewritten model must not be trained.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from imlscan.models.sparsevit import ConvBlock, SparseBlock, SparseViT


@torch.no_grad()
def _fold_bn_into_next_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> None:
    """conv(bn(x)) == conv'(x) for a 1x1 ``conv`` that directly follows ``bn`` (eval mode)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    w = conv.weight  # (out, in, 1, 1)
    bias = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    conv.bias = nn.Parameter(bias + (w[:, :, 0, 0] @ shift))
    conv.weight.mul_(scale.view(1, -1, 1, 1))


@torch.no_grad()
def _fold_scale_into_linear(scale: torch.Tensor, layer: nn.Linear | nn.Conv2d) -> None:
    """scale * layer(x) == layer'(x): scale the output rows of the weight and the bias."""
    layer.weight.mul_(scale.view(-1, *([1] * (layer.weight.ndim - 1))))
    if layer.bias is not None:
        layer.bias.mul_(scale)


@torch.no_grad()
def fuse_for_inference(model: SparseViT, *, channels_last: bool = True, inplace: bool = False) -> SparseViT:
    """Return an eval-mode copy of ``model`` with BatchNorm and layer scale folded away.

    Outputs equal the original within float rounding (tested to 1e-4 in fp32).
    """
    m = model if inplace else copy.deepcopy(model)
    m.eval()
    for mod in m.modules():
        if isinstance(mod, ConvBlock) and isinstance(mod.norm1, nn.BatchNorm2d):
            _fold_bn_into_next_conv(mod.norm1, mod.conv1)
            _fold_bn_into_next_conv(mod.norm2, mod.mlp.fc1)
            mod.norm1, mod.norm2 = nn.Identity(), nn.Identity()
        elif isinstance(mod, SparseBlock) and not mod.layer_scale_folded:
            _fold_scale_into_linear(mod.gamma_1, mod.attn.proj)
            _fold_scale_into_linear(mod.gamma_2, mod.mlp.fc2)
            mod.gamma_1.fill_(1.0)
            mod.gamma_2.fill_(1.0)
            mod.layer_scale_folded = True
    head = m.head
    for i, proj in enumerate(head.proj):
        _fold_scale_into_linear(head.gamma[i], proj)
        head.gamma[i].fill_(1.0)
    if channels_last:
        m.to(memory_format=torch.channels_last)
    m.fused = True
    for p in m.parameters():
        p.requires_grad_(False)
    return m


COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def enable_compile_cache() -> str:
    """Persist inductor's compiled kernels so only the first compiled run pays the ~1 min."""
    os.environ.setdefault(COMPILE_CACHE_ENV, str(Path.home() / ".cache" / "imlscan" / "inductor"))
    return os.environ[COMPILE_CACHE_ENV]


def fast_forward(
    model: SparseViT, device: torch.device, precision: str, *, compile: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fast inference callable for ``model``: folded weights and channels-last; on the CPU
    the weights themselves are cast to bf16 (no per-call weight casts), on accelerators
    autocast keeps LayerNorm and softmax in fp32. Takes a normalized fp32 ``B x 3 x H x W``
    tensor, returns fp32 logits."""
    from imlscan.device import PRECISIONS, autocast

    fast = fuse_for_inference(model).to(device)
    dtype = PRECISIONS[precision]
    cast_weights = device.type == "cpu" and dtype != torch.float32
    if cast_weights:
        fast = fast.to(dtype)
    run = fast
    if compile:
        enable_compile_cache()
        run = torch.compile(fast, dynamic=False)

    @torch.inference_mode()
    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=device).contiguous(memory_format=torch.channels_last)
        if cast_weights:
            return run(x.to(dtype)).float()
        with autocast(device, precision):
            return run(x).float()

    return forward
