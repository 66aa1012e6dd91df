"""The LP's default tie-break: the lowest peak among cost-optimal schedules, never at a cost.

`build_lp` adds w·Δt·peak to the objective. With `objective.tie_break` null (the default of every
offline instance: `evfleet optimize`, `optimizer.solve`, the benchmarks' fleets) w comes from
`lp_tie_break_weight`: small enough that the peak term cannot move the cost optimum, as large as
that allows (at most the live planner's 1e-2 x the largest price, `optimizer.snapshot`).

Why it cannot trade cost. Without V2G, storage, stickiness or a demand charge, the LP is a min-cost
flow through one outside node: import (cost price_t per kWh, capacity the import limit), PV
(cost 0), export (revenue export_t), unmet energy (u_e = penalty x priority_e x η_e per grid kWh)
flow into the steps and EVs; each EV sends need_e/η_e .. room_e/η_e back out. A simple cycle passes
the outside node once, so it costs A − B per kWh for two values A, B of
    V = {0} ∪ {import prices} ∪ {export prices} ∪ {u_e},
either 0 or at least δ, the smallest positive gap in V. Let x_w be optimal with the peak term and x₀
the cost optimum nearest to it: x_w − x₀ splits into conformal cycles (each feasible on its own);
removing from x_w the Q of them that cost > 0 keeps it feasible, costs δ·Σ_Q a_k less at least, and
raises the peak by at most Σ_Q a_k / h_min kW (a cycle shifts a_k kWh between two steps; h_min the
shortest step, hours). Optimality of x_w then needs δ·Σ a ≤ w·Δt·Σ a / h_min: with
w < δ·h_min/Δt, Q is empty and x_w costs exactly the optimum. We take half of that bound.

Where the argument fails the default keeps today's behaviour, w = 0 (no peak term; the interior
point's central solution): V2G (discharge with round-trip losses and degradation) and storage (losses
and throughput cost) are not plain flows; stickiness prices every (EV, step) arc; a demand charge
(`peak_price_per_kw` > 0) already prices the peak, so a cost optimum has the lowest peak among
schedules of its energy cost.

Size: above DEFAULT_MAX_CHARGE_COLUMNS the default is 0 too. The peak column costs the interior point
more iterations or more work per iteration (seed 001 fleet, solve CPU: 1,000 EVs 0.28 s against 0.14 s,
10,000 EVs 3.4 s against 2.1 s), where the issue asks for build+solve within 1.3x of direct highspy;
an explicit `tie_break` still turns it on at any size.
"""

from __future__ import annotations

import numpy as np

from optimizer.model.data import ProblemData

LIVE_TIE_BREAK = 1e-2
"""The cap, relative to the largest price: the live planner's `SnapshotConfig.tie_break`."""
DEFAULT_MAX_CHARGE_COLUMNS = 20_000
"""Charge columns (EV x step cells) up to which the default adds the peak term (module doc)."""
SAFETY = 0.5
"""Fraction of the bound δ·h_min/Δt the default weight takes (module doc)."""


def lp_tie_break_weight(data: ProblemData) -> float:
    """Absolute weight w of the LP's peak term (per kW of peak, per hour of nominal step).

    `objective.tie_break` 0: off; a value: that x the largest price (as before); null: the largest
    weight that cannot move the cost optimum (module doc), capped at LIVE_TIE_BREAK x the largest
    price; 0 where the argument does not hold and above DEFAULT_MAX_CHARGE_COLUMNS.
    """
    if data.tie_break is not None:
        return data.tie_break * data.price_scale if data.tie_break else 0.0
    if not is_flow_lp(data) or data.steps == 0 or len(data.charge_cells[0]) > DEFAULT_MAX_CHARGE_COLUMNS:
        return 0.0
    cap = LIVE_TIE_BREAK * data.price_scale
    gap = smallest_cost_gap(data)
    if gap is None:  # every cycle costs 0: the peak term can trade nothing
        return cap
    return min(cap, SAFETY * gap * float(data.step_h.min()) / data.dt_h)


def is_flow_lp(data: ProblemData) -> bool:
    """True when the cost LP is the min-cost flow of the module doc (the default may add a peak term)."""
    if data.d_max_kw.any() or data.n_storage or data.peak_price_per_kw > 0:
        return False
    if data.stickiness > 0 and data.stickiness_weight > 0:
        pe, pt = data.charge_cells
        if (~np.isnan(data.reference_kw[pe, pt])).any():
            return False
    return True


def smallest_cost_gap(data: ProblemData) -> float | None:
    """δ: the smallest positive gap between two values of V (module doc), per kWh; None if V has one value."""
    values = [np.zeros(1), data.import_price]
    if data.export_limit_kw.any():
        values.append(data.export_price)
    if data.unmet_penalty_per_kwh is not None:
        values.append(data.unmet_penalty_per_kwh * data.priority * data.efficiency)
    v = np.unique(np.concatenate(values))
    gaps = np.diff(v)
    gaps = gaps[gaps > 0]
    return float(gaps.min()) if len(gaps) else None
