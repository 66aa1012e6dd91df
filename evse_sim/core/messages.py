"""OCPP 2.0.1 payloads a station builds from its state (pure functions, `ocpp.v201.call` dataclasses).

The 1.6 link translates these same payloads (`evse_sim.ocpp16_link`), so both versions report
the same meter values, statuses and transaction events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ocpp.v201 import call

from evfleet.profile import format_time
from evse_sim.ev import Ev
from evse_sim.station_types import EvseState, StationConfig


def meter_values(st: EvseState, now: datetime, context: str | None) -> list[dict[str, Any]]:
    """MeterValue list (snake_case) of one EVSE: energy register, power, current and the EV's SoC."""
    ctx = context or "Sample.Periodic"
    current_a = st.spec.electrical.w_to_a(st.power_w)
    values: list[dict[str, Any]] = [
        _sample(round(st.energy_wh, 1), "Energy.Active.Import.Register", "Wh", ctx),
        _sample(round(st.power_w, 1), "Power.Active.Import", "W", ctx),
        _sample(round(current_a, 2), "Current.Import", "A", ctx),
    ]
    if st.ev is not None:
        values.append({**_sample(round(st.ev.battery.soc * 100, 1), "SoC", "Percent", ctx), "location": "EV"})
    return [{"timestamp": format_time(now), "sampled_value": values}]


def _sample(value: float, measurand: str, unit: str, context: str) -> dict[str, Any]:
    return {"value": value, "measurand": measurand, "unit_of_measure": {"unit": unit}, "context": context}


def status_notification(evse_id: int, status: str, now: datetime) -> call.StatusNotification:
    """StatusNotification of the (single) connector of `evse_id`."""
    return call.StatusNotification(
        timestamp=format_time(now), connector_status=status, evse_id=evse_id, connector_id=1
    )


def boot_notification(config: StationConfig, reason: str) -> call.BootNotification:
    """BootNotification with the station's identity."""
    station: dict[str, Any] = {
        "model": config.model,
        "vendor_name": config.vendor,
        "firmware_version": config.firmware_version,
    }
    if config.serial_number:
        station["serial_number"] = config.serial_number
    return call.BootNotification(charging_station=station, reason=reason)


def charging_state(st: EvseState) -> str:
    """OCPP chargingState as a real station reports it.

    SuspendedEV when the EV takes no power although it may (it is full, or its own plan asks 0:
    even at a 0 limit a full EV stays SuspendedEV, the reason it does not charge is the EV);
    SuspendedEVSE when the EVSE offers nothing while the EV wants power; else Charging.
    """
    if st.ev is None:
        return "Idle"
    if st.tx is not None and not st.tx.authorized:
        return "EVConnected"
    if st.ev.full or (st.ev_limit_w is not None and st.ev_limit_w <= 0):
        return "SuspendedEV"
    if st.offered_w <= 0:
        return "SuspendedEVSE"
    if st.power_w <= 0:
        return "SuspendedEV"
    return "Charging"


def id_token_of(ev: Ev) -> dict[str, str] | None:
    """The IdTokenType an EV presents (eMAID for HLC, an RFID card otherwise); None without a token."""
    token = ev.spec.id_token
    if not token:
        return None
    return {"id_token": token, "type": "eMAID" if ev.spec.hlc else "ISO14443"}
