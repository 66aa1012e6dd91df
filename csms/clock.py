"""Moved to `evfleet.clock`; re-exported here so old imports keep working until they switch."""

from evfleet.clock import (  # noqa: F401
    CLOCK_HEARTBEAT_S,
    CLOCK_TTL_S,
    Clock,
    ClockConflict,
    ClockSpec,
    RealClock,
    ScaledClock,
    SharedClock,
    acquire_clock,
    describe,
    keep_clock_alive,
    publish_shared_clock,
    read_shared_clock,
)
