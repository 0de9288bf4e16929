"""Map the authors' SparseViT checkpoints (``{"model": state_dict}`` with ``encoder_net.*`` and
``lmu.*`` keys) onto imlscan's module names (timm's ``checkpoint_filter_fn`` idea)."""

from __future__ import annotations

import re

import torch

from imlscan.errors import ImlscanError

# Parameters the authors' code builds but never uses in forward().
_UNUSED = [
    re.compile(r"^encoder_net\.blocks[34]\.\d+\.pos_embed\.(weight|bias)$"),
    re.compile(r"^encoder_net\.norm[12]\.(weight|bias)$"),
]

_RENAMES = [
    (
        re.compile(r"^encoder_net\.blocks([34])\.(\d+)\.mlp\.dwconv\.dwconv\.(weight|bias)$"),
        r"encoder.blocks\1.\2.mlp.dwconv.\3",
    ),
    (re.compile(r"^encoder_net\.(.*)$"), r"encoder.\1"),
    (re.compile(r"^lmu\.norm\.(weight|bias)$"), r"head.norm.\1"),
    (re.compile(r"^lmu\.conv_last\.(weight|bias)$"), r"head.classifier.\1"),
]
_GAMMA = re.compile(r"^lmu\.gamma([1-9])$")
_PREFIXES = ("module.", "_orig_mod.")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def convert_official_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``state_dict`` (the authors' key names) renamed to imlscan's, with exactly the
    known-unused keys dropped. Any key that is neither mapped nor known-unused is refused,
    so a checkpoint of another model never half-loads."""
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    out: dict[str, torch.Tensor] = {}
    gammas: dict[int, torch.Tensor] = {}
    unexpected = []
    for raw_key, value in state_dict.items():
        key = _strip(raw_key)
        if any(p.match(key) for p in _UNUSED):
            continue
        m = _GAMMA.match(key)
        if m:
            gammas[int(m.group(1))] = value
            continue
        m = re.match(r"^lmu\.conv_layer([1-9])\.(weight|bias)$", key)
        if m:
            out[f"head.proj.{int(m.group(1)) - 1}.{m.group(2)}"] = value
            continue
        for pattern, repl in _RENAMES:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unexpected.append(raw_key)
    if unexpected:
        raise ImlscanError(
            f"not a SparseViT checkpoint of the authors' layout: {len(unexpected)} unexpected key(s), "
            f"e.g. {', '.join(unexpected[:5])}"
        )
    if gammas:
        if sorted(gammas) != list(range(1, len(gammas) + 1)):
            raise ImlscanError(f"LFF head gammas are not numbered 1..n: found {sorted(gammas)}")
        out["head.gamma"] = torch.stack([gammas[i] for i in sorted(gammas)])
    return out


def check_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise a clear error listing the first missing/unexpected/mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:5])}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:5])}")
    if problems:
        raise ImlscanError("weights do not fit the architecture: " + " | ".join(problems))


GROWN_PREFIXES = ("head.dup.",)


def load_grown(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load weights of a smaller architecture into ``model`` when ``model`` only adds modules
    (the duplication cue) that start from their own initialization; returns the added keys.

    Why: a cue trained from scratch on top of a trained encoder needs far fewer steps than the
    whole network, and the zero-initialized cue leaves the loaded model's output unchanged."""
    own = model.state_dict()
    added = [k for k in own if k not in state_dict and k.startswith(GROWN_PREFIXES)]
    check_state_dict(model, {**{k: own[k] for k in added}, **state_dict})
    model.load_state_dict(state_dict, strict=False)
    return added
