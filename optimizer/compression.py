"""Moved to `evfleet.compression`; re-exported here so old imports keep working until they switch."""

from evfleet.compression import (  # noqa: F401
    DISTORTION_WEIGHT,
    Period,
    ceil1,
    compress_periods,
    done_time,
    energy_between,
    merge_equal,
)
