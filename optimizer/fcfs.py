"""Seed 003's baseline, as the paper defines it: first come, first served, a charger held until departure.

The paper (seed 003, "Baseline Scenario"): "a non-optimized, first-come first-served charging
strategy, in which EVs charge whenever a charger is available, without considering energy price
variations, renewable generation forecasts, or grid constraints". Read literally for a company car
park where nobody moves the cars:

- EVs take a free charger in the order they arrive (ties: instance order); an EV that finds every
  charger taken waits, and takes the first charger a departing EV frees (still in arrival order);
- an EV keeps its charger until it leaves, also once its need is met (it stays plugged in);
- it charges at full power (min of its and the charger's maximum) until its need is met, then draws
  nothing; prices, PV and the BESS are ignored (the BESS stays idle).

Our `uncontrolled` baseline differs in one point: an EV releases its charger as soon as it is full, so
a waiting EV can take it; that is a smarter operator than the paper's baseline. One deviation from the
paper: "without considering grid constraints" is not followed where it would break the site limit
(our product never exceeds it); the FCFS order is kept and the power shaved at the headroom, which never
binds on the seed 003 site (factory load + 44 kW of chargers < 300 kW).
"""

from __future__ import annotations

import numpy as np

from optimizer.model.data import FloatArray, IntArray, ProblemData


def run_fcfs(data: ProblemData) -> tuple[FloatArray, FloatArray, IntArray]:
    """(ev_kw (E,T), storage_kw (S,T) = 0, assignment (E,T)) of the paper's FCFS baseline."""
    n_ev, steps = data.n_ev, data.steps
    ev_kw = np.zeros((n_ev, steps))
    assign = np.full((n_ev, steps), -1, dtype=np.int64)
    remaining = data.need_kwh.copy()
    holder = np.full(len(data.charger_ids), -1, dtype=np.int64)
    has_charger = data.ev_charger.copy()  # fixed EVs always have theirs
    queue = [int(e) for e in np.lexsort((np.arange(n_ev), data.arrival)) if data.pool[e]]
    headroom = np.maximum(data.import_limit_kw - data.base_load_kw + data.pv_kw, 0.0)
    for t in range(steps):
        dt = float(data.step_h[t])
        for c in np.flatnonzero(holder >= 0).tolist():
            if not data.available[holder[c], t]:
                holder[c] = -1
            elif not data.charger_free[c, t]:  # an EV fixed to this charger arrives: it has priority
                has_charger[holder[c]], holder[c] = -1, -1
        for e in queue:
            if has_charger[e] >= 0 or not data.available[e, t]:
                continue
            free = [c for c in range(len(holder)) if holder[c] < 0 and data.charger_free[c, t]]
            if not free:
                break  # later arrivals wait behind this one
            c = max(free, key=lambda i: (data.charger_max_kw[i], -i))
            holder[c], has_charger[e] = e, c
        plugged = np.flatnonzero(data.available[:, t] & (has_charger >= 0))
        plugged = plugged[np.lexsort((plugged, data.arrival[plugged]))]
        assign[plugged, t] = has_charger[plugged]
        cap = np.minimum(data.ev_max_kw[plugged], data.charger_max_kw[has_charger[plugged]])
        want = np.minimum(cap, remaining[plugged] / (data.efficiency[plugged] * dt))
        before = np.concatenate([[0.0], np.cumsum(want)[:-1]])
        power = np.clip(np.minimum(want, headroom[t] - before), 0.0, None)
        ev_kw[plugged, t] = power
        remaining[plugged] = np.maximum(remaining[plugged] - power * data.efficiency[plugged] * dt, 0.0)
        remaining[remaining < 1e-9] = 0.0
    return ev_kw, np.zeros((data.n_storage, steps)), assign
