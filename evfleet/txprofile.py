"""Plan -> OCPP 2.0.1 TxProfile (an `evfleet.profile.ChargingProfile`), for optimizer and csms (pure).

The profiles built here are ones real chargers accept:

- purpose `TxProfile` bound to the running transaction, kind `Absolute`, `startSchedule` set
  (the last period continues until the transaction ends: no `duration`);
- periods in the station's rate unit: `A` per phase with `numberPhases` (limit_a =
  power_w / (voltage_v * phases)) or `W`; limits are rounded *down* to one decimal (the schema
  allows one digit fraction), so rounding never raises a limit;
- at most the EV's `maxScheduleTuples` periods (`evfleet.compression.compress_periods`): merged
  periods keep the energy the plan allowed before it ends (never less), cheapest merge first, so a
  costlier slot is opened only when fewer tuples leave no other way;
- the EV's maximum current/power caps every period; a limit below the EV's minimum becomes 0
  (pause) rather than being raised to the minimum (raising would break the site budget);
- optionally a `salesTariff` built from the site's price series (K15), with price levels only
  (no consumptionCost: real ISO 15118-2 SECCs such as Josev 0.31.2 cannot EXI-encode it, and
  the session then fails in ChargeParameterDiscovery; docs/iso15118.md).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from evfleet.compression import (  # noqa: F401 (Period, merge_equal re-exported)
    Period,
    compress_periods,
    done_time,
    energy_between,
    merge_equal,
)
from evfleet.isotime import format_iso_z, parse_iso
from evfleet.profile import (
    DEFAULT_VOLTAGE_V,
    ChargingProfile,
    ChargingSchedule,
    Kind,
    Purpose,
    SchedulePeriod,
    a_to_w,
    limit_to_w,
    w_to_a,
)
from evfleet.profile import RateUnit as Unit

DEFAULT_MAX_SCHEDULE_TUPLES = 24
"""Periods allowed when the EV did not say (ISO 15118-2 EVs commonly accept 24 PMax entries)."""
TX_PROFILE_STACK_LEVEL = 1
"""Stack level of our TxProfiles (above a station's own level-0 defaults)."""

RateUnit = Literal["A", "W"]


class ProfileError(ValueError):
    """A schedule cannot be turned into a valid charging profile (with the reason)."""


@dataclass(frozen=True)
class EvseElectrical:
    """How an EVSE is steered: rate unit, phases, voltage and hardware maximum."""

    rate_unit: RateUnit = "W"
    phases: int = 3
    voltage_v: float = DEFAULT_VOLTAGE_V
    max_power_w: float = 22_000.0

    def w_per_a(self) -> float:
        """Watts per ampere of per-phase current limit."""
        return a_to_w(1.0, self.phases, self.voltage_v)


@dataclass(frozen=True)
class EvLimits:
    """What the EV said in NotifyEVChargingNeeds (all optional)."""

    min_current_a: float | None = None
    max_current_a: float | None = None
    min_power_w: float | None = None
    max_power_w: float | None = None
    max_schedule_tuples: int | None = None


def floor1(value: float) -> float:
    """Round down to one decimal (never up), tolerating float noise."""
    return math.floor(value * 10.0 + 1e-9) / 10.0


def stable_profile_id(station_id: str, evse_id: int) -> int:
    """A stable positive int32 profile id per EVSE, so a newer TxProfile replaces the older one."""
    return (zlib.crc32(f"{station_id}/{evse_id}".encode()) & 0x3FFFFFFF) + 1


def iso_z(ts: datetime) -> str:
    """OCPP date-time: UTC, seconds precision, trailing Z."""
    return format_iso_z(ts, timespec="seconds")


def value_at(periods: Sequence[Period], t_s: float) -> float:
    """Limit in force at `t_s` (the last period continues; before the first: the first)."""
    current = periods[0][1]
    for start, limit in periods:
        if start <= t_s:
            current = limit
        else:
            break
    return current


def power_to_unit(power_w: float, evse: EvseElectrical, ev: EvLimits) -> float:
    """A power limit in the station's rate unit, capped by EVSE and EV, floored; below EV min -> 0."""
    power_w = max(0.0, min(power_w, evse.max_power_w))
    if evse.rate_unit == "A":
        limit = w_to_a(power_w, evse.phases, evse.voltage_v)
        if ev.max_current_a is not None:
            limit = min(limit, ev.max_current_a)
        limit = floor1(limit)
        if ev.min_current_a is not None and 0 < limit < ev.min_current_a:
            limit = 0.0
        return limit
    if ev.max_power_w is not None:
        power_w = min(power_w, ev.max_power_w)
    limit = floor1(power_w)
    if ev.min_power_w is not None and 0 < limit < ev.min_power_w:
        limit = 0.0
    return limit


def unit_to_power_w(limit: float, unit: str, phases: int | None, voltage_v: float) -> float:
    """Inverse of `power_to_unit` (without caps): a period limit back in W."""
    return limit_to_w(limit, unit, phases or None, voltage_v)


def build_sales_tariff(prices: Sequence[float], step_s: int, max_entries: int,
                       tariff_id: int = 1, max_levels: int = 8) -> dict[str, Any] | None:
    """A SalesTariff (relative time intervals from startSchedule) from per-step prices.

    Each entry has an `ePriceLevel` (1 = cheapest of `numEPriceLevels`) and no consumptionCost
    (what real SECCs can encode; see the module docstring). Returns None
    when there are no prices or the mean price is not positive. Levels are coarsened until
    the entries fit `max_entries`; if they still do not, the tariff covers only the first
    `max_entries` entries (ISO 15118 lets a tariff be shorter than the schedule).
    """
    if not prices or max_entries < 1:
        return None
    mean = sum(prices) / len(prices)
    if mean <= 0:
        return None
    distinct = sorted(set(prices))
    for levels in range(min(max_levels, len(distinct)), 0, -1):
        entries = _tariff_entries(prices, step_s, distinct, levels, mean)
        if len(entries) <= max_entries:
            break
    entries = entries[:max_entries]
    return {
        "id": max(1, min(255, tariff_id)),
        "numEPriceLevels": max(e["ePriceLevel"] for e in entries),
        "salesTariffEntry": entries,
    }


def _tariff_entries(prices: Sequence[float], step_s: int, distinct: Sequence[float],
                    levels: int, mean: float) -> list[dict[str, Any]]:
    lo, hi = distinct[0], distinct[-1]
    width = (hi - lo) / levels if hi > lo else 1.0

    def level(p: float) -> int:
        return min(levels, int((p - lo) / width) + 1) if hi > lo else 1

    runs: list[list[Any]] = []  # [start_step, n_steps, level, price_sum]
    for i, p in enumerate(prices):
        lv = level(p)
        if runs and runs[-1][2] == lv:
            runs[-1][1] += 1
            runs[-1][3] += p
        else:
            runs.append([i, 1, lv, p])
    return [
        {"relativeTimeInterval": {"start": start * step_s, "duration": n * step_s}, "ePriceLevel": lv}
        for start, n, lv, _total in runs
    ]


def periods_from_limits_kw(limits_kw: Sequence[float], step_s: int, evse: EvseElectrical,
                           ev: EvLimits) -> list[Period]:
    """Per-step kW limits -> merged periods in the station's unit (caps and floors applied)."""
    if not limits_kw:
        raise ProfileError("a schedule needs at least one step")
    if step_s <= 0:
        raise ProfileError(f"step_s must be positive, got {step_s}")
    return merge_equal([(i * step_s, power_to_unit(kw * 1000.0, evse, ev))
                        for i, kw in enumerate(limits_kw)])


def periods_from(periods: Sequence[Period], offset_s: int) -> list[Period]:
    """The periods from `offset_s` on, re-based so the one in force at `offset_s` starts at 0."""
    if offset_s <= 0:
        return list(periods)
    out = [(0, value_at(periods, offset_s))]
    out += [(s - offset_s, lim) for s, lim in periods if s > offset_s]
    return merge_equal(out)


def _tariff_from(tariff: dict[str, Any], offset_s: int) -> dict[str, Any] | None:
    """A SalesTariff re-based to start `offset_s` later (entries that ended before are dropped)."""
    entries = []
    for entry in tariff["salesTariffEntry"]:
        interval = entry["relativeTimeInterval"]
        begin, end = int(interval["start"]), int(interval["start"]) + int(interval.get("duration", 0))
        if "duration" in interval and end <= offset_s:
            continue
        moved = {"start": max(0, begin - offset_s)}
        if "duration" in interval:
            moved["duration"] = end - offset_s - moved["start"]
        entries.append({**entry, "relativeTimeInterval": moved})
    if not entries:
        return None
    return {**tariff, "salesTariffEntry": entries}


def build_tx_profile(*, evse_id: int, transaction_id: str, start: datetime, step_s: int,
                     limits_kw: Sequence[float], evse: EvseElectrical, ev: EvLimits,
                     profile_id: int, prices: Sequence[float] | None = None,
                     stack_level: int = TX_PROFILE_STACK_LEVEL,
                     now: datetime | None = None) -> dict[str, Any]:
    """SetChargingProfile request payload (camelCase) for a running transaction's schedule.

    `limits_kw[i]` applies from `start + i * step_s`. With `now` later than `start`, the profile starts
    at `now` (whole seconds) with the limit in force then: nothing of it lies in the past.
    """
    if not transaction_id:
        raise ProfileError("a TxProfile needs the running transaction's id")
    max_periods = ev.max_schedule_tuples or DEFAULT_MAX_SCHEDULE_TUPLES
    offset_s = 0
    if now is not None and now > start:
        offset_s = min(int((now - start).total_seconds()), len(limits_kw) * step_s - 1)
    end_s = len(limits_kw) * step_s - offset_s
    periods = periods_from(periods_from_limits_kw(limits_kw, step_s, evse, ev), offset_s)
    price_periods = None
    if prices:
        price_periods = periods_from([(i * step_s, float(p)) for i, p in enumerate(prices)], offset_s)
    try:
        periods = compress_periods(periods, end_s, max_periods, price_periods)
    except ValueError as err:
        raise ProfileError(str(err)) from err
    start = start + timedelta(seconds=offset_s)
    min_rate = ev.min_current_a if evse.rate_unit == "A" else ev.min_power_w
    tariff = None
    if prices:
        tariff = build_sales_tariff(list(prices)[: len(limits_kw)], step_s, max_periods,
                                    tariff_id=profile_id % 255 + 1)
        if tariff is not None and offset_s:
            tariff = _tariff_from(tariff, offset_s)
    phases = evse.phases if evse.rate_unit == "A" else None
    schedule = ChargingSchedule(
        id=profile_id, rate_unit=Unit(evse.rate_unit),
        periods=tuple(SchedulePeriod(int(s), lim, phases) for s, lim in periods),
        start_schedule=start.replace(microsecond=0),  # whole seconds, as `iso_z` writes them
        min_charging_rate=floor1(min_rate) if min_rate else None, sales_tariff=tariff)
    profile = ChargingProfile(id=profile_id, stack_level=stack_level, purpose=Purpose.TX, kind=Kind.ABSOLUTE,
                              schedules=(schedule,), transaction_id=transaction_id)
    return {"evseId": evse_id, "chargingProfile": profile.to_ocpp()}


def profile_series_w(payload: dict[str, Any], voltage_v: float = DEFAULT_VOLTAGE_V,
                     default_phases: int = 3) -> tuple[datetime, list[Period]]:
    """(startSchedule, periods in W) of a SetChargingProfile payload or a bare ChargingProfile."""
    profile = payload.get("chargingProfile", payload)
    schedule = profile["chargingSchedule"][0]
    start = parse_ts(schedule["startSchedule"])
    unit = schedule["chargingRateUnit"]
    periods = [(int(p["startPeriod"]),
                unit_to_power_w(float(p["limit"]), unit, p.get("numberPhases", default_phases), voltage_v))
               for p in schedule["chargingSchedulePeriod"]]
    return start, periods


def parse_ts(value: str) -> datetime:
    """ISO 8601 (with Z or offset) -> aware datetime (naive is UTC; `evfleet.isotime.parse_iso`)."""
    return parse_iso(value)


def limit_w_at(start: datetime, periods: Sequence[Period], at: datetime) -> float:
    """Limit in W in force at `at` of a schedule starting at `start`."""
    return value_at(periods, (at - start) / timedelta(seconds=1))


def energy_report(*, start: datetime, step_s: int, limits_kw: Sequence[float], payload: dict[str, Any],
                  evse: EvseElectrical) -> tuple[float, float]:
    """(planned kWh, allowed kWh) from the profile's start until the plan's last charging step ends.

    Planned: the plan's per-step limits; allowed: the profile as sent (after unit conversion,
    rounding, caps and compression to the EV's maxScheduleTuples). The csms reports both with every
    profile it sends, so an EV offered less than its plan is visible.
    """
    sent_at, periods = profile_series_w(payload, evse.voltage_v, evse.phases)
    plan_end_s = len(limits_kw) * step_s
    offset_s = (sent_at - start).total_seconds()
    plan_w = [(i * step_s, kw * 1000.0) for i, kw in enumerate(limits_kw)]
    done_s = done_time(plan_w, plan_end_s)  # the plan's last charging step ends (<= departure)
    planned = energy_between(plan_w, plan_end_s, offset_s, done_s) / 3.6e6
    allowed = energy_between(periods, plan_end_s, 0.0, done_s - offset_s) / 3.6e6
    return round(planned, 3), round(allowed, 3)
