"""Pure conversions between OCPP 2.0.1 smart-charging data and ISO 15118-2 schedules.

- `needs_payload`: the EV's ChargeParameterDiscoveryReq -> NotifyEVChargingNeeds payload.
- `profile_to_sa_schedules`: a TxProfile (OCPP ChargingProfile, A or W) -> SAScheduleList
  (PMax entries in W, plus a SalesTariff when the profile carries one), relative to "now".
- `default_sa_schedules`: the schedule the SECC offers before the CSMS has answered.
- `plan_ev_profile`: how the simulated EV picks a tuple and plans its own ChargingProfile
  (cheapest price levels first when a tariff is offered, as soon as possible otherwise).
- `ev_schedule_payload`: the EV's plan -> NotifyEVChargingSchedule payload.
- `profile_respects_pmax`: the SECC's V2G2-225 check of the EV's profile.

No I/O; every function takes data and returns data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from evfleet.isotime import format_iso_z, parse_iso
from evfleet.profile import a_to_w
from evse_sim.iso15118.messages import (
    ChargeParameterDiscoveryReq,
    DcEvChargeParameter,
    PMaxScheduleEntry,
    ProfileEntry,
    SalesTariff,
    SalesTariffEntry,
    SAScheduleTuple,
)

DAY_S = 86_400
MAX_PROFILE_ENTRIES = 24  # ISO 15118-2 ChargingProfile: ProfileEntry maxOccurs = 24
MAX_SCHEDULE_ENTRIES = 1024  # ISO 15118-2 PMaxSchedule: PMaxScheduleEntry maxOccurs = 1024


class ScheduleConversionError(ValueError):
    """A charging profile cannot be turned into an SAScheduleList (context in the message)."""


def _iso(ts: datetime) -> str:
    return format_iso_z(ts)


def _parse_time(value: str) -> datetime:
    return parse_iso(value)


def needs_payload(evse_id: int, req: ChargeParameterDiscoveryReq, received_at: datetime) -> dict[str, Any]:
    """NotifyEVChargingNeeds request payload (camelCase) for the EV's ChargeParameterDiscoveryReq."""
    ev = req.ev_charge_parameter
    needs: dict[str, Any] = {"requestedEnergyTransfer": req.requested_energy_transfer_mode.value}
    if isinstance(ev, DcEvChargeParameter):
        dc: dict[str, Any] = {"evMaxCurrent": int(round(ev.ev_max_current_a)),
                              "evMaxVoltage": int(round(ev.ev_max_voltage_v)),
                              "energyAmount": int(round(ev.e_amount_wh))}
        optional = {"evMaxPower": ev.ev_max_power_w, "stateOfCharge": ev.soc_pct,
                    "evEnergyCapacity": ev.ev_energy_capacity_wh, "fullSoC": ev.full_soc_pct,
                    "bulkSoC": ev.bulk_soc_pct}
        dc.update({k: int(round(v)) for k, v in optional.items() if v is not None})
        needs["dcChargingParameters"] = dc
    else:
        needs["acChargingParameters"] = {
            "energyAmount": int(round(ev.e_amount_wh)),
            "evMinCurrent": int(round(ev.ev_min_current_a)),
            "evMaxCurrent": int(round(ev.ev_max_current_a)),
            "evMaxVoltage": int(round(ev.ev_max_voltage_v)),
        }
    if ev.departure_time_s:
        needs["departureTime"] = _iso(received_at + timedelta(seconds=ev.departure_time_s))
    payload: dict[str, Any] = {"evseId": evse_id, "chargingNeeds": needs}
    if req.max_entries_sa_schedule_tuple:
        payload["maxScheduleTuples"] = req.max_entries_sa_schedule_tuple
    return payload


def default_sa_schedules(evse_max_power_w: float,
                         departure_time_s: int | None) -> tuple[SAScheduleTuple, ...]:
    """The SECC's own schedule (EVSE maximum until departure, or 24 h), offered before the CSMS answers."""
    horizon_s = departure_time_s or DAY_S
    return (SAScheduleTuple(1, (PMaxScheduleEntry(0, float(evse_max_power_w), horizon_s),)),)


def _limit_w(limit: float, unit: str, phases: int, voltage_v: float) -> float:
    if unit == "W":
        return float(limit)
    if unit == "A":
        return a_to_w(float(limit), phases, voltage_v)
    raise ScheduleConversionError(f"unknown chargingRateUnit {unit!r}")


def _compress(entries: list[tuple[int, float]], max_entries: int) -> list[tuple[int, float]]:
    """Merge equal neighbours, then fold the tail into one entry at the minimum (stays conservative)."""
    merged: list[tuple[int, float]] = []
    for start, value in entries:
        if merged and abs(merged[-1][1] - value) < 1e-6:
            continue
        merged.append((start, value))
    if len(merged) > max_entries:
        head = merged[: max_entries - 1]
        tail_min = min(v for _, v in merged[max_entries - 1:])
        merged = [*head, (merged[max_entries - 1][0], tail_min)]
    return merged


@dataclass(frozen=True)
class SecLimits:
    """Electrical facts of the EVSE a schedule is converted for."""

    evse_max_power_w: float
    voltage_v: float = 230.0
    phases: int = 3


def profile_to_sa_schedules(profile: dict[str, Any], now: datetime, limits: SecLimits,
                            departure_time_s: int | None = None, max_entries: int | None = None,
                            tx_started_at: datetime | None = None) -> tuple[SAScheduleTuple, ...]:
    """SAScheduleList (one tuple per chargingSchedule, ids kept) of a TxProfile, relative to `now`.

    Limits are converted to W (A x voltage x phases), capped at the EVSE maximum; the
    schedule covers until departure (or 24 h); periods before the schedule starts, or after
    its `duration`, are at the EVSE maximum; at most `max_entries` PMax/tariff entries.
    """
    schedules = profile.get("chargingSchedule")
    if isinstance(schedules, dict):
        schedules = [schedules]
    if not schedules:
        raise ScheduleConversionError(f"charging profile {profile.get('id')} has no chargingSchedule")
    horizon_s = departure_time_s or DAY_S
    cap_entries = max(1, min(max_entries or MAX_SCHEDULE_ENTRIES, MAX_SCHEDULE_ENTRIES))
    tuples: list[SAScheduleTuple] = []
    for index, schedule in enumerate(schedules[:3]):
        if schedule.get("startSchedule"):
            start = _parse_time(schedule["startSchedule"])
        else:
            start = tx_started_at or now
        offset_s = (now - start).total_seconds()
        unit = schedule.get("chargingRateUnit", "W")
        periods = sorted(schedule.get("chargingSchedulePeriod") or [], key=lambda p: p["startPeriod"])
        if not periods:
            raise ScheduleConversionError(f"chargingSchedule {schedule.get('id')} has no periods")
        end_rel = schedule.get("duration")
        end_rel_now = (end_rel - offset_s) if end_rel is not None else None
        points: list[tuple[int, float]] = []
        if periods[0]["startPeriod"] - offset_s > 0:
            points.append((0, limits.evse_max_power_w))
        for i, period in enumerate(periods):
            rel = period["startPeriod"] - offset_s
            nxt = periods[i + 1]["startPeriod"] - offset_s if i + 1 < len(periods) else None
            if nxt is not None and nxt <= 0:
                continue
            power = _limit_w(period["limit"], unit, int(period.get("numberPhases") or limits.phases),
                             limits.voltage_v)
            points.append((max(0, int(round(rel))), min(power, limits.evse_max_power_w)))
        if end_rel_now is not None and 0 < end_rel_now < horizon_s:
            points = [p for p in points if p[0] < end_rel_now]
            points.append((int(round(end_rel_now)), limits.evse_max_power_w))
        points = [p for p in points if p[0] < horizon_s] or [(0, limits.evse_max_power_w)]
        points = _compress(points, cap_entries)
        entries = [PMaxScheduleEntry(s, round(v, 1)) for s, v in points]
        last = entries[-1]
        entries[-1] = PMaxScheduleEntry(last.start_s, last.pmax_w, horizon_s - last.start_s)
        tariff = _sales_tariff(schedule.get("salesTariff"), offset_s, horizon_s, cap_entries)
        sched_id = schedule.get("id")
        tuple_id = sched_id if isinstance(sched_id, int) and 1 <= sched_id <= 255 else index + 1
        tuples.append(SAScheduleTuple(tuple_id, tuple(entries), tariff))
    return tuple(tuples)


def same_offer(old: dict[str, Any], new: dict[str, Any], now: datetime, limits: SecLimits,
               departure_time_s: int | None = None, max_entries: int | None = None) -> bool:
    """True when two TxProfiles give the same SAScheduleList at `now` (no reason to renegotiate)."""
    try:
        return profile_to_sa_schedules(old, now, limits, departure_time_s, max_entries) == \
            profile_to_sa_schedules(new, now, limits, departure_time_s, max_entries)
    except (ScheduleConversionError, KeyError, TypeError, ValueError):
        return False


def _sales_tariff(raw: dict[str, Any] | None, offset_s: float, horizon_s: int,
                  cap_entries: int) -> SalesTariff | None:
    if not raw:
        return None
    entries: list[SalesTariffEntry] = []
    raw_entries = sorted(raw.get("salesTariffEntry") or [], key=lambda e: e["relativeTimeInterval"]["start"])
    for i, entry in enumerate(raw_entries):
        rel = entry["relativeTimeInterval"]["start"] - offset_s
        nxt = (raw_entries[i + 1]["relativeTimeInterval"]["start"] - offset_s
               if i + 1 < len(raw_entries) else None)
        if (nxt is not None and nxt <= 0) or rel >= horizon_s:
            continue
        entries.append(SalesTariffEntry(max(0, int(round(rel))), entry.get("ePriceLevel"), None,
                                        _entry_price(entry)))
    if not entries:
        return None
    entries = _levels_only(entries[:cap_entries])
    last = entries[-1]
    entries[-1] = SalesTariffEntry(last.start_s, last.e_price_level, horizon_s - last.start_s,
                                   last.price_per_kwh)
    tariff_id = raw.get("id")
    valid_id = isinstance(tariff_id, int) and 1 <= tariff_id <= 255
    levels = max(int(raw.get("numEPriceLevels") or 0), *(e.e_price_level or 0 for e in entries))
    return SalesTariff(sales_tariff_id=int(tariff_id) if valid_id and tariff_id is not None else 1,
                       entries=tuple(entries), num_e_price_levels=levels,
                       description=raw.get("salesTariffDescription"))


def _entry_price(entry: dict[str, Any]) -> float | None:
    costs = entry.get("consumptionCost") or []
    if costs and costs[0].get("cost"):
        cost = costs[0]["cost"][0]
        return float(cost["amount"]) * 10 ** int(cost.get("amountMultiplier") or 0)
    return None


def _levels_only(entries: list[SalesTariffEntry]) -> list[SalesTariffEntry]:
    """Price levels only, no ConsumptionCost: what a real SECC can send (Josev 0.31.2 fails to
    EXI-encode a SalesTariff with ConsumptionCost when it signs it). An entry with a price but no
    level gets the rank of its price among the tariff's prices (1 = cheapest)."""
    prices = sorted({e.price_per_kwh for e in entries if e.price_per_kwh is not None})
    rank = {p: i + 1 for i, p in enumerate(prices)}
    out = []
    for e in entries:
        level = e.e_price_level
        if level is None:
            level = rank.get(e.price_per_kwh, 1) if e.price_per_kwh is not None else 1
        out.append(SalesTariffEntry(e.start_s, min(255, max(0, int(level))), e.duration_s, None))
    return out


def _price_at(tariff: SalesTariff | None, t_s: float) -> float:
    if tariff is None:
        return 0.0
    price = 0.0
    for entry in tariff.entries:
        if entry.start_s <= t_s:
            if entry.price_per_kwh is not None:
                price = entry.price_per_kwh
            elif entry.e_price_level is not None:
                price = float(entry.e_price_level)
    return price


@dataclass(frozen=True)
class EvPlan:
    """The EV's choice: which tuple, its own profile, the energy it plans and what it costs."""

    sa_schedule_tuple_id: int
    profile: tuple[ProfileEntry, ...]
    planned_energy_wh: float
    cost: float
    horizon_s: int


def plan_for_tuple(sa_tuple: SAScheduleTuple, energy_wh: float, ev_max_power_w: float,
                   departure_time_s: int | None) -> EvPlan:
    """The EV's own plan under one offered tuple: cheapest segments first, earliest on ties; inside a
    segment it charges at full power until its share is done (as soon as possible)."""
    horizon_s = min(sa_tuple.end_s(), departure_time_s or sa_tuple.end_s())
    bounds = {0, horizon_s}
    bounds.update(e.start_s for e in sa_tuple.pmax_schedule if e.start_s < horizon_s)
    if sa_tuple.sales_tariff:
        bounds.update(e.start_s for e in sa_tuple.sales_tariff.entries if e.start_s < horizon_s)
    edges = sorted(bounds)
    segments = [(a, b, min(sa_tuple.pmax_at(a), ev_max_power_w), _price_at(sa_tuple.sales_tariff, a))
                for a, b in zip(edges, edges[1:], strict=False) if b > a]
    order = sorted(range(len(segments)), key=lambda i: (segments[i][3], segments[i][0]))
    power = [0.0] * len(segments)
    remaining = max(0.0, energy_wh)
    cost = 0.0
    for i in order:
        if remaining <= 1e-6:
            break
        a, b, cap, price = segments[i]
        hours = (b - a) / 3600
        p = min(cap, remaining / hours) if hours > 0 else 0.0
        power[i] = p
        remaining -= p * hours
        cost += p * hours / 1000 * price
    raw: list[tuple[int, float]] = []
    for (a, b, cap, _), p in zip(segments, power, strict=True):
        full_s = (b - a) * p / cap if cap > 0 else 0.0  # charge at full power first (ASAP in the segment)
        if p <= 1e-9:
            raw.append((a, 0.0))
        elif full_s >= (b - a) - 1 or math.ceil(full_s) >= b - a:
            raw.append((a, round(p, 1)))
        else:
            raw += [(a, round(cap, 1)), (a + math.ceil(full_s), 0.0)]
    points = _compress(raw, 10_000)
    if points[-1][1] > 0:
        points.append((horizon_s, 0.0))
    points = _fit_profile(points, [seg[:3] for seg in segments])
    profile = tuple(ProfileEntry(s, p) for s, p in points)
    return EvPlan(sa_tuple.sa_schedule_tuple_id, profile, max(0.0, energy_wh) - max(0.0, remaining), cost,
                  horizon_s)


def _fit_profile(points: list[tuple[int, float]], segments: list[tuple[int, int, float]]
                 ) -> list[tuple[int, float]]:
    """Reduce to 24 entries by merging the closest neighbours at the lower power (never above PMax)."""
    pts = list(points)
    while len(pts) > MAX_PROFILE_ENTRIES:
        best = min(range(len(pts) - 1), key=lambda i: abs(pts[i][1] - pts[i + 1][1]))
        pts[best] = (pts[best][0], min(pts[best][1], pts[best + 1][1]))
        del pts[best + 1]
    return pts


def plan_ev_profile(tuples: tuple[SAScheduleTuple, ...], energy_wh: float, ev_max_power_w: float,
                    departure_time_s: int | None) -> EvPlan:
    """Pick the tuple that delivers most energy, then the cheapest, then the lowest id; plan under it."""
    if not tuples:
        raise ScheduleConversionError("empty SAScheduleList: nothing to choose from")
    plans = [plan_for_tuple(t, energy_wh, ev_max_power_w, departure_time_s) for t in tuples]
    return min(plans, key=lambda p: (-round(p.planned_energy_wh, 3), round(p.cost, 9),
                                     p.sa_schedule_tuple_id))


def profile_power_at(profile: tuple[ProfileEntry, ...], t_s: float) -> float:
    """Power (W) the EV's own profile allows `t_s` seconds after its time base."""
    value = 0.0
    for entry in profile:
        if entry.start_s <= t_s:
            value = entry.max_power_w
    return value


def profile_respects_pmax(sa_tuple: SAScheduleTuple, profile: tuple[ProfileEntry, ...]) -> bool:
    """V2G2-225: the EV's profile never exceeds the chosen tuple's PMax at any point."""
    bounds = sorted({e.start_s for e in profile} | {e.start_s for e in sa_tuple.pmax_schedule})
    return all(profile_power_at(profile, t) <= sa_tuple.pmax_at(t) + 1e-6 for t in bounds)


def ev_schedule_payload(evse_id: int, time_base: datetime, sa_schedule_tuple_id: int,
                        profile: tuple[ProfileEntry, ...]) -> dict[str, Any]:
    """NotifyEVChargingSchedule request payload (camelCase) for the EV's own ChargingProfile."""
    periods = [{"startPeriod": int(e.start_s), "limit": round(float(e.max_power_w), 1)} for e in profile]
    schedule: dict[str, Any] = {"id": sa_schedule_tuple_id, "chargingRateUnit": "W",
                                "chargingSchedulePeriod": periods}
    if len(profile) > 1:
        schedule["duration"] = int(profile[-1].start_s) or None
        if schedule["duration"] is None:
            del schedule["duration"]
    return {"timeBase": _iso(time_base), "evseId": evse_id, "chargingSchedule": schedule}
