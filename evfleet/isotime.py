"""ISO 8601 timestamps: the one parser and the formatters every package uses (pure).

Public names: `IsoTimeError`, `parse_iso`, `parse_utc`, `parse_iso_or_none`, `aware_utc`,
`format_iso`, `format_iso_z`.

Rules, the same everywhere:

- **Naive means UTC.** A timestamp without an offset (``2025-01-01T08:00:00``) is read as UTC: OCPP
  requires UTC date-times and every timestamp evfleet writes carries an offset, so a naive one can
  only come from a station or an operator who meant UTC. The same holds for a naive `datetime`
  handed to a formatter (it is never read as the machine's local time).
- ``Z`` and ``z`` (and a lowercase ``t`` separator) are accepted; surrounding blanks are ignored.
- The store and the event stream write `format_iso` (UTC, ``+00:00``, microseconds kept); the OCPP
  wire writes `format_iso_z` (UTC, trailing ``Z``), with ``timespec="seconds"`` for the profiles the
  optimizer builds (whole seconds, what real chargers accept).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = [
    "IsoTimeError",
    "aware_utc",
    "format_iso",
    "format_iso_z",
    "parse_iso",
    "parse_iso_or_none",
    "parse_utc",
]


class IsoTimeError(ValueError):
    """A text is not an ISO 8601 date-time."""


def parse_iso(value: str) -> datetime:
    """Aware datetime of an ISO 8601 date-time, its offset kept (naive is read as UTC).

    Raises `IsoTimeError` (a ValueError) for anything else, including non-strings.
    """
    if not isinstance(value, str):
        raise IsoTimeError(f"not an ISO 8601 timestamp: {value!r}")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    if len(text) > 10 and text[10] == "t":
        text = text[:10] + "T" + text[11:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as err:
        raise IsoTimeError(f"not an ISO 8601 timestamp: {value!r}") from err
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_utc(value: str) -> datetime:
    """`parse_iso`, converted to UTC."""
    return parse_iso(value).astimezone(UTC)


def parse_iso_or_none(value: str | bytes | None) -> datetime | None:
    """`parse_iso` for stored or optional values: None when absent, empty or not a date-time."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not value:
        return None
    try:
        return parse_iso(value)
    except IsoTimeError:
        return None


def aware_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already (never local time)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_iso(moment: datetime) -> str:
    """The store's form: UTC with ``+00:00``, e.g. ``2025-01-01T08:00:00.250000+00:00``."""
    return aware_utc(moment).isoformat()


def format_iso_z(moment: datetime, timespec: str = "auto") -> str:
    """The OCPP wire form: UTC with a trailing ``Z``; ``timespec="seconds"`` drops (truncates)
    the fraction, e.g. ``2025-01-01T08:00:00Z``."""
    return aware_utc(moment).isoformat(timespec=timespec).replace("+00:00", "Z")
