"""Settings a weights file carries in its metadata (the copy-move detectors'), written and read
one way: a frozen dataclass whose fields are the settings, stored under the entry ``ENTRY``.

Why one base: a metadata entry may hold provenance notes beside the settings (which calibration
set chose them), and JSON written by other tools may spell numbers and booleans as strings; both
detectors must read such entries alike and fail with the same one-line error."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

from imlscan.errors import UsageError

S = TypeVar("S", bound="MetadataSettings")

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


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
        entry = (metadata or {}).get(cls.ENTRY)
        return cls.from_dict(entry) if entry else None


def _cast(default: Any, value: Any) -> Any:
    """``value`` as the type of the field's default; booleans also from their usual spellings."""
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() not in TRUE + FALSE:
                raise ValueError(f"not a boolean: {value!r}")
            return value.lower() in TRUE
        return bool(value)
    return type(default)(value)
