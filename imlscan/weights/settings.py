"""What a weights file's metadata may hold: the schema every file is checked against before
anything is built from it, and the base of the settings it carries (the copy-move detectors').

Why a schema: a weights file comes from anywhere (a download, a colleague, an attacker). Its
metadata decides how much memory imlscan allocates (the model's dims and depths, the input and
matcher sizes) and what every report repeats (licence, provenance). Each field imlscan reads
therefore has a type and bounds, checked before any allocation, and a violation is one line
naming the field and the rule (``metadata field config.depths[2] = 4096 is above the limit 64``).
Bounds are those of the largest real variant (sparsevit-b) and the shipped files, with headroom.

Why one settings base: a metadata entry may hold provenance notes beside the settings (which
calibration set chose them), and JSON written by other tools may spell numbers and booleans as
strings; both detectors must read such entries alike and fail with the same one-line error."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from json import decoder, scanner
from typing import Any, ClassVar, TypeVar

from imlscan.defaults import MODES
from imlscan.errors import UsageError
from imlscan.safetext import shown

S = TypeVar("S", bound="MetadataSettings")

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

# Whole-file limits. The shipped default's metadata is 23 KB, 7 levels deep, its longest string
# 143 characters; a calibration set of 50,000 reference photos still fits in 1 MiB.
MAX_METADATA_CHARS = 1 << 20
MAX_DEPTH = 16
MAX_TEXT = 8192  # characters of any string: a licence name or summary, not a licence's full text
MAX_KEY = 256
MAX_NAME = 256  # name and variant, printed in every report
MAX_PROVENANCE_CHARS = 1 << 17  # copied into every report; the default's is 18 KB (12 training stages)
MAX_REFERENCES = 100_000
MAX_VALUES = 1 << 18  # JSON values parsed from metadata over the size limit, to name the field at fault
# sparsevit-b has 50.2 M parameters, 5/8/20/7 blocks, dims up to 512 and 4 block groups.
MAX_PARAMETERS = 200_000_000
MAX_STAGE_DEPTH = 64
MAX_DIM = 2048
MAX_GROUPS = 64
# The network is run whole at this size in resize mode: 4x the paper's 512, twice the native tile.
MAX_INPUT_SIZE = 2048
# The dense copy-move matcher's work grows as size^4 (cells x keys): 1024 is 16x the shipped 512.
MAX_COPY_MOVE_SIZE = 1024


class MetadataError(ValueError):
    """Metadata that breaks a rule of the schema (a ``ValueError``, as a JSON syntax error is)."""


class FieldError(MetadataError):
    """A metadata field that breaks its rule; ``field`` is its path (``config.depths[2]``)."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"field {field} {rule}")
        self.field, self.rule = field, rule

    @property
    def section(self) -> str:
        """The top-level entry the field sits in (``config`` for ``config.depths[2]``)."""
        return self.field.split(".")[0].split("[")[0]


Check = Callable[[Any, str], None]


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return "a list" if isinstance(v, list) else "an object"


def _value(v: Any) -> str:
    """A value as one short, terminal-safe piece of a message (never the whole of a long string)."""
    if isinstance(v, str):
        return repr(shown(v[:40]) + ("..." if len(v) > 40 else ""))
    s = json.dumps(v) if isinstance(v, (bool, int, float)) or v is None else _kind(v)
    return s if len(s) <= 40 else s[:24] + "..."


def _join(field: str, key: str) -> str:
    key = shown(key[:64]) + ("..." if len(key) > 64 else "")
    return f"{field}.{key}" if field else key


def _bounded(v: float, field: str, lo: float | None, hi: float | None, above: bool = False) -> None:
    if lo is not None and (v <= lo if above else v < lo):
        raise FieldError(
            field, f"= {_value(v)} must be above {lo}" if above else f"= {_value(v)} is below the minimum {lo}"
        )
    if hi is not None and v > hi:
        raise FieldError(field, f"= {_value(v)} is above the limit {hi}")


def _spelled(v: Any, field: str, parse: Callable[[str], Any], what: str) -> Any:
    """A setting spelled as a string (``"512"``), read as ``parse`` reads it; other values as they are."""
    if not isinstance(v, str):
        return v
    try:
        return parse(v.strip())
    except ValueError:
        raise FieldError(field, f"must be {what}, got {_value(v)}") from None


def integer(lo: int | None = None, hi: int | None = None, *, choices: tuple = (), lenient: bool = False) -> Check:
    """An integer (not a boolean) in ``[lo, hi]`` or among ``choices``; ``lenient`` also takes
    the spellings settings entries may use (``"512"``, ``512.0``)."""

    def check(v: Any, field: str) -> None:
        if lenient:
            v = _spelled(v, field, int, "an integer")
        if lenient and isinstance(v, float) and math.isfinite(v) and v == int(v):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise FieldError(field, f"must be an integer, got {_kind(v)}")
        if choices and v not in choices:
            raise FieldError(field, f"= {_value(v)} is not one of {', '.join(map(str, choices))}")
        _bounded(v, field, lo, hi)

    return check


def number(lo: float | None = None, hi: float | None = None, *, above: bool = False, lenient: bool = False) -> Check:
    """A finite number in ``[lo, hi]`` (``above``: strictly above ``lo``); ``lenient`` also
    takes numbers spelled as strings."""

    def check(v: Any, field: str) -> None:
        if lenient:
            v = _spelled(v, field, float, "a number")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise FieldError(field, f"must be a number, got {_kind(v)}")
        if not math.isfinite(v):
            raise FieldError(field, f"= {_value(v)} is not a finite number")
        _bounded(v, field, lo, hi, above)

    return check


def boolean(*, lenient: bool = False) -> Check:
    """``true``/``false``; ``lenient`` also takes ``"yes"``, ``"off"``, ``1``... as settings do."""

    def check(v: Any, field: str) -> None:
        if isinstance(v, bool):
            return
        if lenient and (v in (0, 1) or (isinstance(v, str) and v.lower() in TRUE + FALSE)):
            return
        raise FieldError(field, f"must be true or false, got {_kind(v) if not isinstance(v, str) else _value(v)}")

    return check


def text(max_len: int = MAX_TEXT, *, choices: tuple[str, ...] = ()) -> Check:
    """A string of at most ``max_len`` characters, or one of ``choices``."""

    def check(v: Any, field: str) -> None:
        if not isinstance(v, str):
            raise FieldError(field, f"must be a string, got {_kind(v)}")
        if choices and v not in choices:
            raise FieldError(field, f"= {_value(v)} is not one of {', '.join(choices)}")
        if len(v) > max_len:
            raise FieldError(field, f"is {len(v):,} characters long, above the limit {max_len:,}")

    return check


def items(item: Check, min_len: int, max_len: int) -> Check:
    """A list of ``min_len`` to ``max_len`` values, each checked by ``item``."""

    def check(v: Any, field: str) -> None:
        if not isinstance(v, list):
            raise FieldError(field, f"must be a list, got {_kind(v)}")
        if min_len == max_len and len(v) != min_len:
            raise FieldError(field, f"has {len(v):,} items, not {min_len}")
        if len(v) < min_len:
            raise FieldError(field, f"has {len(v):,} items, below the minimum {min_len}")
        if len(v) > max_len:
            raise FieldError(field, f"has {len(v):,} items, above the limit {max_len:,}")
        for i, x in enumerate(v):
            item(x, f"{field}[{i}]")

    return check


def finite(v: Any, field: str) -> None:
    """Any JSON whose numbers are all finite (entries imlscan reads or copies into reports)."""
    stack = [(v, field)]
    while stack:
        x, where = stack.pop()
        if isinstance(x, float) and not math.isfinite(x):
            raise FieldError(where, f"= {_value(x)} is not a finite number")
        if isinstance(x, dict):
            stack.extend((y, _join(where, str(k))) for k, y in reversed(list(x.items())))
        elif isinstance(x, list):
            stack.extend((y, f"{where}[{i}]") for i, y in reversed(list(enumerate(x))))


def anything(v: Any, field: str) -> None:
    """Informational JSON (training logs may hold NaN metrics): only the whole-file limits apply."""


def refused(rule: str) -> Check:
    """For keys an entry must not have (an unknown config field would be silently ignored)."""

    def check(v: Any, field: str) -> None:
        raise FieldError(field, rule)

    return check


def entry(
    known: Mapping[str, Check],
    *,
    rest: Check = anything,
    required: tuple[str, ...] = (),
    nullable: bool = False,
) -> Check:
    """An object whose ``known`` keys are checked, other keys by ``rest``; ``required`` keys must
    be there, and ``nullable`` entries may be ``null`` (off)."""

    def check(v: Any, field: str) -> None:
        if v is None and nullable:
            return
        if not isinstance(v, dict):
            raise FieldError(field, f"must be an object, got {_kind(v)}")
        for k in required:
            if k not in v:
                raise FieldError(_join(field, k), "is missing")
        for k, x in v.items():
            sub = _join(field, k)
            (known[k] if k in known else rest)(x, sub)

    return check


def _each_value(check: Check) -> Check:
    def each(v: Any, field: str) -> None:
        entry({}, rest=check)(v, field)

    return each


_groups = items(integer(1, MAX_STAGE_DEPTH), 1, MAX_GROUPS)
CONFIG = entry(
    {
        "depths": items(integer(1, MAX_STAGE_DEPTH), 4, 4),
        "dims": items(integer(1, MAX_DIM), 4, 4),
        "head_dim": integer(1, MAX_DIM),
        "mlp_ratio": number(0, 16, above=True),
        "qkv_bias": boolean(),
        "stage3_groups": _groups,
        "stage3_sparsity": _groups,
        "stage4_groups": _groups,
        "stage4_sparsity": _groups,
        "drop_path_rate": number(0, 1),
        "layer_scale_init": number(-1, 1),
        "head_gamma_init": number(-1, 1),
        "dup_dim": integer(0, 1024),
        "dup_topk": integer(1, 256),
        "dup_exclude": integer(0, MAX_STAGE_DEPTH),
        "dup_key_stride": integer(choices=(2, 4, 8)),
    },
    rest=refused("is not a SparseViT config field"),
)
# Inputs are in [0, 1]: ImageNet's mean and std are about 0.45 and 0.22.
PREPROCESSING = entry(
    {
        "mode": text(choices=MODES),
        "size": integer(32, MAX_INPUT_SIZE),
        "mean": items(number(-10, 10), 3, 3),
        "std": items(number(0.001, 10), 3, 3),
    }
)
COPY_MOVE = entry(
    {
        "size": integer(32, MAX_COPY_MOVE_SIZE, lenient=True),
        "key_stride": integer(choices=(2, 4, 8), lenient=True),
        "exclude": integer(1, 64, lenient=True),
        "radius": integer(1, 64, lenient=True),
        "tolerance": integer(0, 64, lenient=True),
        "threshold": number(0, 1, lenient=True),
    },
    rest=finite,
    nullable=True,
)
KEYPOINTS = entry(
    {
        "ratio": number(0, 1, lenient=True),
        "min_shift": number(0, 10_000, lenient=True),
        "min_inliers": integer(3, 10_000, lenient=True),
        "max_transforms": integer(1, 64, lenient=True),
        "reproj": number(0, 1000, lenient=True),
        "window": integer(3, 255, lenient=True),
        "corr": number(-1, 1, lenient=True),
        "mirror": boolean(lenient=True),
        "verify": boolean(lenient=True),
        "min_region_corr": number(-1, 1, lenient=True),
        "max_fit_error": number(0, 1000, lenient=True),
    },
    rest=finite,
    nullable=True,
)
_count = integer(0, 10**9)
CALIBRATION = entry(
    {
        "threshold": number(0, 1),
        "authentic_scores": items(number(), 0, MAX_REFERENCES),
        "logit_offset": number(),
        "total_logit_offset": number(),
        "n_references": _count,
        "n_authentic": _count,
        "n_images": _count,
        "n_manipulated": _count,
        "score_version": integer(1, 10**6),
        "reference_precision": text(64),
    },
    rest=finite,
    nullable=True,
)
FUSION = entry(
    {
        "version": integer(lenient=True),
        "terms": _each_value(entry({"bias": number(lenient=True), "weight": number(lenient=True)}, rest=finite)),
    },
    rest=finite,
    nullable=True,
)
METADATA = entry(
    {
        "format_version": integer(1),
        "arch": text(MAX_NAME),
        "name": text(MAX_NAME),
        "variant": text(MAX_NAME),
        "config": CONFIG,
        "preprocessing": PREPROCESSING,
        "provenance": entry({}, rest=finite),
        "licence": text(),
        "storage_dtype": text(64),
        "tensors_sha256": text(64),
        "copy_move": COPY_MOVE,
        "copy_move_keypoints": KEYPOINTS,
        "calibration": CALIBRATION,
        "fusion": FUSION,
    },
    required=("config",),
)


def check_limits(meta: Any) -> None:
    """The limits every part of the metadata obeys, read or not: nesting depth, string and key
    lengths. Iterative, so that no nesting can exhaust the stack."""
    stack = [(meta, "", 0)]
    while stack:
        v, field, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FieldError(field, f"is nested {depth} levels deep, above the limit {MAX_DEPTH}")
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise FieldError(field, f"is {len(v):,} characters long, above the limit {MAX_TEXT:,}")
        if isinstance(v, dict):
            for k, x in reversed(list(v.items())):
                if len(k) > MAX_KEY:
                    raise FieldError(_join(field, k), f"has a name of {len(k):,} characters, above the limit {MAX_KEY}")
                stack.append((x, _join(field, k), depth + 1))
        elif isinstance(v, list):
            stack.extend((x, f"{field}[{i}]", depth + 1) for i, x in reversed(list(enumerate(v))))


def parse_metadata(raw: str) -> Any:
    """The metadata's JSON text parsed, within bounds.

    Within ``MAX_METADATA_CHARS`` it is plain ``json.loads``. Above, the file is refused, but the
    field at fault is named when it can be (a 20 MB licence: ``field licence is 20,971,520
    characters long``): the text is parsed by the pure-Python scanner, which counts the values and
    stops after ``MAX_VALUES``, so that 100 MB of ``[],[],...`` never becomes gigabytes of lists.

    Raises:
        MetadataError: too large (``FieldError`` when one field is named).
        ValueError: not JSON. RecursionError: nested beyond Python's stack.
    """
    if len(raw) <= MAX_METADATA_CHARS:
        return json.loads(raw)
    too_large = MetadataError(f"metadata is {len(raw):,} characters of JSON, above the limit {MAX_METADATA_CHARS:,}")
    count = 0

    def scan(text: str, idx: int) -> Any:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise too_large
        return inner(text, idx)

    parser = json.JSONDecoder()
    parser.parse_object = lambda s_end, strict, _, *rest: decoder.JSONObject(s_end, strict, scan, *rest)  # type: ignore[method-assign]
    parser.parse_array = lambda s_end, _: decoder.JSONArray(s_end, scan)  # type: ignore[method-assign]
    inner = scanner.py_make_scanner(parser)
    parser.scan_once = scan  # type: ignore[method-assign]
    check_limits(parser.decode(raw))
    raise too_large


def check_metadata(meta: dict[str, Any]) -> None:
    """Check parsed metadata against the schema: the whole-file limits, then every field imlscan
    reads, then the size of what every report copies.

    Raises:
        FieldError: the first field that breaks a rule.
    """
    check_limits(meta)
    METADATA(meta, "")
    provenance = len(json.dumps(meta.get("provenance") or {}))
    if provenance > MAX_PROVENANCE_CHARS:
        raise FieldError(
            "provenance",
            f"is {provenance:,} characters of JSON, above the limit {MAX_PROVENANCE_CHARS:,} "
            "(it is copied into every report)",
        )


class MetadataSettings:
    """Mixin for frozen dataclasses of settings; subclasses name their metadata ``ENTRY``."""

    ENTRY: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[S], d: dict[str, Any]) -> S:
        """Read a metadata entry; keys other than the settings (provenance notes) are ignored."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        try:
            return cls(**{k: _cast(getattr(cls, k), v) for k, v in d.items() if k in names})
        except (TypeError, ValueError) as e:
            raise UsageError(f"bad {cls.ENTRY} entry in the weights metadata: {e}") from None

    @classmethod
    def of(cls: type[S], metadata: dict[str, Any] | None) -> S | None:
        """The settings a weights file's metadata carries, or None (absent or null: off)."""
        value = (metadata or {}).get(cls.ENTRY)
        return cls.from_dict(value) if value else None


def _cast(default: Any, value: Any) -> Any:
    """``value`` as the type of the field's default; booleans also from their usual spellings."""
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() not in TRUE + FALSE:
                raise ValueError(f"not a boolean: {value!r}")
            return value.lower() in TRUE
        return bool(value)
    return type(default)(value)
