"""Convert the authors' torch-pickle checkpoints into imlscan safetensors files."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from imlscan.errors import ImlscanError
from imlscan.models.convert import check_state_dict, convert_official_checkpoint
from imlscan.models.registry import create_model
from imlscan.weights.store import build_metadata, save_weights


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load`` with ``weights_only=True`` (no code from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise ImlscanError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImlscanError(f"{path}: cannot read as a torch checkpoint ({msg[:200]})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ImlscanError(f"{path}: expected a state dict (or {{'model': state_dict}}) of tensors")
    return obj


def convert_checkpoint_file(src: str | os.PathLike, dst: str | os.PathLike, name: str | None = None) -> str:
    """Convert ``src`` to ``dst``, checking a strict load into ``sparsevit-b``; returns sha256."""
    sd = convert_official_checkpoint(load_official_checkpoint(src))
    model = create_model("sparsevit-b")
    check_state_dict(model, sd)
    model.load_state_dict(sd, strict=True)
    meta = build_metadata(
        model,
        name=name or Path(dst).stem,
        variant="sparsevit-b",
        provenance={"source": f"converted from the authors' checkpoint {Path(src).name}"},
        licence="see the authors' release (https://github.com/scu-zjz/SparseViT)",
    )
    return save_weights(model, dst, metadata=meta)
