"""After a 1.6 boot: read the station's smart-charging configuration (GetConfiguration).

Public names: `fetch_configuration`, `facts_from_configuration`, `CONFIG_KEYS`.

Sent from a task once the BootNotification answer is on the wire (never inside the
handler). What it stores:
- station hash: `ocpp16_feature_profiles`, `ocpp16_rate_units` (`A,W`, `A` or `W` from
  ChargingScheduleAllowedChargingRateUnit), `ocpp16_max_periods` (ChargingScheduleMaxPeriods),
  `ocpp16_max_stack_level`, `ocpp16_max_profiles`;
- each connector's EVSE hash: `rate_unit` (A when the station allows Current) and
  `steerable` (0 when SupportedFeatureProfiles lacks SmartCharging: budgeted at its maximum).
A refusal, CALLERROR or timeout is logged; profiles then go out in A with no period cap,
and a NotSupported/NotImplemented answer to them marks the EVSE unsteerable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from csms.commands import CommandReply
from csms.store.state import StateStore
from evfleet.store.client import as_str, hmap

log = logging.getLogger(__name__)

CONFIG_KEYS = ["SupportedFeatureProfiles", "ChargingScheduleAllowedChargingRateUnit",
               "ChargingScheduleMaxPeriods", "ChargeProfileMaxStackLevel", "MaxChargingProfilesInstalled",
               "NumberOfConnectors"]
_UNITS = {"current": "A", "power": "W"}

Call = Callable[[str, str, dict[str, Any]], Awaitable[CommandReply]]


def facts_from_configuration(entries: Iterable[Mapping[str, Any]]
                             ) -> tuple[dict[str, str], dict[str, str], int]:
    """(station fields, fields for every connector's EVSE, number of connectors) from GetConfiguration."""
    values = {str(e.get("key")): str(e.get("value") or "") for e in entries}
    station: dict[str, str] = {}
    evse: dict[str, str] = {}
    if "SupportedFeatureProfiles" in values:
        profiles = [p.strip() for p in values["SupportedFeatureProfiles"].split(",") if p.strip()]
        station["ocpp16_feature_profiles"] = ",".join(profiles)
        evse["steerable"] = "1" if "SmartCharging" in profiles else "0"
    allowed = values.get("ChargingScheduleAllowedChargingRateUnit", "").split(",")
    units = [_UNITS[u.strip().lower()] for u in allowed if u.strip().lower() in _UNITS]
    if units:
        station["ocpp16_rate_units"] = ",".join(sorted(set(units)))
        evse["rate_unit"] = "A" if "A" in units else "W"
    for key, field in (("ChargingScheduleMaxPeriods", "ocpp16_max_periods"),
                       ("ChargeProfileMaxStackLevel", "ocpp16_max_stack_level"),
                       ("MaxChargingProfilesInstalled", "ocpp16_max_profiles")):
        if values.get(key, "").strip().isdigit():
            station[field] = values[key].strip()
    raw = values.get("NumberOfConnectors", "").strip()
    return station, evse, int(raw) if raw.isdigit() else 0


async def fetch_configuration(call: Call, store: StateStore, station_id: str) -> bool:
    """Ask a 1.6 station for `CONFIG_KEYS` and store what it says; True if it answered."""
    reply = await call(station_id, "GetConfiguration", {"key": CONFIG_KEYS})
    if not reply.ok:
        log.warning("GetConfiguration to %s failed (%s: %s): profiles go out in A without a period cap",
                    station_id, reply.outcome.value, (reply.error or {}).get("description", ""))
        return False
    station, evse, connectors = facts_from_configuration((reply.payload or {}).get("configurationKey") or [])
    if station:
        await store.redis.hset(store.keys.station(station_id), mapping=hmap(station))
    fields = [as_str(f) for f in await store.redis.hkeys(store.keys.station_connectors(station_id))]
    known = {int(f.split("/", 1)[0]) for f in fields if f.split("/", 1)[0].isdigit()}
    for eid in sorted(known | set(range(1, connectors + 1))):
        if eid > 0 and evse:
            await store.set_evse_facts(station_id, eid, evse)
    log.info("OCPP 1.6 configuration of %s: %s (connectors %s)", station_id, station, connectors or "?")
    return True
