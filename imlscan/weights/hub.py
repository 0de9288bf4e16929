"""Weights on the Hugging Face Hub: a registry that pins each name to one exact file, ``hf-hub:``
references, and downloads that are verified before anything loads them.

Why pin a commit *and* a sha256: the commit makes a download reproducible, the hash makes it
trustworthy even through a mirror (``HF_ENDPOINT``) or a cache filled by someone else. A file
that fails its hash is removed from the cache, so it can never be picked up later by accident.

Downloads go through ``huggingface_hub.hf_hub_download`` (cache layout, ``HF_TOKEN``, proxies),
but ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME`` and ``HF_HUB_CACHE`` are read here at call
time and passed explicitly: huggingface_hub reads them once at import, which would make a
process (or test) that changes them silently use the old values.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from imlscan.errors import ImlscanError, UsageError

HF_HUB_PREFIX = "hf-hub:"
DEFAULT_FILENAME = "model.safetensors"
DEFAULT_ENDPOINT = "https://huggingface.co"
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class HubRef:
    """One file in a Hub model repository: ``hf-hub:ORG/REPO[@REVISION][::FILENAME]``."""

    repo_id: str
    filename: str = DEFAULT_FILENAME
    revision: str | None = None

    @property
    def pinned(self) -> bool:
        """True when the revision is a commit hash, i.e. the file can never change."""
        return self.revision is not None and COMMIT_RE.fullmatch(self.revision) is not None

    def __str__(self) -> str:
        spec = HF_HUB_PREFIX + self.repo_id
        if self.revision:
            spec += f"@{self.revision}"
        if self.filename != DEFAULT_FILENAME:
            spec += f"::{self.filename}"
        return spec


def is_hf_hub_spec(spec: str) -> bool:
    return spec.startswith(HF_HUB_PREFIX)


def parse_hf_hub(spec: str) -> HubRef:
    """Parse ``hf-hub:ORG/REPO[@REVISION][::FILENAME]`` (timm's prefix; ``::`` because branch
    names and filenames may both contain ``/``)."""
    usage = "expected hf-hub:ORG/REPO[@REVISION][::FILENAME], e.g. hf-hub:org/repo@main::model.safetensors"
    if not is_hf_hub_spec(spec):
        raise UsageError(f"not an hf-hub reference: {spec!r}", hint=usage)
    body = spec[len(HF_HUB_PREFIX) :]
    filename = DEFAULT_FILENAME
    if "::" in body:
        body, filename = body.split("::", 1)
    revision = None
    if "@" in body:
        body, revision = body.split("@", 1)
        if not revision:
            raise UsageError(f"empty revision in {spec!r}", hint=usage)
    parts = body.split("/")
    if len(parts) != 2 or not all(_REPO_PART.fullmatch(p) and ".." not in p for p in parts):
        raise UsageError(f"invalid Hub repository id {body!r} in {spec!r}", hint=usage)
    if not filename or filename.startswith("/") or ".." in filename.split("/"):
        raise UsageError(f"invalid filename {filename!r} in {spec!r}", hint=usage)
    return HubRef(repo_id=body, filename=filename, revision=revision)


@dataclass(frozen=True)
class RegisteredWeights:
    """A named weights file pinned to an exact Hub commit and content hash."""

    name: str
    repo_id: str
    filename: str
    revision: str
    sha256: str
    size: int
    licence: str
    description: str
    variant: str = ""

    def __post_init__(self) -> None:
        if not COMMIT_RE.fullmatch(self.revision):
            raise ValueError(f"{self.name}: revision must be a 40-hex commit hash, not {self.revision!r}")
        if not SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")
        if self.size <= 0:
            raise ValueError(f"{self.name}: size must be positive")

    @property
    def ref(self) -> HubRef:
        return HubRef(repo_id=self.repo_id, filename=self.filename, revision=self.revision)

    def to_dict(self) -> dict:
        return {**asdict(self), "hf_hub": str(self.ref)}


REGISTRY: dict[str, RegisteredWeights] = {}


def register(entry: RegisteredWeights) -> None:
    REGISTRY[entry.name] = entry


# ------------------------------------------------------------------------------------------------
# REGISTERED WEIGHTS. The lead adds the default model's entry here once its file is on the Hub.
# Name it after the stem of the file named in weights/DEFAULT: an installation that lacks the
# embedded file then downloads exactly that file. Get sha256/size with `imlscan weights verify FILE
# --json` and the commit from the Hub page of the upload. Template:
#
# register(
#     RegisteredWeights(
#         name="sparsevit-t-example",  # == Path(<weights/DEFAULT line>).stem
#         repo_id="ORG/REPO",
#         filename="sparsevit-t-example.safetensors",
#         revision="<40-hex commit hash>",
#         sha256="<64-hex sha256 of the file>",
#         size=0,  # bytes
#         licence="Apache-2.0",
#         description="SparseViT-T trained on ...; imlscan's default",
#         variant="sparsevit-t",
#     )
# )
# ------------------------------------------------------------------------------------------------


def registered(name: str) -> RegisteredWeights | None:
    return REGISTRY.get(name)


def registered_by_sha256(sha256: str) -> RegisteredWeights | None:
    return next((e for e in REGISTRY.values() if e.sha256 == sha256), None)


# --- environment, read at call time ------------------------------------------------------------


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.upper() in _TRUE


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads, by its own precedence rules."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


# --- hashing -----------------------------------------------------------------------------------

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered per (real path, size, mtime) so a file verified on download
    is not hashed again when it is loaded a moment later."""
    from imlscan.fsutil import sha256_file

    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(real)
    return _HASHES[key]


def check_sha256(path: Path, expected: str, label: str, *, in_cache: bool) -> str:
    """Raise unless ``path`` hashes to ``expected``; a bad file in the Hub cache is removed."""
    actual = file_sha256(path)
    if actual == expected:
        return actual
    fate = "it was removed from the cache" if in_cache and evict(path) else "it was not used"
    raise ImlscanError(
        f"sha256 mismatch for {label} ({path}): expected {expected}, got {actual}; {fate}",
        hint="download it again; if this repeats, the server or mirror (HF_ENDPOINT) serves another file: "
        "do not use it, and report it",
    )


def evict(path: Path) -> bool:
    """Remove a cached file: the snapshot entry and the blob it points to."""
    targets = [Path(path), Path(os.path.realpath(path))]
    for t in targets:
        try:
            t.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return not any(os.path.lexists(t) for t in targets)


# --- cache and downloads -----------------------------------------------------------------------


def cached_file(ref: HubRef) -> Path | None:
    """The cached copy of ``ref`` (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(ref.repo_id, ref.filename, cache_dir=hub_cache_dir(), revision=ref.revision)
    except ValueError as e:  # HFValidationError: a malformed repo id
        raise UsageError(f"invalid Hub reference {ref}: {_first_line(e)}") from None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def fetch(
    ref: HubRef,
    *,
    sha256: str | None = None,
    size: int | None = None,
    label: str | None = None,
    force: bool = False,
) -> Path:
    """The local path of ``ref``, downloaded into the Hub cache if needed, verified before it is
    returned: against ``sha256`` when given (a registered pin), otherwise against the sha256 the
    Hub announced for the file (its LFS ETag).

    A commit-pinned ref that is already cached needs no network at all; a branch ref asks the
    server which commit it points to (one HEAD) and downloads only what changed.
    """
    label = label or str(ref)
    cache_dir = hub_cache_dir()
    endpoint = hub_endpoint()
    path = None
    if offline_mode():
        if force:
            raise ImlscanError(f"cannot download {label} again: HF_HUB_OFFLINE=1 forbids downloading")
        path = cached_file(ref)
        if path is None:
            raise _offline_error(label, cache_dir)
    elif ref.pinned and not force:
        path = cached_file(ref)
    if path is None:
        announced = _probe(ref, endpoint, label)
        if size is not None and announced is not None and announced != size:
            raise ImlscanError(
                f"size mismatch for {label}: {endpoint} announces {announced} bytes, the pin says {size}; "
                "nothing was downloaded",
                hint="the server or mirror (HF_ENDPOINT) serves another file: do not use it, and report it",
            )
        path = _download(ref, cache_dir, endpoint, label, force)
    expected = sha256 or announced_sha256(path)
    if expected is not None:
        check_sha256(path, expected, label, in_cache=True)
    return path


def fetch_registered(name: str, *, force: bool = False) -> Path:
    entry = registered(name)
    if entry is None:
        raise ImlscanError(f"no registered weights named {name!r}", hint=registry_hint())
    return fetch(entry.ref, sha256=entry.sha256, size=entry.size, label=f"{name} ({entry.ref})", force=force)


def registry_hint() -> str:
    names = ", ".join(sorted(REGISTRY)) or "none yet"
    return f"registered names: {names} (see 'imlscan weights list'); or use hf-hub:ORG/REPO[@REVISION] or a file path"


def announced_sha256(path: Path) -> str | None:
    """huggingface_hub names each cache blob by its ETag, which is the sha256 for LFS files."""
    blob = os.path.basename(os.path.realpath(path))
    return blob if SHA256_RE.fullmatch(blob) else None


def _probe(ref: HubRef, endpoint: str, label: str) -> int | None:
    """One HEAD without retries: fails fast (hf_hub_download would back off for ~30 s on an
    unreachable host) and tells the announced size before anything is downloaded."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(ref.repo_id, ref.filename, revision=ref.revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    except Exception as e:  # noqa: BLE001 - translated into one clear line below
        raise _hub_error(e, ref, label, endpoint) from None
    return meta.size


def _download(ref: HubRef, cache_dir: Path, endpoint: str, label: str, force: bool) -> Path:
    from huggingface_hub import hf_hub_download

    from imlscan._version import __version__

    try:
        found = hf_hub_download(
            ref.repo_id,
            ref.filename,
            revision=ref.revision,
            cache_dir=cache_dir,
            endpoint=endpoint,
            force_download=force,
            library_name="imlscan",
            library_version=__version__,
        )
    except Exception as e:  # noqa: BLE001 - translated into one clear line below
        raise _hub_error(e, ref, label, endpoint, cache_dir) from None
    return Path(found)


def _offline_error(label: str, cache_dir: Path) -> ImlscanError:
    return ImlscanError(
        f"{label} is not in the local Hugging Face cache ({cache_dir}) and HF_HUB_OFFLINE=1 forbids downloading it",
        hint="run 'imlscan weights download' with network (same HF_HOME/HF_HUB_CACHE) and copy the cache here, "
        "or pass --weights PATH to a local .safetensors file, or unset HF_HUB_OFFLINE",
    )


def _hub_error(e: Exception, ref: HubRef, label: str, endpoint: str, cache_dir: Path | None = None) -> ImlscanError:
    """One clear line for everything huggingface_hub or the network can raise."""
    from huggingface_hub import errors as hf

    rev = ref.revision or "main"
    if isinstance(e, hf.OfflineModeIsEnabled):
        return _offline_error(label, cache_dir or hub_cache_dir())
    if isinstance(e, hf.GatedRepoError):
        return ImlscanError(
            f"{ref.repo_id} is gated on {endpoint}", hint="accept its terms on the Hub and set HF_TOKEN"
        )
    if isinstance(e, hf.RepositoryNotFoundError):
        return ImlscanError(
            f"repository {ref.repo_id} not found on {endpoint}",
            hint="check the name; a private repository needs HF_TOKEN",
        )
    if isinstance(e, hf.RevisionNotFoundError):
        return ImlscanError(f"revision {rev!r} not found in {ref.repo_id} on {endpoint}")
    if isinstance(e, hf.RemoteEntryNotFoundError):
        return ImlscanError(f"file {ref.filename!r} not found in {ref.repo_id} at revision {rev!r} on {endpoint}")
    if isinstance(e, hf.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            return ImlscanError(f"access to {ref.repo_id} on {endpoint} denied (HTTP {status})", hint="set HF_TOKEN")
        return ImlscanError(
            f"the Hub at {endpoint} answered HTTP {status} for {label}",
            hint="try again later, set HF_ENDPOINT to a working mirror, or pass --weights PATH to a local file",
        )
    if isinstance(e, hf.FileMetadataError):
        return ImlscanError(
            f"{endpoint} did not answer like a Hugging Face Hub (no commit or ETag header) for {label}",
            hint="check HF_ENDPOINT and any proxy, or pass --weights PATH to a local file",
        )
    if isinstance(e, hf.HFValidationError):
        return UsageError(f"invalid Hub reference {ref}: {_first_line(e)}")
    if isinstance(e, (hf.LocalEntryNotFoundError, *_network_errors())):
        return ImlscanError(
            f"cannot reach the Hugging Face Hub at {endpoint} to download {label} ({_first_line(e)})",
            hint="check the network, set HF_ENDPOINT to a reachable mirror, or pass --weights PATH to a local file",
        )
    if isinstance(e, OSError) and cache_dir is not None:
        return ImlscanError(f"cannot write {label} to the cache {cache_dir}: {_first_line(e)}")
    return ImlscanError(f"download of {label} from {endpoint} failed: {type(e).__name__}: {_first_line(e)}")


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of whichever HTTP client huggingface_hub uses."""
    errs: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, name):
            errs.append(getattr(mod, name))
    return tuple(errs)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]
