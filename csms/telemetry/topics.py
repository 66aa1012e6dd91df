"""What the MQTT bridge publishes, as data (Home Assistant `EntityDescription` style).

Topics are relative to `settings.mqtt_topic_prefix` (default `evfleet`); docs/mqtt.md lists
them. `EVENT_SUBJECTS` says which documents an event type makes stale; the `*_MEASURES`
tables say which plain-value leaf topics each document fans out to, with unit and value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from evfleet.events import EventType


class Subject(StrEnum):
    """Kinds of documents published."""

    STATION = "station"
    SESSION = "session"
    SITE = "site"
    PLAN = "plan"
    EVENT = "event"


@dataclass(frozen=True, kw_only=True)
class Measure:
    """One plain-value leaf topic of a document."""

    key: str
    unit: str
    value_fn: Callable[[dict[str, Any]], Any]
    retain: bool = True


def _num(key: str, digits: int = 3) -> Callable[[dict[str, Any]], Any]:
    def value(doc: dict[str, Any]) -> Any:
        v = doc.get(key)
        return None if v is None else round(float(v), digits)
    return value


STATION_MEASURES: tuple[Measure, ...] = (
    Measure(key="state", unit="", value_fn=lambda d: d.get("status")),
    Measure(key="online", unit="", value_fn=lambda d: "1" if d.get("online") else "0"),
    Measure(key="power_kw", unit="kW", value_fn=_num("power_kw")),
)
SESSION_MEASURES: tuple[Measure, ...] = (
    Measure(key="power_kw", unit="kW", value_fn=_num("power_kw"), retain=False),
    Measure(key="energy_kwh", unit="kWh", value_fn=_num("energy_kwh"), retain=False),
    Measure(key="soc", unit="%", value_fn=_num("soc", 1), retain=False),
    Measure(key="current_a", unit="A", value_fn=_num("current_a", 2), retain=False),
    Measure(key="progress", unit="", value_fn=_num("progress", 4), retain=False),
    Measure(key="applied_limit_kw", unit="kW", value_fn=_num("applied_limit_kw"), retain=False),
)
SITE_MEASURES: tuple[Measure, ...] = (
    Measure(key="power_kw", unit="kW", value_fn=_num("power_kw")),
    Measure(key="limit_kw", unit="kW", value_fn=_num("limit_kw")),
    Measure(key="headroom_kw", unit="kW", value_fn=_num("headroom_kw")),
    Measure(key="planned_kw", unit="kW", value_fn=_num("planned_kw_now")),
    Measure(key="active_sessions", unit="", value_fn=lambda d: d.get("active_sessions")),
)

_STATION = (Subject.STATION,)
_SESSION = (Subject.SESSION, Subject.STATION, Subject.SITE)
EVENT_SUBJECTS: dict[EventType, tuple[Subject, ...]] = {
    EventType.STATION_CONNECTED: _STATION,
    EventType.STATION_DISCONNECTED: (Subject.STATION, Subject.EVENT),
    EventType.STATION_BOOTED: (Subject.STATION, Subject.EVENT),
    EventType.CONNECTOR_STATUS: _STATION,
    EventType.TX_STARTED: (*_SESSION, Subject.EVENT),
    EventType.TX_UPDATED: _SESSION,
    EventType.TX_ENDED: (*_SESSION, Subject.EVENT),
    EventType.METER_VALUES: _SESSION,
    EventType.EV_CHARGING_NEEDS: (Subject.SESSION,),
    EventType.EV_CHARGING_SCHEDULE: (Subject.SESSION,),
    EventType.PROFILE_ANSWERED: (Subject.SESSION, Subject.STATION),
    EventType.SCHEDULE_PLANNED: (Subject.PLAN, Subject.SITE),
    EventType.SITE_LIMIT: (Subject.SITE,),
    EventType.SITE_OVER_LIMIT: (Subject.SITE, Subject.EVENT),
    EventType.EVSE_NONCOMPLIANT: (Subject.STATION, Subject.EVENT),
    EventType.SITE_PRICES: (Subject.PLAN,),
    EventType.SECURITY_EVENT: (Subject.EVENT,),
    EventType.FIRMWARE_STATUS: (Subject.EVENT,),
    EventType.PROTOCOL_ERROR: (Subject.EVENT,),
}


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix."""

    prefix: str = "evfleet"

    def bridge_status(self) -> str:
        """`online`/`offline` of the csms bridge (retained; last will = offline)."""
        return f"{self.prefix}/status"

    def station_status(self, station_id: str) -> str:
        """JSON station document (retained)."""
        return f"{self.prefix}/stations/{station_id}/status"

    def station_measure(self, station_id: str, key: str) -> str:
        """Plain value of one station measure."""
        return f"{self.prefix}/stations/{station_id}/{key}"

    def session(self, station_id: str, transaction_id: str) -> str:
        """JSON session document (a transactionId is unique only within its station; it is
        percent-encoded, so ``/``, ``+`` and ``#`` in it never make extra levels or wildcards)."""
        return f"{self.prefix}/sessions/{station_id}/{quote(transaction_id, safe='')}"

    def session_measure(self, station_id: str, transaction_id: str, key: str) -> str:
        """Plain value of one session measure."""
        return f"{self.session(station_id, transaction_id)}/{key}"

    def site_power(self, site_id: str) -> str:
        """JSON site load document (retained)."""
        return f"{self.prefix}/sites/{site_id}/power"

    def site_measure(self, site_id: str, key: str) -> str:
        """Plain value of one site measure (retained)."""
        return f"{self.prefix}/sites/{site_id}/{key}"

    def site_plan(self, site_id: str) -> str:
        """JSON summary of the optimizer's latest plan (retained)."""
        return f"{self.prefix}/sites/{site_id}/plan"

    def event(self, event_type: str) -> str:
        """Notable events as JSON (not retained)."""
        return f"{self.prefix}/events/{event_type.replace('.', '/')}"

    def site_input_set(self, kind: str) -> str:
        """Subscription filter for inbound site inputs (`limit` or `prices`)."""
        return f"{self.prefix}/sites/+/{kind}/set"

    def site_input_error(self, site_id: str, kind: str) -> str:
        """Where a refused inbound payload is reported."""
        return f"{self.prefix}/sites/{site_id}/{kind}/error"

    def site_input_state(self, site_id: str, kind: str) -> str:
        """The accepted value after a successful inbound set (retained)."""
        return f"{self.prefix}/sites/{site_id}/{kind}/state"

    def parse_input_topic(self, topic: str) -> tuple[str, str] | None:
        """(site_id, kind) of `{prefix}/sites/{site}/{limit|prices}/set`, else None."""
        head = f"{self.prefix}/sites/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) != 3 or parts[2] != "set" or parts[1] not in ("limit", "prices") or not parts[0]:
            return None
        return parts[0], parts[1]


def format_value(value: Any) -> str:
    """Plain-value payload: numbers without trailing noise, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)
