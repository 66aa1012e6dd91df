"""ISO 15118 charging needs (NotifyEVChargingNeeds, K15) -> the stored `needs` record.

Public names: `charging_needs_record`, `ev_schedule_record`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _num(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    return None if value is None else float(value)


def charging_needs_record(payload: Mapping[str, Any], transaction_id: str,
                          received_at: str) -> dict[str, Any]:
    """The `needs:{sid}:{eid}` JSON (docs/redis-schema.md) from a camelCase request payload."""
    needs = payload.get("chargingNeeds") or {}
    ac = needs.get("acChargingParameters") or {}
    dc = needs.get("dcChargingParameters") or {}
    params = ac or dc
    record: dict[str, Any] = {
        "transaction_id": transaction_id,
        "received_at": received_at,
        "departure_time": needs.get("departureTime"),
        "energy_amount_wh": _num(params, "energyAmount"),
        "ev_min_current_a": _num(ac, "evMinCurrent"),
        "ev_max_current_a": _num(params, "evMaxCurrent"),
        "ev_max_power_w": _num(dc, "evMaxPower"),
        "ev_min_power_w": None,  # not in OCPP 2.0.1 (2.1 adds it)
        "ev_max_voltage_v": _num(params, "evMaxVoltage"),
        "max_schedule_tuples": payload.get("maxScheduleTuples"),
        "requested_energy_transfer": needs.get("requestedEnergyTransfer"),
        "raw": dict(payload),
    }
    if dc:
        record["state_of_charge"] = dc.get("stateOfCharge")
        record["ev_energy_capacity_wh"] = _num(dc, "evEnergyCapacity")
        record["full_soc"] = dc.get("fullSoC")
        record["bulk_soc"] = dc.get("bulkSoC")
    return record


def ev_schedule_record(payload: Mapping[str, Any], transaction_id: str, received_at: str) -> dict[str, Any]:
    """The `ev-schedule:{sid}:{eid}` JSON from a NotifyEVChargingSchedule payload.

    `within_limits` stays None here: the smart-charging service performs the K17 check.
    """
    return {
        "transaction_id": transaction_id,
        "received_at": received_at,
        "time_base": payload.get("timeBase"),
        "schedule": payload.get("chargingSchedule"),
        "within_limits": None,
    }
