"""Weights files: safetensors whose metadata carries everything needed to rebuild and trust
the model (architecture and config, preprocessing, output semantics, provenance, licence).

``load_model`` is the one entry point the rest of imlscan uses; it returns the network in
eval mode with a ``weights_info`` attribute (the file's identity and metadata), so every
report can say exactly which model produced it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from imlscan._version import __version__
from imlscan.device import resolve_device
from imlscan.errors import ImlscanError
from imlscan.fsutil import atomic_path, sha256_file
from imlscan.models.convert import check_state_dict
from imlscan.models.sparsevit import IMAGENET_MEAN, IMAGENET_STD, SparseViT, SparseViTConfig

METADATA_KEY = "imlscan"
FORMAT_VERSION = 1
DEFAULT_PREPROCESSING = {
    "mode": "resize",
    "size": 512,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "input": "RGB, uint8 scaled to [0, 1], then (x - mean) / std",
    "resize": "bilinear (cv2.INTER_LINEAR) to size x size",
}
OUTPUT_SEMANTICS = {
    "type": "logits",
    "shape": "B x 1 x H x W",
    "activation": "sigmoid",
    "meaning": "per-pixel probability that the pixel belongs to a manipulated region",
}


@dataclass
class WeightsInfo:
    """Identity and metadata of a loaded weights file (``None`` path: untrained model)."""

    name: str
    path: str | None
    sha256: str | None
    variant: str
    config: dict
    preprocessing: dict
    metadata: dict = field(default_factory=dict)
    trained: bool = True

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "variant": self.variant,
            "trained": self.trained,
            "preprocessing": self.preprocessing,
        }


def build_metadata(
    model: SparseViT,
    *,
    name: str,
    variant: str | None = None,
    preprocessing: dict | None = None,
    provenance: dict | None = None,
    licence: str = "Apache-2.0",
    extra: dict | None = None,
) -> dict:
    """The metadata dict stored in a weights file (JSON under the ``imlscan`` key)."""
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "arch": "sparsevit",
        "variant": variant or getattr(model, "variant", "custom"),
        "config": model.cfg.to_dict(),
        "preprocessing": preprocessing or dict(DEFAULT_PREPROCESSING),
        "output": dict(OUTPUT_SEMANTICS),
        "provenance": {"imlscan_version": __version__, **(provenance or {})},
        "licence": licence,
        **(extra or {}),
    }


def save_weights(
    model: SparseViT,
    path: str | os.PathLike,
    *,
    metadata: dict | None = None,
    dtype: torch.dtype | None = None,
    **metadata_kwargs: Any,
) -> str:
    """Write ``model`` as safetensors with full metadata, atomically. ``dtype`` (e.g.
    ``torch.float16``) stores floating tensors smaller; they are upcast at load.
    Returns the file's sha256."""
    if metadata is None:
        metadata = build_metadata(model, name=metadata_kwargs.pop("name", Path(path).stem), **metadata_kwargs)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return sha256_file(path)


def read_metadata(path: str | os.PathLike) -> dict:
    """The imlscan metadata of a weights file, with clear errors for non-weights files."""
    path = Path(path)
    _check_readable(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise ImlscanError(
            f"{path}: not a valid safetensors file ({_short(e)})",
            hint="the file may be truncated or corrupted: download it again or run 'imlscan weights verify'",
        ) from None
    if raw is None:
        raise ImlscanError(
            f"{path}: safetensors file without imlscan metadata",
            hint="convert an official checkpoint with 'imlscan weights convert'",
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise ImlscanError(f"{path}: imlscan metadata is not valid JSON") from None
    if meta.get("arch") != "sparsevit":
        raise ImlscanError(f"{path}: unsupported architecture {meta.get('arch')!r} (imlscan runs 'sparsevit')")
    return meta


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, floating ones upcast to fp32."""
    path = Path(path)
    _check_readable(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ImlscanError(
            f"{path}: cannot read tensors ({_short(e)})",
            hint="the file may be truncated or corrupted: download it again or run 'imlscan weights verify'",
        ) from None
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def model_from_file(path: str | os.PathLike) -> tuple[SparseViT, dict]:
    """Build the architecture described in the file's metadata and load it strictly."""
    meta = read_metadata(path)
    try:
        cfg = SparseViTConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ImlscanError(f"{path}: invalid model config in metadata ({_short(e)})") from None
    model = SparseViT(cfg)
    sd = load_state_dict(path)
    check_state_dict(model, sd)
    model.load_state_dict(sd, strict=True)
    model.variant = meta.get("variant", "custom")
    return model, meta


def load_model(
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
) -> SparseViT:
    """Resolve ``weights`` (see :func:`resolve_weights`), build and load the model, move it to
    ``device`` in eval mode. ``precision`` is recorded for the predictor (autocast), the
    parameters stay fp32."""
    from imlscan.device import resolve_precision

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    path = resolve_weights(weights)
    if path is None:
        model, info = untrained_model()
    else:
        model, meta = model_from_file(path)
        info = WeightsInfo(
            name=meta.get("name", Path(path).stem),
            path=str(path),
            sha256=sha256_file(path),
            variant=meta.get("variant", "custom"),
            config=meta["config"],
            preprocessing={**DEFAULT_PREPROCESSING, **meta.get("preprocessing", {})},
            metadata=meta,
        )
    model.weights_info = info
    model.precision = prec
    return model.eval().to(dev)


def untrained_model(variant: str = "sparsevit-t") -> tuple[SparseViT, WeightsInfo]:
    """A randomly initialized model, for when no weights exist yet. Its output is noise and
    every report says so."""
    from imlscan.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(variant)
    info = WeightsInfo(
        name=f"{variant}-UNTRAINED",
        path=None,
        sha256=None,
        variant=variant,
        config=model.cfg.to_dict(),
        preprocessing=dict(DEFAULT_PREPROCESSING),
        metadata={},
        trained=False,
    )
    return model, info


def default_weights_dir() -> Path | None:
    """``weights/`` next to the package in a source checkout, else the installed copy."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "weights", here / "_weights"):
        if candidate.is_dir():
            return candidate
    return None


def default_weights_path() -> Path | None:
    """The embedded default: the file named in ``weights/DEFAULT`` (one line)."""
    d = default_weights_dir()
    if d is None or not (d / "DEFAULT").is_file():
        return None
    name = (d / "DEFAULT").read_text().strip()
    p = d / name
    return p if p.is_file() else None


def resolve_weights(weights: str | os.PathLike | None) -> Path | None:
    """Turn a ``--weights`` value into a local file path.

    ``None`` means the embedded default (or no weights at all yet: ``None`` is returned and
    the caller builds an untrained model). A local ``.pth``/``.pt`` gets a hint to convert.
    """
    if weights is None:
        return default_weights_path()
    p = Path(weights)
    if p.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        raise ImlscanError(
            f"{p}: a torch checkpoint, not a safetensors weights file",
            hint=f"convert it first: imlscan weights convert {p} {p.with_suffix('.safetensors').name}",
        )
    if p.exists() or p.suffix == ".safetensors":
        _check_readable(p)
        return p
    raise ImlscanError(f"weights not found: {weights}", hint="give a .safetensors path")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ImlscanError(f"weights file not found: {path}")
    if path.is_dir():
        raise ImlscanError(f"{path} is a folder, not a weights file")
    if path.stat().st_size == 0:
        raise ImlscanError(f"{path}: empty file (0 bytes)", hint="download it again")


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s[:200]
