"""JSON from untrusted or stored text without recursion, NaN or Infinity, pure.

Public names: `MAX_JSON_DEPTH`, `depth_exceeds`, `loads_finite`, `load_stored`, `TOO_DEEP`,
`has_lone_surrogate`, `dumps_compact`.

Python's `json` accepts `NaN`/`Infinity` (not JSON, RFC 8259 §6), turns `1e400` into `inf`, and
recurses once per nesting level (a deep document raises RecursionError in the parser or later in
a validator or serializer), and decodes `"\ud800"` into a string that cannot be encoded as UTF-8
(RFC 8259 §8.2: unpaired surrogates), which fails later when the string is stored. Station
frames are checked with `depth_exceeds`, `loads_finite` and `has_lone_surrogate` before anything
else sees them; stored documents are read back with `load_stored`, so a value
that slipped in earlier can never make an API answer fail.

Both directions go through orjson when it gives what `json` gives (about 5-10x faster on an OCPP
frame): `loads_finite` parses with orjson first and falls back to `json` for any text orjson
refuses (NaN, Infinity, overflow, unpaired surrogates, invalid JSON: `json` then names the fault)
or may read differently (integers beyond 64 bits, which orjson turns into floats: any float of
2**63 or more is parsed again by `json`);
`dumps_compact` falls back to `json` for values orjson does not take (non-str keys, huge ints).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import orjson

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


_INT64 = 2.0**63


def _has_huge_float(value: Any) -> bool:
    """Whether a parsed document holds a float of 2**63 or more in magnitude (orjson returns an
    integer literal beyond 64 bits as such a float, `json` as an int); no recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float and not -_INT64 < item < _INT64:
            return True
    return False


def loads_finite(text: str | bytes) -> tuple[Any, bool]:
    """`json.loads`, and whether the text held NaN/Infinity or a number overflowing to infinity
    (each such value is returned as None). Raises ValueError/RecursionError like json.loads."""
    try:
        # strict RFC 8259: refuses NaN, Infinity, overflow and unpaired surrogates
        fast = orjson.loads(text)
        if not _has_huge_float(fast):
            return fast, False
    except orjson.JSONDecodeError:
        pass  # json below names what is wrong (or accepts what orjson refused)
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


_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps_compact(value: Any, default: Callable[[Any], Any] | None = str) -> str:
    """`json.dumps(value, separators=(",", ":"), default=default)` through orjson: the same JSON
    document (non-ASCII characters as UTF-8 instead of \\u escapes, NaN/Infinity as null, a
    plain Enum member as its value); datetimes and dataclasses go to `default` as with `json`,
    float subclasses (numpy's float64) are numbers as with `json`."""
    def fallback(obj: Any) -> Any:
        if isinstance(obj, float):
            return float(obj)
        if default is None:
            raise TypeError(f"{type(obj).__name__} is not JSON serializable")
        return default(obj)

    try:
        return orjson.dumps(value, default=fallback, option=_PASSTHROUGH).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError: a non-str key, an int beyond 64 bits, ...
        return json.dumps(value, separators=(",", ":"), default=default)


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
