"""Inference-time rewrites that change no result: fold BatchNorm and layer scale into the
weights next to them, and lay the network out for the CPU/GPU kernels that run it fastest.

Folding removes elementwise passes over large activation maps (two BatchNorms per conv block,
two layer-scale products per sparse block). The rewritten model must not be trained.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
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


# The ways the fast path can be compiled: name -> (freezing, torch.compile mode).
# Freezing makes inductor treat the weights as constants, so it can fold them and hand the
# matrix products and convolutions pre-packed weights (oneDNN's blocked layouts on the CPU);
# without it every call re-reads the weights in their plain layout. The autotune variants
# benchmark inductor's GEMM templates against the library kernels at compile time.
COMPILE_VARIANTS: dict[str, tuple[bool, str | None]] = {
    "compile": (False, None),
    "freeze": (True, None),
    "autotune": (False, "max-autotune-no-cudagraphs"),
    "freeze-autotune": (True, "max-autotune-no-cudagraphs"),
}
# What ``compile=True`` means (``Predictor(compile=True)``, ``bench --compile``): the variant
# that measured fastest for sparsevit-b in bf16 on an Intel Xeon with AMX, at batch 1 (1.21x
# the eager fast path) and batch 4 (1.32x), timed interleaved in one run (#38); plain compiling
# and max-autotune were no faster than eager there.
DEFAULT_COMPILE_VARIANT = "freeze"
EAGER = "eager"


def compile_variant(compile: bool | str) -> str:
    """Resolve ``compile`` (False, True, ``"eager"``/``"off"`` or a name in
    :data:`COMPILE_VARIANTS`) to a variant name; an unknown name is a usage error, not a silent
    eager run."""
    if compile is False or compile in (EAGER, "off"):
        return EAGER
    if compile is True:
        return DEFAULT_COMPILE_VARIANT
    if compile not in COMPILE_VARIANTS:
        from imlscan.errors import UsageError

        raise UsageError(
            f"unknown compile variant {compile!r}", hint=f"use off (or eager) or one of {', '.join(COMPILE_VARIANTS)}"
        )
    return compile


def compile_model(fast: nn.Module, variant: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` ``fast`` as ``variant`` says (static shapes).

    Freezing is switched on with ``torch._inductor.config.patch`` around each call: dynamo
    decides whether the weights become constants while it traces, before inductor applies
    ``torch.compile``'s options, so with the options alone inductor's freezing pass ran over
    weights that were still graph inputs and packed none of them (torch 2.13). Around the call
    it covers recompiles too and is restored afterwards, so it never leaks into the process
    (other compiled code, and training, keep their weights as inputs). It is also passed as an
    option, which makes this compile's settings differ from a plain compile's: dynamo reuses a
    graph traced for another instance of the model class under equal settings, and would
    otherwise run an unfrozen graph it had already compiled."""
    import torch._inductor.config as inductor_config
    from torch._inductor import list_mode_options

    freezing, mode = COMPILE_VARIANTS[variant]
    if not freezing:
        return torch.compile(fast, dynamic=False, mode=mode)
    options = {**(list_mode_options(mode) if mode else {}), "freezing": True}
    compiled = torch.compile(fast, dynamic=False, options=options)

    def frozen(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return compiled(x)

    return frozen


def _inputs_to_fp32(_module: nn.Module, args: tuple) -> tuple:
    def cast(a: object) -> object:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.float()
        if isinstance(a, (list, tuple)):
            return type(a)(cast(v) for v in a)
        return a

    return tuple(cast(a) for a in args)


# Parts of the network that ``fast_forward(keep_fp32=...)`` can keep in fp32 while the rest runs
# with bf16 weights on the CPU: name -> (module, whether its output goes back down to bf16).
# "stem": the first patch embedding (a 4x4 stride-4 conv and its LayerNorm, about 0.1% of the
# work), which then reads the fp32 image: rounding the normalized image itself to bf16 moves
# its values by up to half a grey level. "head": model.head (tap projections, fusion,
# LayerNorm, classifier, duplication cue), whose fp32 logits are the output.
FP32_PARTS: dict[str, tuple[str, bool]] = {"stem": ("encoder.patch_embed1", True), "head": ("head", False)}


def _output_to(dtype: torch.dtype) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor]:
    def hook(_module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out.to(dtype)

    return hook


def _check_fp32_parts(keep_fp32: Sequence[str]) -> None:
    unknown = sorted(set(keep_fp32) - set(FP32_PARTS))
    if unknown:
        from imlscan.errors import UsageError

        raise UsageError(f"cannot keep {', '.join(unknown)} in fp32", hint=f"use {', '.join(FP32_PARTS)}")


@torch.no_grad()
def cast_except(model: SparseViT, dtype: torch.dtype, keep_fp32: Sequence[str] = ()) -> SparseViT:
    """Cast ``model``'s weights to ``dtype`` in place, except the parts named in ``keep_fp32``
    (see :data:`FP32_PARTS`), which keep their fp32 weights (cast from the fp32 originals, never
    back up from rounded ones), take fp32 inputs, and hand ``dtype`` on where the rest of the
    network continues."""
    _check_fp32_parts(keep_fp32)
    kept = {FP32_PARTS[k][0]: FP32_PARTS[k][1] for k in keep_fp32}
    for name, mod in model.named_modules():
        if any(name == k or name.startswith(k + ".") for k in kept):
            continue
        for key, p in mod.named_parameters(recurse=False):
            mod._parameters[key] = nn.Parameter(p.to(dtype), requires_grad=False)
        for key, b in mod.named_buffers(recurse=False):
            if b.is_floating_point():
                mod._buffers[key] = b.to(dtype)
    for name, cast_down in kept.items():
        part = model.get_submodule(name)
        part.register_forward_pre_hook(_inputs_to_fp32)
        if cast_down:
            part.register_forward_hook(_output_to(dtype))
        if name == "head" and model.head.dup is not None:
            model.head.dup.register_forward_pre_hook(_inputs_to_fp32)
    return model


def fast_forward(
    model: SparseViT,
    device: torch.device,
    precision: str,
    *,
    compile: bool | str = False,
    keep_fp32: Sequence[str] = (),
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fast inference callable for ``model``: folded weights and channels-last; on the CPU
    the weights themselves are cast to bf16 (no per-call weight casts), on accelerators
    autocast keeps LayerNorm and softmax in fp32. Takes a normalized fp32 ``B x 3 x H x W``
    tensor, returns fp32 logits.

    ``compile``: False (eager), True (:data:`DEFAULT_COMPILE_VARIANT`) or a name in
    :data:`COMPILE_VARIANTS`; static shapes, so each new input shape compiles once (kernels
    cached on disk). ``keep_fp32``: with bf16 weights on the CPU, parts of the network to keep
    in fp32 (:data:`FP32_PARTS`: ``"stem"``, ``"head"``); elsewhere ignored."""
    from imlscan.device import PRECISIONS, autocast

    variant = compile_variant(compile)
    _check_fp32_parts(keep_fp32)
    fast = fuse_for_inference(model).to(device)
    dtype = PRECISIONS[precision]
    cast_weights = device.type == "cpu" and dtype != torch.float32
    fp32_input = cast_weights and "stem" in keep_fp32
    if cast_weights:
        cast_except(fast, dtype, keep_fp32)
    run = fast
    if variant != EAGER:
        enable_compile_cache()
        run = compile_model(fast, variant)

    @torch.inference_mode()
    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=device).contiguous(memory_format=torch.channels_last)
        if cast_weights:
            return run(x if fp32_input else x.to(dtype)).float()
        with autocast(device, precision):
            return run(x).float()

    forward.compile_variant = variant  # type: ignore[attr-defined]
    return forward
