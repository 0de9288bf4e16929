"""Named SparseViT variants (timm-style: one config per name, one factory)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from imlscan.models.sparsevit import SparseViT, SparseViTConfig


@dataclass(frozen=True)
class Variant:
    name: str
    config: SparseViTConfig
    description: str


_VARIANTS: dict[str, Variant] = {}


def register(name: str, config: SparseViTConfig, description: str) -> None:
    _VARIANTS[name] = Variant(name, config, description)


register(
    "sparsevit-b",
    SparseViTConfig(),
    "The paper's configuration (UniFormer-B layout, S = 8,4,2,1 / 2,1).",
)
register(
    "sparsevit-s",
    SparseViTConfig(
        depths=(3, 4, 8, 4),
        dims=(64, 128, 256, 320),
        head_dim=64,
        stage3_groups=(2, 2, 2, 2),
        stage4_groups=(2, 2),
        drop_path_rate=0.1,
    ),
    "Compact: same schedule idea on a shorter, narrower encoder (CPU use, fast training).",
)
register(
    "sparsevit-t",
    SparseViTConfig(
        depths=(2, 2, 4, 2),
        dims=(32, 64, 160, 256),
        head_dim=32,
        stage3_groups=(1, 1, 1, 1),
        stage4_groups=(1, 1),
        drop_path_rate=0.05,
    ),
    "Tiny: every block of stages 3-4 has its own sparsity rate; laptops and quick fine-tuning.",
)
register(
    "sparsevit-test",
    SparseViTConfig(
        depths=(1, 1, 2, 2),
        dims=(8, 16, 32, 32),
        head_dim=16,
        stage3_groups=(1, 1),
        stage3_sparsity=(4, 1),
        stage4_groups=(1, 1),
        drop_path_rate=0.0,
    ),
    "Minute model for unit tests only (random weights, meaningless output).",
)
# Variants with the duplication cue (DuplicationCue; not in the paper): the same encoder and head,
# so ``train --model X-dup --init X.safetensors`` grows a trained X into one.
register(
    "sparsevit-t-dup",
    replace(_VARIANTS["sparsevit-t"].config, dup_dim=64, dup_key_stride=2),
    "Experimental: sparsevit-t plus a duplication cue (patch correlation; not in the paper); slow on CPUs.",
)
register(
    "sparsevit-test-dup",
    replace(_VARIANTS["sparsevit-test"].config, dup_dim=8, dup_topk=4, dup_exclude=2),
    "sparsevit-test with the duplication cue, for unit tests only.",
)


def list_models() -> list[str]:
    return list(_VARIANTS)


def get_config(name: str) -> SparseViTConfig:
    try:
        return _VARIANTS[name].config
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(_VARIANTS)}") from None


def get_variant(name: str) -> Variant:
    get_config(name)
    return _VARIANTS[name]


def create_model(name: str = "sparsevit-b", **overrides) -> nn.Module:
    """Build a randomly initialized variant; ``overrides`` replace config fields."""
    cfg = get_config(name)
    if overrides:
        cfg = SparseViTConfig.from_dict({**cfg.to_dict(), **overrides})
    model = SparseViT(cfg)
    model.variant = name
    return model
