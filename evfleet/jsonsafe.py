"""JSON from untrusted or stored text without recursion, NaN or Infinity, pure.

Public names: `MAX_JSON_DEPTH`, `depth_exceeds`, `loads_finite`, `load_stored`, `TOO_DEEP`,
`has_lone_surrogate`.

Python's `json` accepts `NaN`/`Infinity` (not JSON, RFC 8259 §6), turns `1e400` into `inf`, and
recurses once per nesting level (a deep document raises RecursionError in the parser or later in
a validator or serializer), and decodes `"\ud800"` into a string that cannot be encoded as UTF-8
(RFC 8259 §8.2: unpaired surrogates), which fails later when the string is stored. Station
frames are checked with `depth_exceeds`, `loads_finite` and `has_lone_surrogate` before anything
else sees them; stored documents are read back with `load_stored`, so a value
that slipped in earlier can never make an API answer fail.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_JSON_DEPTH = 32  # a whole OCPP frame; OCPP 2.0.1 messages need < 10, DataTransfer data a little more
TOO_DEEP = {"omitted": f"nested deeper than {MAX_JSON_DEPTH} levels"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays/objects deeper than `limit` (brackets inside strings do not
    count); linear, no recursion."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def loads_finite(text: str | bytes) -> tuple[Any, bool]:
    """`json.loads`, and whether the text held NaN/Infinity or a number overflowing to infinity
    (each such value is returned as None). Raises ValueError/RecursionError like json.loads."""
    bad: list[str] = []

    def constant(name: str) -> None:
        bad.append(name)

    def number(literal: str) -> float | None:
        value = float(literal)
        if not math.isfinite(value):
            bad.append(literal)
            return None
        return value

    return json.loads(text, parse_constant=constant, parse_float=number), bool(bad)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def has_lone_surrogate(text: str, value: Any) -> bool:
    """Whether `value` (parsed from JSON `text`) holds a string with an unpaired UTF-16 surrogate."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def load_stored(text: str | bytes | None, default: Any = None, limit: int = MAX_JSON_DEPTH) -> Any:
    """A stored JSON document for display: `default` when absent or corrupt, `TOO_DEEP` when nested
    deeper than `limit`, non-finite numbers as None."""
    if text is None or text == "" or text == b"":
        return default
    try:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
        if depth_exceeds(decoded, limit):
            return dict(TOO_DEEP)
        return loads_finite(decoded)[0]
    except (ValueError, RecursionError):
        return default
