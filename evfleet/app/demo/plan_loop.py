"""The demo's cars in an ideal closed loop of the worker's pure planning pipeline (no OCPP, no Redis).

Minute by minute over the day: site state -> `optimizer.snapshot.build_instance` -> standing plan kept
(`optimizer.standing`) or re-solved with the previous plan as reference (`optimizer.reference`,
`optimizer.solve`, `optimizer.min_power`) -> plan document (`optimizer.publish.plan_documents`). A re-plan
follows every arrival, departure and car filling up, and every new 15-minute step (the worker's
rolling horizon). Each car draws its plan's limit at once (no profile round trip; with `delay_min` the
plans reach the stations that much later, and a car no applied plan covers draws the demo's reservation),
capped by its maximum and what it still needs; an ISO 15118 car pauses below its 6 A minimum; cars
without ISO 15118 announce nothing and report SuspendedEV when full, as in the demo.

It separates the planner from the loop's latency (the demo's own figure adds the csms's and the stations'
delays), and, with `known_needs`, the planner from what it cannot know: the cars without ISO 15118 then
announce their true energy (not their departure), so the planner no longer estimates it from the cars
that announce (`optimizer.snapshot.typical_rest_kwh`); with `known_departures`, the cars without ISO 15118
announce their true departure (not their energy), so the planner no longer estimates that
(`optimizer.snapshot.site_dwell_h`). `benchmarks/live_peak.py` is the CLI.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from evfleet.app.demo import components
from evfleet.app.demo.config import DemoConfig
from evfleet.app.demo.replay import CarSpec
from evfleet.isotime import parse_iso
from optimizer.min_peak import Session, min_peak
from optimizer.min_power import ev_min_kw
from optimizer.publish import plan_documents, planned_kw_at
from optimizer.reference import with_references
from optimizer.shaping import shape
from optimizer.snapshot import EvseState, SessionState, SiteState, SnapshotConfig, build_instance
from optimizer.solve import solve
from optimizer.standing import kept_documents, plan_inputs, standing_plan_holds

STEP_S = 900
ISO_MIN_KW = 6 * 230 * 3 / 1000.0  # 6 A on three phases
K16_THRESHOLD_KW = 0.5
"""A csms re-sends an EVSE's profile when a limit moved by more than this (K16)."""


@dataclass
class Loop:
    """State of one closed-loop run."""

    cars: list[CarSpec]
    known_needs: bool = False
    known_departures: bool = False
    delivered: dict[str, float] = field(default_factory=dict)
    full: set[str] = field(default_factory=set)
    plan: dict[str, Any] = field(default_factory=dict)
    changes: int = 0
    solves: int = 0
    solve_cpu_s: float = 0.0
    estimate: dict[str, float] = field(default_factory=dict)
    """Energy [kWh] the cheap window's first plan gave the cars without ISO 15118, and their true need."""
    applied: dict[str, Any] = field(default_factory=dict)
    """The plan the cars draw: `plan` once its delay has passed (`pending`)."""
    pending: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)
    """Plans on their way to the stations: (when they apply, plan)."""
    dear_kwh: float = 0.0
    """Energy [kWh] drawn outside the cheap window's price (dearer than the day's lowest)."""


@dataclass(frozen=True)
class LoopResult:
    """The demo report's figures for one closed-loop day."""

    cost: float
    peak_kw: float
    min_peak_kw: float
    short_kwh: float
    plan_changes: int
    solves: int
    solve_cpu_s: float
    load_kw: list[float]
    silent_planned_kwh: float
    silent_true_kwh: float
    dear_kwh: float = 0.0
    """Energy [kWh] drawn at a price above the day's lowest (before the plan, or the plan's choice)."""

    @property
    def ratio(self) -> float:
        """Peak over the lowest peak of the same cars at the same cost."""
        return self.peak_kw / self.min_peak_kw


def site_state(loop: Loop, now: datetime, limit_kw: float, reserve_w: float,
               prices: dict[str, Any]) -> SiteState:
    """What the store would say at `now`: every EVSE, the cars plugged in, ISO cars' needs."""
    evses, sessions = [], []
    for car in loop.cars:
        here = car.arrival <= now < car.departure
        evses.append(EvseState(car.station_id, car.evse_id, max_power_w=car.max_kw * 1000.0,
                               transaction_id=car.car_id if here else "", default_w=reserve_w))
        if not here:
            continue
        needs: dict[str, Any] | None = None
        if car.iso15118:
            needs = {"energy_amount_wh": car.need_kwh * 1000.0, "departure_time": car.departure.isoformat(),
                     "ev_min_current_a": 6, "ev_max_current_a": 16}
        elif loop.known_needs:
            needs = {"energy_amount_wh": car.need_kwh * 1000.0}
        if not car.iso15118 and loop.known_departures:
            needs = {**(needs or {}), "departure_time": car.departure.isoformat()}
        sessions.append(SessionState(car.car_id, car.station_id, car.evse_id, car.arrival,
                                     id_token=f"DEMO-{car.car_id}",
                                     energy_wh=loop.delivered.get(car.car_id, 0.0) * 1000.0, needs=needs,
                                     energy_at_needs_wh=0.0,
                                     charging_state="SuspendedEV" if car.car_id in loop.full else "Charging"))
    return SiteState("demo", limit_kw, evses, sessions, prices)


def replan(loop: Loop, site: SiteState, now: datetime, cfg: SnapshotConfig, stickiness: float,
           may_keep: bool) -> None:
    """The worker's `_solve_and_write` without Redis; counts the EVSEs a csms would re-send."""
    snap = build_instance(site, now, cfg)
    floor_kw = ev_min_kw(site)
    if may_keep and standing_plan_holds(loop.plan, snap, floor_kw, site.limit_kw, now):
        doc, _ = kept_documents(loop.plan, "p", now, snap.instance.start)
    else:
        snap = with_references(snap, loop.plan, stickiness)
        c0 = time.process_time()
        schedule, _ = shape(snap.instance, solve(snap.instance, "cost", 10.0), floor_kw)  # as the worker
        loop.solve_cpu_s += time.process_time() - c0
        loop.solves += 1
        doc, _ = plan_documents("demo", snap, schedule, plan_id="p", limit_kw=site.limit_kw, computed_at=now,
                                solve_s=0.0, strategy="cost")
        doc["inputs"] = plan_inputs(snap, floor_kw, site.limit_kw, now)
        if loop.plan:
            shift = round((snap.instance.start - parse_iso(loop.plan["start"])).total_seconds() / STEP_S)
            for key, limits in doc["evses"].items():
                old = loop.plan["evses"].get(key)
                if old is not None:
                    old = list(old[shift:]) + [0.0] * shift
                    moved = max(abs(a - b) for a, b in zip(limits, old, strict=False))
                    loop.changes += moved > K16_THRESHOLD_KW
    loop.plan = doc


def _draw(loop: Loop, present: list[CarSpec], now: datetime, reserve_w: float, price_kwh: float,
          cheapest_kwh: float) -> float:
    """One minute of every present car drawing its applied plan's limit (a car its plan does not cover
    yet: the reservation `reserve_w`); the site load [kW]."""
    total = 0.0
    for car in present:
        if car.car_id in loop.full:
            continue
        key = f"{car.station_id}/{car.evse_id}"
        covered = loop.applied.get("transactions", {}).get(key) == car.car_id
        limit = planned_kw_at(loop.applied, key, now) if covered else None  # else its TxDefaultProfile
        power = min(reserve_w / 1000.0 if limit is None else limit, car.max_kw)
        if car.iso15118 and power < ISO_MIN_KW - 0.2:
            power = 0.0
        energy = min(power / 60.0, car.need_kwh - loop.delivered.get(car.car_id, 0.0))
        loop.delivered[car.car_id] = loop.delivered.get(car.car_id, 0.0) + energy
        if loop.delivered[car.car_id] >= car.need_kwh - 1e-6:
            loop.full.add(car.car_id)
        total += energy * 60.0
        if price_kwh > cheapest_kwh + 1e-9:
            loop.dear_kwh += energy
    return total


def _apply_due(loop: Loop, now: datetime) -> None:
    """The plans whose delay has passed reach the stations (the latest one counts)."""
    while loop.pending and loop.pending[0][0] <= now:
        loop.applied = loop.pending.pop(0)[1]


def _note_estimate(loop: Loop, now: datetime) -> None:
    """The energy the plan gives the cars without ISO 15118 for the rest of the day, once."""
    if loop.estimate:
        return
    silent = [c for c in loop.cars if not c.iso15118 and c.arrival <= now < c.departure]
    planned = 0.0
    for car in silent:
        limits = loop.plan.get("evses", {}).get(f"{car.station_id}/{car.evse_id}") or []
        planned += sum(limits) * STEP_S / 3600.0
    loop.estimate = {"planned": planned,
                     "true": sum(c.need_kwh - loop.delivered.get(c.car_id, 0.0) for c in silent)}


def run(stations: int, seed: int, tie_break: float | None, stickiness: float, *,
        known_needs: bool = False, window_start_h: int = 23, delay_min: int = 0,
        full_replans: bool = True, known_departures: bool = False) -> LoopResult:
    """One day of the demo's cars (`evfleet demo --stations --seed`) in the ideal loop.

    `delay_min`: simulated minutes from a re-plan to its limits at the stations (the loop's real
    latency times the demo's speed: 0.3 s is 3.6 minutes at 720x); until its first plan applies, a car
    draws the demo's reservation (`components.reserve_kw_per_evse`).

    `full_replans` False: a car filling up is no re-plan trigger (as in the worker, where a TransactionEvent
    with SuspendedEV is not one): it is seen at the next arrival, departure or 15-minute step.

    `known_needs` / `known_departures`: the cars without ISO 15118 announce their true energy / departure."""
    plan = components.build_plan(DemoConfig(stations=stations, seed=seed, today=date(2026, 3, 2)))
    start, end = plan.start, plan.start + timedelta(hours=24)
    prices = plan.prices.repeated(3).to_json()
    reserve_w = min(components.reserve_kw_per_evse(plan), plan.site_limit_kw / len(plan.station_ids)) * 1000.0
    cheapest = min(plan.prices.import_price)
    cfg = SnapshotConfig(tie_break=tie_break)
    loop = Loop(list(plan.cars), known_needs=known_needs, known_departures=known_departures)
    load_kw: list[float] = []
    seen: tuple[frozenset[str], frozenset[str]] | None = None
    now = start
    while now < end:
        present = [c for c in loop.cars if c.arrival <= now < c.departure]
        state = (frozenset(c.car_id for c in present), frozenset(loop.full) if full_replans else frozenset())
        boundary = (now - start).total_seconds() % STEP_S == 0
        if state != seen or boundary:
            seen = state
            site = site_state(loop, now, plan.site_limit_kw, reserve_w, prices)
            replan(loop, site, now, cfg, stickiness, may_keep=not boundary)
            loop.pending.append((now + timedelta(minutes=delay_min), loop.plan))
        _apply_due(loop, now)
        if now.hour == window_start_h:
            _note_estimate(loop, now)
        load_kw.append(_draw(loop, present, now, reserve_w, plan.prices.price_at(now), cheapest))
        now += timedelta(minutes=1)
    cost = sum(kw / 60.0 * plan.prices.price_at(start + timedelta(minutes=i)) for i, kw in enumerate(load_kw))
    peak = max(sum(load_kw[i:i + 15]) / 15.0 for i in range(0, len(load_kw), 15))
    steps = math.ceil((end - start).total_seconds() / STEP_S)
    sessions = [Session(c.arrival, min(c.departure, end), loop.delivered.get(c.car_id, 0.0), c.max_kw)
                for c in loop.cars]
    lowest = min_peak(sessions, start, end, STEP_S,
                      [plan.prices.price_at(start + timedelta(seconds=STEP_S * i)) for i in range(steps)],
                      plan.site_limit_kw, cost).peak_kw
    short = sum(max(0.0, c.need_kwh - loop.delivered.get(c.car_id, 0.0)) for c in loop.cars)
    return LoopResult(cost, peak, lowest, short, loop.changes, loop.solves, loop.solve_cpu_s, load_kw,
                      loop.estimate.get("planned", 0.0), loop.estimate.get("true", 0.0), loop.dear_kwh)
