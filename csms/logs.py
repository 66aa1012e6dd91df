"""Structured logging: every line carries the station id and OCPP message id in context.

Public names: `configure_logging`, `station_id_var`, `message_id_var`, `JsonFormatter`,
`log_context`, `redact`, `RedactFilter`.

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
from contextvars import ContextVar
from datetime import UTC, datetime

station_id_var: ContextVar[str] = ContextVar("station_id", default="-")
message_id_var: ContextVar[str] = ContextVar("message_id", default="-")

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
    """Copy the context variables onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach `station_id` and `message_id`."""
        record.station_id = station_id_var.get()
        record.message_id = message_id_var.get()
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


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Configure the root logger once (stderr; JSON lines or text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_evfleet", False):
            root.removeHandler(old)
    handler._evfleet = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # the ocpp library logs every frame at INFO: keep it at WARNING unless debugging
    logging.getLogger("ocpp").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)


@contextlib.contextmanager
def log_context(station_id: str | None = None, message_id: str | None = None) -> Iterator[None]:
    """Set the logging context for a block."""
    tokens = []
    if station_id is not None:
        tokens.append((station_id_var, station_id_var.set(station_id)))
    if message_id is not None:
        tokens.append((message_id_var, message_id_var.set(message_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
