"""Moved to `evfleet.events`; re-exported here so old imports keep working until they switch."""

from evfleet.events import (  # noqa: F401
    Event,
    EventType,
)
