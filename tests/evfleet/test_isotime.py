"""The one ISO 8601 helper: every form evfleet reads, naive means UTC, the two written forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from evfleet.isotime import (
    IsoTimeError,
    aware_utc,
    format_iso,
    format_iso_z,
    parse_iso,
    parse_iso_or_none,
    parse_utc,
)

MOMENT = datetime(2025, 1, 15, 11, 0, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "2025-01-15T11:00:00.25Z",
    "2025-01-15T11:00:00.250000+00:00",
    "2025-01-15T12:00:00.25+01:00",
    "2025-01-15t11:00:00.25z",
    "  2025-01-15T11:00:00.25Z ",
    "2025-01-15T11:00:00.25",  # naive: read as UTC
])
def test_every_form_reads_as_the_same_instant(text: str) -> None:
    assert parse_iso(text) == MOMENT
    assert parse_utc(text).tzinfo is UTC


def test_offset_is_kept_by_parse_iso_and_dropped_by_parse_utc() -> None:
    text = "2025-01-15T12:00:00+01:00"
    assert parse_iso(text).utcoffset() == timedelta(hours=1)
    assert parse_utc(text).isoformat() == "2025-01-15T11:00:00+00:00"


@pytest.mark.parametrize("bad", ["", "yesterday", "2025-13-01T00:00:00Z", "2025-01-15T25:00:00Z", None, 12])
def test_bad_input_is_a_value_error(bad: object) -> None:
    with pytest.raises(IsoTimeError):
        parse_iso(bad)  # type: ignore[arg-type]
    assert parse_iso_or_none(bad if isinstance(bad, str) or bad is None else None) is None


def test_or_none_reads_bytes_and_absent_values() -> None:
    assert parse_iso_or_none(b"2025-01-15T11:00:00.25Z") == MOMENT
    assert parse_iso_or_none(None) is None
    assert parse_iso_or_none("") is None


def test_formatters_write_utc_and_read_back() -> None:
    local = MOMENT.astimezone(timezone(timedelta(hours=-5)))
    assert format_iso(local) == "2025-01-15T11:00:00.250000+00:00"
    assert format_iso_z(local) == "2025-01-15T11:00:00.250000Z"
    assert format_iso_z(local, timespec="seconds") == "2025-01-15T11:00:00Z"  # truncated, never rounded up
    for text in (format_iso(local), format_iso_z(local)):
        assert parse_iso(text) == MOMENT


def test_naive_datetimes_are_utc_in_formatters_too() -> None:
    naive = MOMENT.replace(tzinfo=None)
    assert aware_utc(naive) == MOMENT
    assert format_iso(naive) == format_iso(MOMENT)
