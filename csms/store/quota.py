"""Per-station storage quota for the events a station can produce at will.

Public names: `EventQuota`, `QUOTA_EVENT_TYPES`, `trim_event_data`.

A station decides how many DataTransfers, security events, device-model events, status
notifications of logs and firmware, and malformed frames (`protocol.error`) it sends. Each of
these is stored only while the station is under `per_hour` such events in the current hour
(counter `{prefix}:station:{sid}:quota:{hour}`, expires after the hour); past it the event is
counted in `evfleet_station_events_dropped_total{type}` and not stored (the station is still
answered as usual, and state such as `firmware_status` is still kept). An event whose data
serializes to more than `max_bytes` keeps only its short scalar fields plus a note, so one
65 KB DataTransfer costs what a short one does. Transactions, meter values, status and boot
are state, never dropped by this quota.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from csms.metrics import EVENTS_DROPPED, EVENTS_TRIMMED
from evfleet.clock import Clock
from evfleet.events import EventType
from evfleet.keys import Keys

log = logging.getLogger(__name__)

QUOTA_EVENT_TYPES = frozenset({EventType.DATA_TRANSFER, EventType.SECURITY_EVENT, EventType.REPORT,
                               EventType.LOG_STATUS, EventType.FIRMWARE_STATUS, EventType.PROTOCOL_ERROR})
SCALAR_MAX_CHARS = 256


def trim_event_data(data: Mapping[str, Any], max_bytes: int) -> tuple[dict[str, Any], bool]:
    """`data` itself when its JSON fits in `max_bytes`, else its short scalar fields and a note."""
    text = json.dumps(data, separators=(",", ":"), default=str)
    if len(text.encode()) <= max_bytes:
        return dict(data), False
    kept = {k: v for k, v in data.items()
            if v is None or isinstance(v, bool | int | float)
            or (isinstance(v, str) and len(v) <= SCALAR_MAX_CHARS)}
    kept["omitted"] = f"{len(text.encode())} bytes of data over the {max_bytes}-byte limit"
    return kept, True


class EventQuota:
    """Hourly per-station counters in Redis (see module docstring)."""

    def __init__(self, redis: Any, keys: Keys, clock: Clock, per_hour: int, max_bytes: int) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.per_hour = per_hour
        self.max_bytes = max_bytes

    async def admit(self, station_id: str, event_type: EventType,
                    data: Mapping[str, Any]) -> dict[str, Any] | None:
        """The data to store for this event (maybe trimmed), or None when over the quota."""
        if event_type not in QUOTA_EVENT_TYPES or not station_id:
            return dict(data)
        hour = int(self.clock.now().timestamp()) // 3600
        key = self.keys.station_quota(station_id, hour)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, 7200)
        count, _ = await pipe.execute()
        if int(count) > self.per_hour:
            EVENTS_DROPPED.labels(event_type.value).inc()
            if int(count) == self.per_hour + 1:
                log.warning("station %s is over its quota of %d stored events per hour; further %s and "
                            "other station events are not stored until the hour ends", station_id,
                            self.per_hour, event_type.value)
            return None
        trimmed, was_trimmed = trim_event_data(data, self.max_bytes)
        if was_trimmed:
            EVENTS_TRIMMED.labels(event_type.value).inc()
        return trimmed
