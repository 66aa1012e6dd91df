"""Typed events appended to the `evfleet:events` Redis Stream on every state change.

Stream entry fields are flat strings: ``type``, ``station_id``, ``evse_id`` (may be
empty), ``transaction_id`` (the station's OCPP transactionId, may be empty), ``tx_ref`` (the
transaction's key in evfleet, `evfleet.keys.tx_ref`: station, id and generation; empty
when there is no transaction), ``site_id`` (may be empty), ``ts`` (ISO 8601, clock time) and
``data`` (JSON object). A transactionId is unique only within its station: consumers identify
a transaction by ``tx_ref`` (or station_id + transaction_id), never by transaction_id alone.
Consumers (optimizer worker, dashboard, MQTT publisher) read it with consumer groups or XREAD.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from evfleet.isotime import parse_iso
from evfleet.jsonsafe import dumps_compact, load_stored
from evfleet.keys import parse_tx_ref


class EventType(StrEnum):
    """Every event type on the stream."""

    STATION_CONNECTED = "station.connected"
    STATION_DISCONNECTED = "station.disconnected"
    STATION_BOOTED = "station.booted"
    CONNECTOR_STATUS = "connector.status"
    AUTHORIZED = "authorization"
    TX_STARTED = "tx.started"
    TX_UPDATED = "tx.updated"
    TX_ENDED = "tx.ended"
    METER_VALUES = "meter.values"
    EV_CHARGING_NEEDS = "ev.charging_needs"
    EV_CHARGING_SCHEDULE = "ev.charging_schedule"
    PROFILE_SENT = "profile.sent"
    PROFILE_ANSWERED = "profile.answered"
    PROFILE_REPORTED = "profile.reported"
    SCHEDULE_PLANNED = "schedule.planned"
    SITE_LIMIT = "site.limit"
    SITE_PRICES = "site.prices"
    SITE_OVER_LIMIT = "site.over_limit"
    EVSE_NONCOMPLIANT = "evse.noncompliant"
    SECURITY_EVENT = "security.event"
    FIRMWARE_STATUS = "firmware.status"
    LOG_STATUS = "log.status"
    REPORT = "report"
    DATA_TRANSFER = "data_transfer"
    COMMAND_RESULT = "command.result"
    PROTOCOL_ERROR = "protocol.error"


class Event(BaseModel):
    """One state-change event."""

    type: EventType
    station_id: str = ""
    evse_id: int | None = None
    transaction_id: str = ""
    tx_ref: str = ""
    site_id: str = ""
    ts: datetime
    data: dict[str, Any] = Field(default_factory=dict)

    def to_fields(self) -> dict[str, str]:
        """Flat string fields for XADD."""
        return {
            "type": self.type.value,
            "station_id": self.station_id,
            "evse_id": "" if self.evse_id is None else str(self.evse_id),
            "transaction_id": self.transaction_id,
            "tx_ref": self.tx_ref,
            "site_id": self.site_id,
            "ts": self.ts.isoformat(),
            "data": dumps_compact(self.data),
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> Event:
        """Parse a stream entry written by `to_fields`."""
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in fields.items()}
        return cls(
            type=EventType(f["type"]),
            station_id=f.get("station_id", ""),
            evse_id=int(f["evse_id"]) if f.get("evse_id") else None,
            transaction_id=f.get("transaction_id", ""),
            tx_ref=f.get("tx_ref", ""),
            site_id=f.get("site_id", ""),
            ts=parse_iso(f["ts"]),
            data=_data(f.get("data")),
        )


def event_fields(event_type: EventType, ts: datetime, station_id: str = "", evse_id: int | None = None,
                 ref: str = "", site_id: str = "", data: Mapping[str, Any] | None = None,
                 ) -> dict[str, str]:
    """Flat stream fields of one event; `ref` is the transaction's `tx_ref` ("" for none), from
    which the event's `transaction_id` is taken."""
    # what `Event(...).to_fields()` gives, without building and validating the model: every
    # state change of every station writes one (the ts is the node clock's, the data ours)
    return {
        "type": EventType(event_type).value,
        "station_id": station_id,
        "evse_id": "" if evse_id is None else str(int(evse_id)),
        "transaction_id": parse_tx_ref(ref).transaction_id if ref else "",
        "tx_ref": ref,
        "site_id": site_id,
        "ts": ts.isoformat(),
        "data": dumps_compact(dict(data or {})),
    }


def _data(text: str | None) -> dict[str, Any]:
    """An event's data as stored; one that cannot be shown safely (too deep, not an object)
    becomes a note instead of failing every reader."""
    value = load_stored(text, default={})
    return value if isinstance(value, dict) else {"value": value}
