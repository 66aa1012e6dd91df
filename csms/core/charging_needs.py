"""ISO 15118 charging needs (NotifyEVChargingNeeds, K15) -> the stored `needs` record.

Public names: `charging_needs_record`, `is_repeated_request`, `ev_schedule_record`.

A station may send NotifyEVChargingNeeds again for the same request (an ISO 15118 EV repeats
its needs at each renegotiation; the departure is "seconds from now" there, and an EV that
reports what it still needs gives less energy as it charges). Such a message is not a new
request: `is_repeated_request` tells it from a new one, and the csms then keeps the stored
request and its energy accounting (delivered so far + what is left), re-plans nothing and
sends no profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.core.timeutil import parse_ts

DEPARTURE_TOLERANCE_S = 120.0
"""An absolute departure that moved by at most this much is the same departure."""
ENERGY_TOLERANCE_WH = 500.0
ENERGY_TOLERANCE_SHARE = 0.05
"""Energy within max(500 Wh, 5 %) of what is left of the stored request is the same request
(meter readings lag by up to a meter interval)."""
_LIMIT_TOLERANCE = {"ev_min_current_a": 0.5, "ev_max_current_a": 0.5, "ev_max_power_w": 100.0,
                    "ev_max_voltage_v": 1.0}


def _num(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    return None if value is None else float(value)


def charging_needs_record(payload: Mapping[str, Any], transaction_id: str,
                          received_at: str, meter_wh: float | None = None,
                          tx_ref: str = "") -> dict[str, Any]:
    """The `needs:{sid}:{eid}` JSON (docs/redis-schema.md) from a camelCase request payload;
    `meter_wh` is the session's metered energy when the needs came (None = unknown); `tx_ref`
    names the session the needs belong to (a transactionId alone is only unique per station)."""
    needs = payload.get("chargingNeeds") or {}
    ac = needs.get("acChargingParameters") or {}
    dc = needs.get("dcChargingParameters") or {}
    params = ac or dc
    record: dict[str, Any] = {
        "transaction_id": transaction_id,
        "tx_ref": tx_ref,
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
        "meter_wh": meter_wh,
        "raw": dict(payload),
    }
    if dc:
        record["state_of_charge"] = dc.get("stateOfCharge")
        record["ev_energy_capacity_wh"] = _num(dc, "evEnergyCapacity")
        record["full_soc"] = dc.get("fullSoC")
        record["bulk_soc"] = dc.get("bulkSoC")
    return record


def _close(a: Any, b: Any, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= tol


def _same_departure(a: Any, b: Any) -> bool:
    if not a or not b:
        return not a and not b
    try:
        return abs((parse_ts(str(a)) - parse_ts(str(b))).total_seconds()) <= DEPARTURE_TOLERANCE_S
    except ValueError:
        return False


def is_repeated_request(stored: Mapping[str, Any] | None, record: Mapping[str, Any],
                        meter_wh: float | None) -> bool:
    """True when `record` (new needs; session meter `meter_wh` now) repeats the `stored` request.

    Same session, transfer mode, maxScheduleTuples and EV limits; the same absolute departure
    (within `DEPARTURE_TOLERANCE_S`); and an energy amount equal to what is left of the stored
    request (its amount minus the energy metered since it came; without meter readings, any
    amount not above the stored one). Anything else is a new request.
    """
    if not stored or (stored.get("tx_ref"), stored.get("transaction_id")) != (
            record.get("tx_ref"), record.get("transaction_id")):
        return False
    if any(stored.get(k) != record.get(k) for k in ("requested_energy_transfer", "max_schedule_tuples")):
        return False
    if not all(_close(stored.get(k), record.get(k), tol) for k, tol in _LIMIT_TOLERANCE.items()):
        return False
    if not _same_departure(stored.get("departure_time"), record.get("departure_time")):
        return False
    old, new = stored.get("energy_amount_wh"), record.get("energy_amount_wh")
    if old is None or new is None:
        return old is None and new is None
    tol = max(ENERGY_TOLERANCE_WH, ENERGY_TOLERANCE_SHARE * max(0.0, float(old)))
    then = stored.get("meter_wh")
    if meter_wh is None or then is None:
        return float(new) <= float(old) + tol
    left = max(0.0, float(old) - max(0.0, meter_wh - float(then)))
    return abs(float(new) - left) <= tol


def ev_schedule_record(payload: Mapping[str, Any], transaction_id: str, received_at: str,
                       tx_ref: str = "") -> dict[str, Any]:
    """The `ev-schedule:{sid}:{eid}` JSON from a NotifyEVChargingSchedule payload.

    `within_limits` stays None here: the smart-charging service performs the K17 check.
    """
    return {
        "transaction_id": transaction_id,
        "tx_ref": tx_ref,
        "received_at": received_at,
        "time_base": payload.get("timeBase"),
        "schedule": payload.get("chargingSchedule"),
        "within_limits": None,
    }
