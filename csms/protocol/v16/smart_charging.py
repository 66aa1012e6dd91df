"""OCPP 1.6 smart-charging rules, pure: a 2.0.1 charging profile -> csChargingProfiles.

Public names: `Facts16`, `profile_16`, `merge_periods`, `composite_201`, `TranslationError`.

The csms plans and builds profiles once, in the 2.0.1 shape (`csms.smart_charging`); a 1.6
charge point gets the same limits with the 1.6 rules:
- `chargingRateUnit`: the unit the plan used if the station allows it
  (`ChargingScheduleAllowedChargingRateUnit`), else converted (A <-> W at the EVSE voltage
  and the period's phases, rounded down to 0.1);
- at most `ChargingScheduleMaxPeriods` periods: adjacent periods are merged into their lower
  limit, cheapest merge first, so the profile a station gets is never above the one the
  csms counted against the site limit, at any instant;
- purposes `ChargingStationMaxProfile` -> `ChargePointMaxProfile`; TxDefaultProfile and
  TxProfile as they are (stackLevel kept); transactionId as the integer 1.6 uses;
- one chargingSchedule (1.6 has one per profile); salesTariff dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evfleet.profile import a_to_w, w_to_a

DEFAULT_VOLTAGE_V = 230.0
LAST_PERIOD_WEIGHT_S = 3600
"""Duration weight of the open-ended last period when choosing which periods to merge."""
_PURPOSES = {"ChargingStationMaxProfile": "ChargePointMaxProfile", "TxDefaultProfile": "TxDefaultProfile",
             "TxProfile": "TxProfile"}


class TranslationError(ValueError):
    """A 2.0.1 request has no 1.6 equivalent (profile purpose, non-integer transaction id, ...)."""


@dataclass(frozen=True)
class Facts16:
    """What a 1.6 station said about its smart charging (GetConfiguration after boot)."""

    allowed_units: tuple[str, ...] = ("A", "W")
    max_periods: int | None = None
    voltage_v: float = DEFAULT_VOLTAGE_V

    @classmethod
    def from_station(cls, station: Mapping[str, str]) -> Facts16:
        """From the station hash (`ocpp16_rate_units`, `ocpp16_max_periods`)."""
        units = tuple(u for u in (station.get("ocpp16_rate_units") or "A,W").split(",") if u in ("A", "W"))
        raw = station.get("ocpp16_max_periods") or ""
        return cls(allowed_units=units or ("A", "W"), max_periods=int(raw) if raw.isdigit() and int(raw) > 0
                   else None)


def _floor1(x: float) -> float:
    return math.floor(x * 10 + 1e-9) / 10


def _convert(limit: float, unit_from: str, unit_to: str, phases: int, voltage_v: float) -> float:
    if unit_from == unit_to:
        return limit
    return _floor1(a_to_w(limit, phases, voltage_v) if unit_to == "W" else w_to_a(limit, phases, voltage_v))


def merge_periods(periods: list[dict[str, Any]], max_periods: int) -> list[dict[str, Any]]:
    """At most `max_periods` periods, each merged pair taking the lower limit (never above the input)."""
    out = [dict(p) for p in sorted(periods, key=lambda p: int(p["startPeriod"]))]
    while len(out) > max(1, max_periods):
        best, best_cost = 0, math.inf
        for i in range(len(out) - 1):
            a, b = out[i], out[i + 1]
            end_b = int(out[i + 2]["startPeriod"]) if i + 2 < len(out) else \
                int(b["startPeriod"]) + LAST_PERIOD_WEIGHT_S
            dur_a, dur_b = int(b["startPeriod"]) - int(a["startPeriod"]), end_b - int(b["startPeriod"])
            cost = (float(a["limit"]) - float(b["limit"])) * dur_a if a["limit"] > b["limit"] else \
                (float(b["limit"]) - float(a["limit"])) * dur_b
            if cost < best_cost:
                best, best_cost = i, cost
        a, b = out[best], out.pop(best + 1)
        a["limit"] = min(float(a["limit"]), float(b["limit"]))
        if "numberPhases" in a or "numberPhases" in b:
            a["numberPhases"] = min(int(a.get("numberPhases", 3)), int(b.get("numberPhases", 3)))
    return out


def profile_16(payload: Mapping[str, Any], facts: Facts16) -> dict[str, Any]:
    """SetChargingProfile 2.0.1 request -> 1.6 request (see module docstring)."""
    cp = payload["chargingProfile"]
    purpose = _PURPOSES.get(str(cp["chargingProfilePurpose"]))
    if purpose is None:
        raise TranslationError(f"purpose {cp['chargingProfilePurpose']} has no OCPP 1.6 equivalent")
    if len(cp["chargingSchedule"]) != 1:
        raise TranslationError("OCPP 1.6 profiles have exactly one chargingSchedule")
    sched = cp["chargingSchedule"][0]
    unit = str(sched["chargingRateUnit"])
    target = unit if unit in facts.allowed_units else facts.allowed_units[0]
    periods = []
    for p in sched["chargingSchedulePeriod"]:
        phases = int(p.get("numberPhases") or 3)
        q: dict[str, Any] = {"startPeriod": int(p["startPeriod"]),
                             "limit": _convert(float(p["limit"]), unit, target, phases, facts.voltage_v)}
        if p.get("numberPhases"):
            q["numberPhases"] = int(p["numberPhases"])
        periods.append(q)
    if facts.max_periods is not None and len(periods) > facts.max_periods:
        periods = merge_periods(periods, facts.max_periods)
    schedule: dict[str, Any] = {"chargingRateUnit": target, "chargingSchedulePeriod": periods}
    for name in ("startSchedule", "duration"):
        if sched.get(name) is not None:
            schedule[name] = sched[name]
    if sched.get("minChargingRate") is not None:
        schedule["minChargingRate"] = _convert(float(sched["minChargingRate"]), unit, target, 3,
                                               facts.voltage_v)
    out: dict[str, Any] = {"chargingProfileId": int(cp["id"]), "stackLevel": int(cp["stackLevel"]),
                           "chargingProfilePurpose": purpose,
                           "chargingProfileKind": cp["chargingProfileKind"], "chargingSchedule": schedule}
    if cp.get("transactionId") is not None:
        txid = str(cp["transactionId"])
        if not txid.lstrip("-").isdigit():
            raise TranslationError(f"transactionId {txid!r} is not an OCPP 1.6 (integer) id")
        out["transactionId"] = int(txid)
    for name in ("recurrencyKind", "validFrom", "validTo"):
        if cp.get(name) is not None:
            out[name] = cp[name]
    return {"connectorId": int(payload["evseId"]), "csChargingProfiles": out}


def composite_201(answer: Mapping[str, Any], duration_s: int) -> dict[str, Any]:
    """GetCompositeSchedule 1.6 answer -> 2.0.1 answer (`schedule` with evseId)."""
    out: dict[str, Any] = {"status": answer.get("status", "Rejected")}
    sched = answer.get("chargingSchedule")
    if out["status"] == "Accepted" and sched:
        out["schedule"] = {
            "evseId": int(answer.get("connectorId", 0)), "duration": int(sched.get("duration") or duration_s),
            "scheduleStart": answer.get("scheduleStart") or sched.get("startSchedule"),
            "chargingRateUnit": sched.get("chargingRateUnit", "A"),
            "chargingSchedulePeriod": sched.get("chargingSchedulePeriod", [])}
    return out
