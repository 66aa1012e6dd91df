"""Baseline strategies: greedy step-by-step allocation in pure numpy, same input/output as the optimizer.

Every baseline walks the horizon once; at each step it gives chargers and site headroom
(`import_limit - base_load + pv`) to the EVs that still need energy, in the baseline's
order, never more than an EV's remaining need. Storage stays idle (so a `final_kwh` above
`initial_kwh` is not met; `check_schedule` reports it) and V2G is not used.

- `uncontrolled`: first come, first served at full power; a plugged-in EV keeps its charger until full.
- `equal_share`: headroom shared equally (water-filling) between EVs that need energy.
- `edf`: earliest departure first.
- `llf`: least laxity first (time left minus time still needed at full power).
- `smallest_first`: smallest remaining need first (seed 004's ordering result).
- `fcfs`: seed 003's baseline as the paper defines it: arrival order, a charger held until departure
  (`optimizer.fcfs`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from optimizer.model.data import FloatArray, IntArray, ProblemData

BASELINES = ("uncontrolled", "equal_share", "edf", "llf", "smallest_first", "fcfs")

OrderKey = Callable[[ProblemData, int, FloatArray, IntArray], FloatArray]


def _key_arrival(data: ProblemData, t: int, remaining: FloatArray, prev: IntArray) -> FloatArray:
    # plugged-in EVs first (they keep their charger), then by arrival
    return data.arrival.astype(float) - 1e9 * (prev >= 0)


def _key_departure(data: ProblemData, t: int, remaining: FloatArray, prev: IntArray) -> FloatArray:
    return data.departure.astype(float)


def _key_laxity(data: ProblemData, t: int, remaining: FloatArray, prev: IntArray) -> FloatArray:
    rate = np.maximum(data.p_max_kw.max(axis=1, initial=0.0) * data.efficiency, 1e-9)
    return (data.departure - t) * data.dt_h - remaining / rate


def _key_remaining(data: ProblemData, t: int, remaining: FloatArray, prev: IntArray) -> FloatArray:
    return remaining


_KEYS: dict[str, OrderKey] = {
    "uncontrolled": _key_arrival,
    "equal_share": _key_departure,  # decides who gets a charger; power is then shared equally
    "edf": _key_departure,
    "llf": _key_laxity,
    "smallest_first": _key_remaining,
}


def water_fill(caps: FloatArray, budget: float) -> FloatArray:
    """Share `budget` equally among entries, none above its cap (max-min fair allocation)."""
    if caps.size == 0 or budget <= 0:
        return np.zeros_like(caps)
    if caps.sum() <= budget:
        return caps.copy()
    order = np.sort(caps)
    n = order.size
    # level L with sum(min(caps, L)) == budget: walk sorted caps
    spent_before = np.concatenate([[0.0], np.cumsum(order)[:-1]])
    levels = (budget - spent_before) / (n - np.arange(n))
    k = int(np.argmax(levels <= order))
    return np.minimum(caps, levels[k])


def run_baseline(data: ProblemData, name: str) -> tuple[FloatArray, FloatArray, IntArray]:
    """(ev_kw (E,T), storage_kw (S,T), assignment (E,T)) of baseline `name`."""
    if name == "fcfs":
        from optimizer.fcfs import run_fcfs

        return run_fcfs(data)
    key = _KEYS[name]
    n_ev, steps, dt = data.n_ev, data.steps, data.step_h
    ev_kw = np.zeros((n_ev, steps))
    assign = np.full((n_ev, steps), -1, dtype=np.int64)
    remaining = data.need_kwh.copy()
    prev = np.full(n_ev, -1, dtype=np.int64)
    fixed = data.ev_charger >= 0
    headroom = np.maximum(data.import_limit_kw - data.base_load_kw + data.pv_kw, 0.0)
    for t in range(steps):
        present = data.available[:, t]
        assign[fixed & present, t] = data.ev_charger[fixed & present]
        active = present & (remaining > 1e-9)
        order = np.flatnonzero(active)
        order = order[np.argsort(key(data, t, remaining, prev)[order], kind="stable")]
        caps, chosen = _plug(data, t, order, prev, fixed)
        want = np.minimum(caps, remaining[chosen] / (data.efficiency[chosen] * dt[t]))
        if name == "equal_share":
            power = water_fill(want, headroom[t])
        else:
            power = np.minimum(
                want, np.maximum(headroom[t] - np.concatenate([[0.0], np.cumsum(want)[:-1]]), 0.0)
            )
        ev_kw[chosen, t] = power
        remaining[chosen] -= power * data.efficiency[chosen] * dt[t]
        remaining[remaining < 1e-9] = 0.0
        pool_chosen = chosen[~fixed[chosen]]
        assign[pool_chosen, t] = prev[pool_chosen]
        keep = np.zeros(n_ev, dtype=bool)
        keep[pool_chosen] = True
        prev[~keep] = -1  # a pool EV that did not charge this step releases its charger
    return ev_kw, np.zeros((data.n_storage, steps)), assign


def _plug(
    data: ProblemData, t: int, order: IntArray, prev: IntArray, fixed: np.ndarray
) -> tuple[FloatArray, IntArray]:
    """Pick which active EVs (in `order`) charge at step t; pool EVs get a free charger.

    A pool EV keeps the charger it used in the previous step if it is still free.

    Updates `prev` with the charger of every pool EV that charges. Returns (power caps, chosen EVs).
    """
    caps = data.p_max_kw[order, t].copy()
    keep = np.ones(order.size, dtype=bool)
    free = data.charger_free[:, t].copy()
    for i in np.flatnonzero(~fixed[order]).tolist():
        e = int(order[i])
        c = int(prev[e])
        if c < 0 or not free[c]:
            candidates = np.flatnonzero(free)
            if candidates.size == 0:
                prev[e] = -1
                keep[i] = False
                continue
            c = int(candidates[np.argmax(data.charger_max_kw[candidates])])
        free[c] = False
        prev[e] = c
        caps[i] = min(data.ev_max_kw[e], data.charger_max_kw[c])
    return caps[keep], order[keep]
