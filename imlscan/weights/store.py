"""Weights files: safetensors whose metadata carries everything needed to rebuild and trust
the model (architecture and config, preprocessing, output semantics, provenance, licence, and a
checksum of the tensors, so a corrupted copy is caught even when no pinned hash is known).

``load_model`` is the one entry point the rest of imlscan uses; it returns the network in
eval mode with a ``weights_info`` attribute (the file's identity and metadata), so every
report can say exactly which model produced it. ``--weights`` values are resolved in this
order: a local path, a registered name, ``hf-hub:ORG/REPO[@REVISION][::FILENAME]``, and
nothing = the embedded default named in ``weights/DEFAULT``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from imlscan._version import __version__
from imlscan.device import resolve_device
from imlscan.errors import ImlscanError, UsageError
from imlscan.fsutil import atomic_path
from imlscan.models.convert import check_state_dict
from imlscan.models.sparsevit import IMAGENET_MEAN, IMAGENET_STD, SparseViT, SparseViTConfig, count_parameters
from imlscan.safetext import shown
from imlscan.weights import hub
from imlscan.weights.settings import (
    MAX_DEPTH,
    MAX_PARAMETERS,
    PREPROCESSING,
    FieldError,
    MetadataError,
    check_metadata,
    integer,
    parse_metadata,
)

# The installed package (imlscan/); in a source checkout, its parent is the checkout's root.
PACKAGE_DIR = Path(__file__).resolve().parent.parent
METADATA_KEY = "imlscan"
FORMAT_VERSION = 1
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
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
PROVENANCE_FIELDS = ("data", "steps", "date", "imlscan_version", "source_commit")
# What a field error calls the entry it sits in: "invalid model config in the metadata: field ...".
SECTIONS = {
    "config": "model config",
    "preprocessing": "preprocessing spec",
    "copy_move": "copy-move settings",
    "copy_move_keypoints": "keypoint settings",
    "calibration": "calibration",
    "fusion": "fusion rule",
    "provenance": "provenance",
}


@dataclass
class WeightsInfo:
    """Identity and metadata of a loaded weights file (``None`` path: untrained model).

    ``source`` says how it was found: ``path``, ``registry:NAME``, ``hf-hub:...``,
    ``embedded default`` or ``untrained``.
    """

    name: str
    path: str | None
    sha256: str | None
    variant: str
    config: dict
    preprocessing: dict
    metadata: dict = field(default_factory=dict)
    trained: bool = True
    source: str = "path"

    @property
    def provenance(self) -> dict:
        return dict(self.metadata.get("provenance", {}))

    @property
    def licence(self) -> str | None:
        return self.metadata.get("licence")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "source": self.source,
            "variant": self.variant,
            "trained": self.trained,
            "preprocessing": self.preprocessing,
            "provenance": self.provenance,
            "licence": self.licence,
        }


def git_commit(repo_dir: str | os.PathLike | None = None) -> str:
    """The source checkout's commit (``+dirty`` with uncommitted changes), or ``"unknown"``
    for an installed package: provenance must never guess."""
    root = Path(repo_dir) if repo_dir is not None else PACKAGE_DIR.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        run = dict(cwd=root, capture_output=True, text=True, timeout=10, check=True)
        sha = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha or "unknown"


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
    """The metadata dict stored in a weights file (JSON under the ``imlscan`` key).

    Provenance always has ``data``, ``steps``, ``date``, ``imlscan_version`` and
    ``source_commit`` (``None``/``"unknown"`` when not known); callers add what they know.
    """
    prep = copy.deepcopy({**DEFAULT_PREPROCESSING, **(preprocessing or {})})  # never an alias of the defaults
    validate_preprocessing(prep, where=name)
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "arch": "sparsevit",
        "variant": variant or getattr(model, "variant", "custom"),
        "config": model.cfg.to_dict(),
        "preprocessing": prep,
        "output": dict(OUTPUT_SEMANTICS),
        "provenance": {
            "data": None,
            "steps": None,
            "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "imlscan_version": __version__,
            "source_commit": git_commit(),
            **(provenance or {}),
        },
        "licence": licence,
        **(extra or {}),
    }


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A checksum of names, dtypes, shapes and bytes of all tensors, independent of the file
    layout: stored in the metadata at save time, checked at load time (safetensors itself has
    no checksum, so flipped bytes in the data would otherwise load silently)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in tensors.values() if v.is_floating_point()})
    metadata = {**metadata, "storage_dtype": ",".join(dtypes), "tensors_sha256": tensors_sha256(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return hub.file_sha256(path)


def rewrite_metadata(src: str | os.PathLike, dst: str | os.PathLike, update: dict) -> Path:
    """Copy a weights file to ``dst`` with ``update`` merged into its metadata, atomically; the
    tensors are copied bit for bit, so their recorded checksum and storage dtype stay valid."""
    meta = {**read_metadata(src), **update}
    tensors = _read_tensors(Path(src))
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return Path(dst)


def read_metadata(path: str | os.PathLike) -> dict:
    """The imlscan metadata of a weights file, checked against the schema of
    ``imlscan.weights.settings`` (types, bounds, lengths) before anything is built from it; clear
    one-line errors for non-weights files and for every field that breaks its rule."""
    path = Path(path)
    _check_readable(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise _format_error(path, e) from None
    if raw is None:
        raise ImlscanError(
            f"{path}: safetensors file without imlscan metadata",
            hint="convert an official checkpoint with 'imlscan weights convert'",
        )
    try:
        meta = parse_metadata(raw)
    except RecursionError:
        raise ImlscanError(f"{path}: imlscan metadata is nested above the limit of {MAX_DEPTH} levels") from None
    except FieldError as e:
        raise _field_error(path, e) from None
    except MetadataError as e:
        raise ImlscanError(f"{path}: {e}") from None
    except ValueError:  # also integers of thousands of digits
        raise ImlscanError(f"{path}: imlscan metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ImlscanError(f"{path}: imlscan metadata is not a JSON object")
    arch = meta.get("arch")
    if arch != "sparsevit":
        arch = repr(shown(arch[:40])) if isinstance(arch, str) else type(arch).__name__
        raise ImlscanError(f"{path}: unsupported architecture {arch} (imlscan runs 'sparsevit')")
    try:
        version = meta.get("format_version", 1)
        integer(1)(version, "format_version")
        if version > FORMAT_VERSION:
            raise ImlscanError(
                f"{path}: weights format {version} is not one this imlscan understands (up to {FORMAT_VERSION})",
                hint="upgrade imlscan",
            )
        check_metadata(meta)
    except FieldError as e:
        raise _field_error(path, e) from None
    return meta


def _field_error(where: str | os.PathLike, e: FieldError) -> ImlscanError:
    what = f"{SECTIONS[e.section]} in the metadata" if e.section in SECTIONS else "metadata"
    return ImlscanError(f"{where}: invalid {what}: {e}")


def _header_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors as shapes only (on the meta device): read from the header, no data."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _format_error(path, e) from None


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse NaN and infinities: the network would turn them into NaN maps and scores.

    A tensor's sum is finite when all its elements are, and costs no memory; only a non-finite
    sum (a NaN, an infinity, or huge finite values overflowing) is checked element by element."""
    for k, t in tensors.items():
        if t.is_floating_point() and not math.isfinite(t.sum()) and not bool(torch.isfinite(t).all()):
            raise ImlscanError(
                f"{path}: tensor {shown(k)} holds NaN or infinite values",
                hint="the file is damaged or comes from a diverged training run; use other weights",
            )


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    _check_readable(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _format_error(path, e) from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, floating ones upcast to fp32."""
    sd = _read_tensors(Path(path))
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def validate_preprocessing(prep: dict, where: str | os.PathLike = "weights") -> dict:
    """Refuse a preprocessing spec the predictor could not honour exactly (the schema's rules)."""
    try:
        PREPROCESSING({k: list(v) if isinstance(v, tuple) else v for k, v in prep.items()}, "preprocessing")
    except FieldError as e:
        raise _field_error(where, e) from None
    return prep


def model_from_file(path: str | os.PathLike) -> tuple[SparseViT, dict]:
    """Build the architecture described in the file's metadata and load it strictly.

    The order is the gate's: metadata against the schema; the architecture built on the meta
    device (no memory) and its parameter count bounded; the tensors' names and shapes checked
    from the header alone; only then the data read, checked against the checksum recorded when
    the file was written and for NaN/infinities, and the model given memory and loaded."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        cfg = SparseViTConfig.from_dict(meta["config"])
        with torch.device("meta"):
            model = SparseViT(cfg)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ImlscanError(f"{path}: invalid model config in the metadata ({_short(e)})") from None
    n = count_parameters(model)
    if n > MAX_PARAMETERS:
        raise _field_error(
            path, FieldError("config", f"describes {n:,} parameters, above the limit {MAX_PARAMETERS:,}")
        )
    try:
        check_state_dict(model, _header_tensors(path))
    except ImlscanError as e:
        raise ImlscanError(f"{path}: {e.message}", hint="the metadata's config does not match the tensors") from None
    raw = _read_tensors(path)
    recorded = meta.get("tensors_sha256")
    if recorded is not None and tensors_sha256(raw) != recorded:
        raise ImlscanError(
            f"{path}: corrupted: the tensor data does not match the checksum recorded when the file was written",
            hint="download or copy the file again",
        )
    sd = {k: v.float() if v.is_floating_point() else v for k, v in raw.items()}
    _check_finite(path, sd)  # in fp32, as the model holds them: a float64 1e300 is infinite there
    model = model.to_empty(device="cpu")  # every value is overwritten by the strict load
    model.load_state_dict(sd, strict=True)
    model.variant = meta.get("variant", "custom")
    return model, meta


@dataclass(frozen=True)
class LocatedWeights:
    """A resolved ``--weights`` value: a local file, how it was found, and its sha256 when it
    was already verified on the way (so it is not hashed twice)."""

    path: Path
    source: str
    sha256: str | None = None


def load_model(
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
) -> SparseViT:
    """Resolve ``weights`` (see :func:`locate_weights`), build and load the model, move it to
    ``device`` in eval mode. ``precision`` is recorded for the predictor (autocast), the
    parameters stay fp32."""
    from imlscan.device import resolve_precision

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    located = locate_weights(weights)
    if located is None:
        model, info = untrained_model()
    else:
        model, meta = model_from_file(located.path)
        info = WeightsInfo(
            name=meta.get("name", located.path.stem),
            path=str(located.path),
            sha256=located.sha256 or hub.file_sha256(located.path),
            variant=meta.get("variant", "custom"),
            config=meta["config"],
            preprocessing={**DEFAULT_PREPROCESSING, **meta.get("preprocessing", {})},
            metadata=meta,
            source=located.source,
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
        source="untrained",
    )
    return model, info


def preprocessing_override_note(
    info: WeightsInfo | None, mode: str | None = None, size: int | None = None
) -> str | None:
    """A sentence for the report when a run departs from the protocol the weights were trained
    with (``mode``/``size`` as actually used; ``None`` = not overridden), else ``None``.

    The predictor honours an explicit override, but a forensic report must not hide it: maps
    computed off-protocol are not what the weights were validated on.
    """
    if info is None or not info.trained:
        return None
    trained_mode = info.preprocessing.get("mode", "resize")
    trained_size = int(info.preprocessing.get("size", 512))
    used_mode = mode or trained_mode
    if used_mode != trained_mode:
        how = f"resized to {trained_size}x{trained_size}" if trained_mode == "resize" else "at native resolution"
        now = f"resized to {size}x{size}" if used_mode == "resize" and size else f"in {used_mode!r} mode"
        return (
            f"Preprocessing overridden: the weights {info.name!r} were trained on images {how}, "
            f"but this run used them {now}; results may be less reliable than the validated protocol."
        )
    if used_mode == "resize" and size is not None and int(size) != trained_size:
        return (
            f"Preprocessing overridden: the weights {info.name!r} were trained at {trained_size}x{trained_size}, "
            f"but this run resized images to {size}x{size}; results may be less reliable than the validated protocol."
        )
    return None


# --- where the weights come from ---------------------------------------------------------------


def default_weights_dir() -> Path | None:
    """``weights/`` at the root of a source checkout, else the copy installed as package data
    (``imlscan/_weights``, mapped from ``weights/`` in the wheel)."""
    checkout = PACKAGE_DIR.parent / "weights"
    if checkout.is_dir() and (PACKAGE_DIR.parent / "pyproject.toml").is_file():
        return checkout
    installed = PACKAGE_DIR / "_weights"
    return installed if installed.is_dir() else None


def default_weights_name() -> str | None:
    """The file name written in ``weights/DEFAULT`` (first non-empty, non-comment line)."""
    d = default_weights_dir()
    if d is None or not (d / "DEFAULT").is_file():
        return None
    lines = [ln.strip() for ln in (d / "DEFAULT").read_text().splitlines()]
    name = next((ln for ln in lines if ln and not ln.startswith("#")), None)
    if name is not None and (Path(name).name != name or name in (".", "..")):
        raise ImlscanError(f"{d / 'DEFAULT'}: must name a file inside {d}, not {name!r}")
    return name


def default_weights_path() -> Path | None:
    """The embedded default file, if it is present."""
    d, name = default_weights_dir(), default_weights_name()
    if d is None or name is None:
        return None
    p = d / name
    return p if p.is_file() else None


def resolve_weights(weights: str | os.PathLike | None) -> Path | None:
    """Turn a ``--weights`` value into a verified local file path (``None``: no weights exist
    yet and the caller builds an untrained model). See :func:`locate_weights`."""
    located = locate_weights(weights)
    return None if located is None else located.path


def locate_weights(weights: str | os.PathLike | None) -> LocatedWeights | None:
    """Resolve ``weights`` in this order: an existing local path; ``hf-hub:ORG/REPO[@REV][::FILE]``;
    a registered name; anything path-like (then: not found). ``None`` is the embedded default
    (downloaded by its registry entry when the file is not shipped), or ``None`` when there is
    no default yet. Hub files are verified against their sha256 before they are returned."""
    if weights is None:
        return _locate_default()
    s = _classify(weights)
    if s.path is not None:
        return _locate_path(s.path)
    if s.entry is None:
        return LocatedWeights(hub.fetch(s.ref), s.label)  # type: ignore[arg-type]
    return LocatedWeights(hub.fetch_registered(s.label), f"registry:{s.label}", s.entry.sha256)


@dataclass(frozen=True)
class _WeightsSpec:
    """What a ``--weights`` value names, before anything is read or downloaded: a local path, a
    Hub reference, or a registered name (``entry`` set, ``ref`` its pinned Hub file)."""

    label: str
    path: Path | None = None
    ref: hub.HubRef | None = None
    entry: hub.RegisteredWeights | None = None


def _classify(weights: str | os.PathLike) -> _WeightsSpec:
    """The one order of interpretation that ``locate_weights`` (which downloads) and
    ``local_target`` (which never does) share, so the two cannot disagree on what a value means."""
    if isinstance(weights, os.PathLike):
        return _WeightsSpec(str(weights), path=Path(weights))
    spec = str(weights).strip()
    if not spec:
        raise UsageError("empty weights value", hint=hub.registry_hint())
    path = Path(spec).expanduser()
    if path.exists():
        return _WeightsSpec(spec, path=path)
    if hub.is_hf_hub_spec(spec):
        ref = hub.parse_hf_hub(spec)
        return _WeightsSpec(str(ref), ref=ref)
    entry = hub.registered(spec)
    if entry is not None:
        return _WeightsSpec(spec, ref=entry.ref, entry=entry)
    if path.suffix or os.sep in spec or "/" in spec:
        return _WeightsSpec(spec, path=path)
    raise ImlscanError(f"unknown weights {spec!r}: not a file and not a registered name", hint=hub.registry_hint())


def _locate_path(path: Path) -> LocatedWeights:
    if path.suffix.lower() in CHECKPOINT_SUFFIXES and path.is_file():
        raise ImlscanError(
            f"{path}: a torch checkpoint, not a safetensors weights file",
            hint=f"convert it first: imlscan weights convert {path} {path.with_suffix('.safetensors').name}",
        )
    _check_readable(path)
    return LocatedWeights(path, "path")


def _missing_default(name: str) -> ImlscanError:
    return ImlscanError(
        f"the default weights {name!r} named in weights/DEFAULT are missing and not registered for download",
        hint="reinstall imlscan, or pass --weights PATH",
    )


def _default_parts() -> tuple[str, hub.RegisteredWeights | None, Path | None] | None:
    """The default's name in weights/DEFAULT, its registry entry and its embedded file (``None``
    when no default is named); raises when it is neither embedded nor registered."""
    name = default_weights_name()
    if name is None:
        return None
    entry = hub.registered(Path(name).stem)
    path = default_weights_path()
    if path is None and entry is None:
        raise _missing_default(name)
    return name, entry, path


def _locate_default() -> LocatedWeights | None:
    parts = _default_parts()
    if parts is None:
        return None
    name, entry, path = parts
    if path is not None:
        sha = hub.check_sha256(path, entry.sha256, f"embedded default {name}", in_cache=False) if entry else None
        return LocatedWeights(path, "embedded default", sha)
    assert entry is not None
    return LocatedWeights(hub.fetch_registered(entry.name), f"registry:{entry.name} (default)", entry.sha256)


# --- inspection (never downloads) --------------------------------------------------------------


@dataclass(frozen=True)
class LocalTarget:
    """What ``verify``/``info`` look at: a file on disk (or ``None`` when a registered name or
    hf-hub reference is not in the cache), plus the registry entry or Hub reference behind it."""

    label: str
    path: Path | None
    entry: hub.RegisteredWeights | None = None
    ref: hub.HubRef | None = None


def local_target(spec: str | os.PathLike | None) -> LocalTarget:
    """Resolve ``spec`` like ``--weights`` but without network: names and hf-hub references
    are looked up in the Hub cache only. ``None`` is the default weights, as for ``--weights``."""
    if spec is None:
        return _default_target()
    s = _classify(spec)
    if s.path is not None:
        return LocalTarget(s.label, _locate_path(s.path).path)
    return LocalTarget(s.label, hub.cached_file(s.ref), entry=s.entry, ref=s.ref)  # type: ignore[arg-type]


def _default_target() -> LocalTarget:
    """The default weights as ``scan`` would find them: the embedded file, else its registered
    download in the Hub cache."""
    parts = _default_parts()
    if parts is None:
        raise ImlscanError(
            "this installation has no default weights (weights/DEFAULT names none)", hint=hub.registry_hint()
        )
    name, entry, path = parts
    if path is not None:
        return LocalTarget(f"default: {name}", path, entry=entry)
    assert entry is not None
    return LocalTarget(f"default: {entry.name}", hub.cached_file(entry.ref), entry=entry, ref=entry.ref)


def _not_downloaded(target: LocalTarget) -> ImlscanError:
    return ImlscanError(
        f"{target.label} is not downloaded (not in the Hugging Face cache {hub.hub_cache_dir()})",
        hint=f"imlscan weights download {target.label}",
    )


def verify_weights(spec: str | os.PathLike | None, sha256: str | None = None) -> dict:
    """Check a weights file end to end and return what was checked; raise on the first failure.

    Checks: the file's sha256 (against ``sha256``, else the registry pin, else the hash the Hub
    announced), the format and metadata, the tensor checksum, and a strict load into the
    architecture its metadata describes.
    """
    if sha256 is not None and not hub.SHA256_RE.fullmatch(sha256.lower()):
        raise UsageError(f"--sha256 must be 64 hex digits, not {sha256!r}")
    target = local_target(spec)
    if target.path is None:
        raise _not_downloaded(target)
    path = target.path
    in_cache = target.ref is not None
    expected, against = None, None
    if sha256:
        expected, against = sha256.lower(), "--sha256"
    elif target.entry is not None:
        expected, against = target.entry.sha256, f"registry pin of {target.entry.name}"
    elif target.ref is not None:
        expected, against = hub.announced_sha256(path), "hash announced by the Hub"
    actual = hub.check_sha256(path, expected, target.label, in_cache=in_cache) if expected else hub.file_sha256(path)
    model, meta = model_from_file(path)
    match = hub.registered_by_sha256(actual)
    return {
        "target": target.label,
        "path": str(path),
        "size": path.stat().st_size,
        "sha256": actual,
        "sha256_check": f"ok ({against})" if expected else "no pinned hash to compare with",
        "registered_as": match.name if match else None,
        "tensors_checksum": "ok" if meta.get("tensors_sha256") else "not recorded in this file",
        "strict_load": "ok",
        "name": meta.get("name"),
        "variant": meta.get("variant"),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def describe_weights(spec: str | os.PathLike | None) -> dict:
    """Identity and full metadata of a weights file (or, for a registered name that is not
    downloaded yet, its registry entry). Reads the header only: nothing is loaded."""
    target = local_target(spec)
    out: dict[str, Any] = {"target": target.label}
    if target.entry is not None:
        out["registry"] = target.entry.to_dict()
    if target.path is None:
        if target.entry is None:
            raise _not_downloaded(target)
        out["downloaded"] = False
        return out
    meta = read_metadata(target.path)
    out.update(
        downloaded=True,
        path=str(target.path),
        size=target.path.stat().st_size,
        sha256=hub.file_sha256(target.path),
        metadata=meta,
    )
    return out


def default_status() -> dict:
    """What ``--weights`` omitted resolves to, without downloading or loading anything."""
    try:
        name = default_weights_name()
    except ImlscanError as e:
        return {"file": None, "resolves_to": f"BROKEN: {e.message}"}
    if name is None:
        return {"file": None, "resolves_to": "untrained sparsevit-t (no default weights yet)"}
    entry = hub.registered(Path(name).stem)
    path = default_weights_path()
    if path is not None:
        where = f"embedded file {path}"
    elif entry is not None:
        cached = hub.cached_file(entry.ref)
        where = f"registered {entry.name}, " + (f"cached at {cached}" if cached else "downloaded on first use")
    else:
        where = "MISSING: named in weights/DEFAULT but neither shipped nor registered"
    return {"file": name, "registered": entry.name if entry else None, "resolves_to": where}


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ImlscanError(f"weights file not found: {path}")
    if path.is_dir():
        raise ImlscanError(f"{path} is a folder, not a weights file")
    if path.stat().st_size == 0:
        raise ImlscanError(f"{path}: empty file (0 bytes)", hint="download or copy it again")


def _format_error(path: Path, e: BaseException) -> ImlscanError:
    """safetensors' parse errors, told apart: a cut/extended file vs. something else entirely."""
    msg = _short(e)
    if "incomplete metadata" in msg or "not fully covered" in msg or _header_cut(path):
        return ImlscanError(
            f"{path}: truncated or corrupted: its size does not match its safetensors header",
            hint="download or copy it again; 'imlscan weights verify' checks a file",
        )
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return ImlscanError(
            f"{path}: a torch checkpoint, not a safetensors weights file",
            hint=f"convert it first: imlscan weights convert {path} {path.with_suffix('.safetensors').name}",
        )
    return ImlscanError(
        f"{path}: not a safetensors weights file ({msg})",
        hint="imlscan reads .safetensors files; convert an official .pth with 'imlscan weights convert'",
    )


def _header_cut(path: Path) -> bool:
    """True when the file ends inside the JSON header its first 8 bytes announce."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        n = int.from_bytes(head, "little")
        start = f.read(1)
    return 2 <= n <= 100 * 2**20 and start == b"{" and path.stat().st_size < 8 + n


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s[:200]
