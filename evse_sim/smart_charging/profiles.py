"""Moved to `evfleet.profile`; re-exported here so old imports keep working until they switch."""

from evfleet.profile import (  # noqa: F401
    DEFAULT_PHASES,
    DEFAULT_VOLTAGE_V,
    RECURRENCE_PERIOD_S,
    ChargingProfile,
    ChargingSchedule,
    Electrical,
    Kind,
    ProfileError,
    Purpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
    a_to_w,
    format_time,
    limit_to_w,
    parse_time,
    w_to_a,
    w_to_limit,
)
