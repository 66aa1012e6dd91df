"""Timestamps as the store keeps them: ISO 8601 UTC strings.

Public names: `parse_ts`, `iso`, `TimestampError`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from csms.errors import PayloadValueError


class TimestampError(PayloadValueError):
    """A timestamp is not ISO 8601 with a time zone."""


def parse_ts(value: str) -> datetime:
    """Parse an OCPP dateTime (ISO 8601, `Z` or offset) into an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError) as err:
        raise TimestampError(f"not an ISO 8601 timestamp: {value!r}") from err
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # OCPP requires UTC; tolerate a missing offset
    return parsed.astimezone(UTC)


def iso(moment: datetime) -> str:
    """Canonical ISO string (UTC, `+00:00`)."""
    return moment.astimezone(UTC).isoformat()
