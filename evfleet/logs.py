"""One logging setup for every `evfleet` command (csms, optimizer, sim, optimize, demo).

`configure_logging(level, json_lines, node_id=...)` installs one handler on the root logger:
text lines, or (`--log-json`, `EVFLEET_LOG_JSON=true`) one JSON object per line. Structured data
are JSON keys, never dict text inside `msg`: the context (`station_id`, `message_id`,
`transaction_id`, `site`, set with `log_context`), the process's `node_id`, and every `extra=`
field of a call (`log.info("plan applied", extra={"site": "depot", "plan_id": p})`).

Public names: `configure_logging`, `station_id_var`, `message_id_var`, `transaction_id_var`,
`site_var`, `JsonFormatter`, `log_context`, `redact`, `RedactFilter`, `LineBudget`.
Stdlib only: the formatter is a few lines over `logging`, and the filters (context, redaction)
are needed with any formatter library.

No secrets in logs: the handler `configure_logging` installs rewrites every line so that the
password of any `scheme://user:password@host` URL (Redis, MQTT, ...) reads `***`; code that
logs a configured URL also passes it through `redact` itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

station_id_var: ContextVar[str] = ContextVar("station_id", default="-")
message_id_var: ContextVar[str] = ContextVar("message_id", default="-")
transaction_id_var: ContextVar[str | None] = ContextVar("transaction_id", default=None)
site_var: ContextVar[str | None] = ContextVar("site", default=None)

_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "station_id", "message_id"}


_URL_SECRET = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")


def redact(text: str) -> str:
    """`text` with the password of every URL's user info replaced by `***`."""
    return _URL_SECRET.sub(r"\g<scheme>\g<user>:***@", text)


class RedactFilter(logging.Filter):
    """Redact URL passwords in the formatted message (and the exception text) of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message when it holds a URL password."""
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if redact(text) != text:
                record.exc_text = redact(text)
                record.exc_info = None
        return True


class ContextFilter(logging.Filter):
    """Copy the context variables (and the process's fixed fields) onto each record."""

    def __init__(self, fields: dict[str, str] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach `station_id`, `message_id`, `transaction_id` and `site` (unless the call gave them)."""
        record.station_id = getattr(record, "station_id", None) or station_id_var.get()
        record.message_id = message_id_var.get()
        for name, var in (("transaction_id", transaction_id_var), ("site", site_var)):
            value = var.get()
            if value is not None and getattr(record, name, None) is None:
                setattr(record, name, value)
        for name, value in self.fields.items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, station_id, message_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as JSON."""
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "station_id": getattr(record, "station_id", "-"),
            "message_id": getattr(record, "message_id", "-"),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(station_id)s %(message_id)s] %(message)s"


def configure_logging(level: str = "INFO", json_lines: bool = False, *, node_id: str | None = None,
                      path: Path | None = None, exclusive: bool = False) -> None:
    """Configure the root logger of a command (idempotent: replaces the handler it installed before).

    `json_lines`: one JSON object per line (`JsonFormatter`), else text. `node_id`: a field of every
    line (the csms node, the optimizer consumer). `path`: write to this file instead of stderr.
    `exclusive`: remove every other root handler too (the demo: the terminal shows only the demo).
    """
    handler: logging.Handler = (logging.FileHandler(path, mode="w") if path
                                else logging.StreamHandler(sys.stderr))
    handler.addFilter(ContextFilter({"node_id": node_id} if node_id else None))
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if exclusive or getattr(old, "_evfleet", False):
            root.removeHandler(old)
            if getattr(old, "_evfleet", False):
                old.close()
    handler._evfleet = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # the ocpp library logs every frame at INFO: keep it at WARNING unless debugging
    logging.getLogger("ocpp").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)


@contextlib.contextmanager
def log_context(station_id: str | None = None, message_id: str | None = None,
                transaction_id: str | None = None, site: str | None = None) -> Iterator[None]:
    """Set the logging context for a block (the given fields only)."""
    tokens: list[tuple[ContextVar[Any], Token[Any]]] = []
    for var, value in ((station_id_var, station_id), (message_id_var, message_id),
                       (transaction_id_var, transaction_id), (site_var, site)):
        if value is not None:
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class LineBudget:
    """At most `per_window` lines per `window_s` for one kind of per-event WARNING (a timed-out
    call, a late answer): a wave of thousands (a node gone with its stations' calls in flight) is
    not thousands of lines. `take(now)` says whether to log this one and how many were passed over
    since the last line logged (so that line can say so)."""

    def __init__(self, per_window: int = 20, window_s: float = 1.0) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._start = float("-inf")
        self._used = 0
        self._skipped = 0

    def take(self, now: float) -> int | None:
        """None: do not log this one; else log it, with this many passed over before it."""
        if now - self._start >= self.window_s:
            self._start, self._used = now, 0
        if self._used >= self.per_window:
            self._skipped += 1
            return None
        self._used += 1
        skipped, self._skipped = self._skipped, 0
        return skipped
