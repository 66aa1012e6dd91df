"""Seed 004: four EVs on one shared 22 kW source; minimise the total service time (ordering result).

The paper charges four EVs needing 3.7, 4.6, 6.6 and 7.4 kWh from a 22 kW source and compares
three orders: all together (Case 1), largest first with the smallest waiting (Case 2), smallest first
with the largest waiting (Case 3); within each phase it splits power by minimising Σ m_i / x_i, which
gives x_i ∝ √m_i. Its conclusion: smallest first gives the lowest service time. `paper_cases()`
recomputes the three cases with that rule; `shared_source()` is the instance our `service_time`
MILP and the baselines solve (1-minute steps).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from optimizer.problem import EV, Charger, Instance, Objective, Site, Tariff

NEEDS_KWH = (3.7, 4.6, 6.6, 7.4)
SOURCE_KW = 22.0
START = datetime.fromisoformat("2025-01-01T08:00:00+00:00")


def shared_source(step_minutes: float = 1.0, horizon_min: int = 90) -> Instance:
    """Four EVs plugged in at t=0 on four 22 kW chargers fed by one 22 kW source."""
    steps = int(horizon_min / step_minutes)
    evs = [
        EV(
            id=f"ev{i + 1}",
            charger=f"ch{i + 1}",
            arrival=0,
            departure=steps,
            energy_kwh=need,
            max_kw=SOURCE_KW,
            capacity_kwh=60.0,
            initial_kwh=20.0,
        )
        for i, need in enumerate(NEEDS_KWH)
    ][::-1]  # plugged in largest first, so first-come-first-served serves the largest first
    return Instance(
        start=START,
        step_minutes=step_minutes,
        steps=steps,
        site=Site(import_limit_kw=SOURCE_KW),
        tariff=Tariff(import_price=0.25),
        chargers=[Charger(id=f"ch{i + 1}", max_kw=SOURCE_KW) for i in range(len(NEEDS_KWH))],
        evs=evs,
        objective=Objective(kind="service_time"),
    )


def sqrt_rule_service_times(
    needs: list[float], waiting: list[int], source_kw: float = SOURCE_KW
) -> list[float]:
    """Completion times [h] when active EVs share the source as x_i ∝ √remaining_i (the paper's problem 6).

    `waiting` lists EVs (indices) held back until the first EV completes, in the order they join.
    """
    remaining = np.array(needs, dtype=float)
    done_at = np.full(len(needs), np.nan)
    active = [i for i in range(len(needs)) if i not in waiting]
    queue = list(waiting)
    now = 0.0
    while active:
        r = remaining[active]
        x = source_kw * np.sqrt(r) / np.sqrt(r).sum()
        times = r / x
        k = int(np.argmin(times))
        dt = float(times[k])
        now += dt
        remaining[active] = r - x * dt
        finished = active[k]
        done_at[finished] = now
        remaining[finished] = 0.0
        active = [i for i in active if i != finished]
        if queue:
            active.append(queue.pop(0))
    return done_at.tolist()


def paper_cases() -> dict[str, list[float]]:
    """The paper's three orders, recomputed: completion time of each EV [h]."""
    needs = list(NEEDS_KWH)
    return {
        "case1_simultaneous": sqrt_rule_service_times(needs, []),
        "case2_smallest_waits": sqrt_rule_service_times(needs, [0]),
        "case3_largest_waits": sqrt_rule_service_times(needs, [3]),
    }


def serial_smallest_first(needs: tuple[float, ...] = NEEDS_KWH, source_kw: float = SOURCE_KW) -> list[float]:
    """Completion times [h] when the whole source goes to one EV at a time, smallest first (optimal)."""
    order = np.argsort(needs)
    out = np.zeros(len(needs))
    out[order] = np.cumsum(np.asarray(needs)[order]) / source_kw
    return out.tolist()
