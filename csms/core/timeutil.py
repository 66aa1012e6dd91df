"""Timestamps as the store keeps them: ISO 8601 UTC strings.

Public names: `parse_ts`, `iso`, `TimestampError`.
"""

from __future__ import annotations

from datetime import datetime

from csms.errors import PayloadValueError
from evfleet.isotime import IsoTimeError, format_iso, parse_utc


class TimestampError(PayloadValueError):
    """A timestamp is not ISO 8601 with a time zone."""


def parse_ts(value: str) -> datetime:
    """Parse an OCPP dateTime (ISO 8601, `Z` or offset) into an aware UTC datetime."""
    try:
        return parse_utc(value)  # naive is read as UTC (OCPP requires UTC; evfleet.isotime)
    except IsoTimeError as err:
        raise TimestampError(f"not an ISO 8601 timestamp: {value!r}") from err


def iso(moment: datetime) -> str:
    """Canonical ISO string (UTC, `+00:00`)."""
    return format_iso(moment)
