"""The live planner's realised peak against the lowest peak of the same cars at the same cost (no OCPP).

The demo's cars (`evfleet demo`'s scenario, stations and seed) in an ideal closed loop of the worker's
pure pipeline, minute by minute over the day: site state -> `optimizer.snapshot.build_instance` ->
standing plan kept (`optimizer.standing`) or re-solved with the previous plan as reference
(`optimizer.reference`, `optimizer.solve`, `optimizer.min_power`) -> plan document
(`optimizer.worker.plan_documents`). A re-plan follows every arrival, departure and car filling up, and
every new 15-minute step (the worker's rolling horizon). Each car draws its plan's limit at once (no
profile round trip), capped by its maximum and what it still needs; an ISO 15118 car pauses below its
6 A minimum; cars without ISO 15118 announce nothing and report SuspendedEV when full, as in the demo.

It separates the planner from the loop's latency: the demo's own figure adds the csms's and the
stations' delays, which grow with the machine's load. Prints cost, peak, the min-peak
(`optimizer.min_peak`, as the demo's report computes it), their ratio, energy short and the plan
changes a csms would send (EVSEs whose limits moved by more than 0.5 kW, the K16 threshold).

    .venv/bin/python benchmarks/live_peak.py [--stations 40] [--seeds 1 2 3] [--tie-break 0.01]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from evfleet.app.demo import components
from evfleet.app.demo.config import DemoConfig
from evfleet.app.demo.replay import CarSpec
from optimizer.min_peak import Session, min_peak
from optimizer.min_power import enforce_min_power, ev_min_kw
from optimizer.reference import with_references
from optimizer.snapshot import EvseState, SessionState, SiteState, SnapshotConfig, build_instance
from optimizer.solve import solve
from optimizer.standing import kept_documents, plan_inputs, standing_plan_holds
from optimizer.worker import WorkerConfig, plan_documents, planned_kw_at

STEP_S = 900
ISO_MIN_KW = 6 * 230 * 3 / 1000.0  # 6 A on three phases
K16_THRESHOLD_KW = 0.5


@dataclass
class Loop:
    """State of one closed-loop run."""

    cars: list[CarSpec]
    delivered: dict[str, float] = field(default_factory=dict)
    full: set[str] = field(default_factory=set)
    plan: dict[str, Any] = field(default_factory=dict)
    changes: int = 0
    solves: int = 0
    solve_cpu_s: float = 0.0


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
        needs = None
        if car.iso15118:
            needs = {"energy_amount_wh": car.need_kwh * 1000.0, "departure_time": car.departure.isoformat(),
                     "ev_min_current_a": 6, "ev_max_current_a": 16}
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
        schedule = enforce_min_power(snap.instance, solve(snap.instance, "cost", 10.0), floor_kw)
        loop.solve_cpu_s += time.process_time() - c0
        loop.solves += 1
        doc, _ = plan_documents("demo", snap, schedule, plan_id="p", limit_kw=site.limit_kw, computed_at=now,
                                solve_s=0.0, strategy="cost")
        doc["inputs"] = plan_inputs(snap, floor_kw, site.limit_kw, now)
        if loop.plan:
            shift = round((snap.instance.start - datetime.fromisoformat(loop.plan["start"])).total_seconds()
                          / STEP_S)
            for key, limits in doc["evses"].items():
                old = loop.plan["evses"].get(key)
                if old is not None:
                    old = list(old[shift:]) + [0.0] * shift
                    moved = max(abs(a - b) for a, b in zip(limits, old, strict=False))
                    loop.changes += moved > K16_THRESHOLD_KW
    loop.plan = doc


def run(stations: int, seed: int, tie_break: float | None, stickiness: float) -> dict[str, float]:
    """One day of the demo's cars in the ideal loop; the demo report's figures."""
    plan = components.build_plan(DemoConfig(stations=stations, seed=seed, today=date(2026, 3, 2)))
    start, end = plan.start, plan.start + timedelta(hours=24)
    prices = plan.prices.repeated(3).to_json()
    reserve_w = min(max(c.max_kw for c in plan.cars), plan.site_limit_kw / len(plan.station_ids)) * 1000.0
    cfg = SnapshotConfig(tie_break=tie_break)
    loop = Loop(list(plan.cars))
    load_kw: list[float] = []
    seen: tuple[frozenset[str], frozenset[str]] | None = None
    now = start
    while now < end:
        present = [c for c in loop.cars if c.arrival <= now < c.departure]
        state = (frozenset(c.car_id for c in present), frozenset(loop.full))
        boundary = (now - start).total_seconds() % STEP_S == 0
        if state != seen or boundary:
            seen = state
            site = site_state(loop, now, plan.site_limit_kw, reserve_w, prices)
            replan(loop, site, now, cfg, stickiness, may_keep=not boundary)
        total = 0.0
        for car in present:
            if car.car_id in loop.full:
                continue
            limit = planned_kw_at(loop.plan, f"{car.station_id}/{car.evse_id}", now)
            power = min(reserve_w / 1000.0 if limit is None else limit, car.max_kw)
            if car.iso15118 and power < ISO_MIN_KW - 0.2:
                power = 0.0
            energy = min(power / 60.0, car.need_kwh - loop.delivered.get(car.car_id, 0.0))
            loop.delivered[car.car_id] = loop.delivered.get(car.car_id, 0.0) + energy
            if loop.delivered[car.car_id] >= car.need_kwh - 1e-6:
                loop.full.add(car.car_id)
            total += energy * 60.0
        load_kw.append(total)
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
    return {"cost": cost, "peak_kw": peak, "min_peak_kw": lowest, "ratio": peak / lowest,
            "short_kwh": short, "plan_changes": float(loop.changes), "solves": float(loop.solves),
            "solve_cpu_s": loop.solve_cpu_s}


def main() -> None:
    """CLI: one line per seed, then the median ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--tie-break", type=float, default=SnapshotConfig().tie_break,
                    help="the snapshot's objective.tie_break (0: no peak term)")
    ap.add_argument("--stickiness", type=float, default=WorkerConfig().stickiness)
    args = ap.parse_args()
    ratios = []
    print(f"stations {args.stations}, tie_break {args.tie_break}, stickiness {args.stickiness}, "
          f"load {os.getloadavg()[0]:.1f}")
    for seed in args.seeds:
        r = run(args.stations, seed, args.tie_break, args.stickiness)
        ratios.append(r["ratio"])
        print(f"seed {seed}: cost {r['cost']:.2f} EUR, peak {r['peak_kw']:.1f} kW, "
              f"min-peak {r['min_peak_kw']:.1f} kW ({r['ratio']:.3f}x), short {r['short_kwh']:.2f} kWh, "
              f"plan changes {r['plan_changes']:.0f}, "
              f"solves {r['solves']:.0f} ({r['solve_cpu_s']:.1f} s CPU)", flush=True)
    ratios.sort()
    print(f"median ratio {ratios[len(ratios) // 2]:.3f}x, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
