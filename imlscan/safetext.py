"""Text that leaves imlscan safely: strict JSON, spreadsheet cells, terminal lines, HTML links.

File names, metadata and weights are attacker-controlled. Whatever imlscan writes from them must
not become a formula in a spreadsheet, an escape sequence in a terminal, a broken link in a report,
or a JSON file that strict parsers refuse (bare ``NaN``). Every writer goes through these four.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import quote

from imlscan.errors import ImlscanError

# C0 and C1 controls, DEL, bidirectional overrides and isolates, lone surrogates, non-characters.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _where_not_finite(obj: Any, path: str = "$") -> str | None:
    """The JSON path of the first NaN or infinity in ``obj`` (None: all finite)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else path
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (hit := _where_not_finite(v, f"{path}.{k}")) is not None:
                return hit
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            if (hit := _where_not_finite(v, f"{path}[{i}]")) is not None:
                return hit
    return None


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and infinities (strict parsers reject them) with a one-line
    error naming where the value sits, instead of writing invalid JSON.

    Arguments:
        obj: what to write.
        **kwargs: passed to ``json.dumps`` (``indent``, ``default``, ``sort_keys``...).

    Returns:
        The JSON text.

    Raises:
        ImlscanError: a value is not finite.
    """
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as e:
        if "not JSON compliant" not in str(e):
            raise
        where = _where_not_finite(obj) or "a value"
        raise ImlscanError(
            f"refusing to write a non-finite number at {where} (NaN or infinity)",
            hint="the weights or the input produced it; check them with imlscan weights info",
        ) from None


def csv_cell(value: Any) -> Any:
    """A spreadsheet cell that cannot start a formula: text beginning with ``= + - @`` or a tab or
    carriage return gets a leading apostrophe (OWASP's advice). Numbers pass unchanged."""
    if not isinstance(value, str):
        return value
    value = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else "\ufffd", value)
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def shown(text: Any) -> str:
    """Text fit for one terminal or log line: control characters (escape sequences, newlines,
    carriage returns) and bidi overrides appear as visible escapes (``\\x1b``, ``\\n``,
    ``\\u202e``), never interpreted."""

    def esc(m: re.Match[str]) -> str:
        c = m.group()
        code = ord(c)
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c)
        return named or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")

    return _UNSAFE.sub(esc, str(text))


def href(relative: str) -> str:
    """A relative path as an HTML link target: every character that means something in a URL
    (``#``, ``?``, ``%``, spaces, quotes) percent-encoded, the separators kept."""
    return quote(relative.replace("\\", "/"), safe="/")
