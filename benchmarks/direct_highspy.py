"""Direct highspy on the fleet LP (the anchor of `benchmarks/optimizer_scaling.py`), and how far each
method's schedule moves the other EVs when one EV's need changes (not a test).

`direct_highspy(inst, solver)` builds the LP `evfleet optimize` solves (charge columns, one energy row
per EV, one site row per step, and the default peak tie-break's column and rows, `optimizer.model.ties`)
with numpy and solves it with highspy: `choose` (HiGHS's defaults), `ipm` (no crossover), `same` (our
options) or `vertex` (dual simplex without presolve: the fastest at 20 and 1,000 EVs, to a vertex).

`one_ev_change(inst, method)`: the schedule from scratch, then again with one EV needing 1 kWh more
(an offline re-plan): the other EVs' mean and largest move [kW] and how many move by more than
K16_KW (the csms's default re-send threshold). The equal-cost optima of these LPs form a face, not a
point: the interior point's central solution moves little with the data, a simplex vertex may jump
to another vertex of the face (every EV by its full power). The cost and the peak are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import highspy
import numpy as np

from optimizer.model.data import FloatArray, build_data
from optimizer.model.highs_lp import (
    IPM_OPTIMALITY_TOLERANCE,
    LARGE_LP_COLUMNS,
    STICKY_IPM_OPTIMALITY_TOLERANCE,
)
from optimizer.model.ties import lp_tie_break_weight
from optimizer.problem import Instance
from optimizer.solve import solve

K16_KW = 0.5
"""The csms's default threshold for re-sending a profile (kW)."""
CHANGED_EV = 3
"""The EV whose need grows by 1 kWh (as tests/optimizer/test_fallback.py's stability test)."""


def direct_highspy(inst: Instance, solver: str) -> dict[str, float]:
    """The plain fleet LP straight into highspy (`solver`: choose = HiGHS's default; ipm = no crossover;
    same = our options; vertex = dual simplex without presolve): wall, CPU, objective, peak."""
    return direct_solve(inst, solver)[0]


def direct_solve(inst: Instance, solver: str) -> tuple[dict[str, float], FloatArray]:
    """`direct_highspy`'s figures and the (EV, step) power [kW] it returns."""
    w0, c0 = time.perf_counter(), time.process_time()
    d = build_data(inst)
    pe, pt = np.nonzero(d.p_max_kw > 0)
    n, steps, n_ev = len(pe), d.steps, d.n_ev
    # the peak term `evfleet optimize` adds by default (optimizer.model.ties; 0 above its size limit): the
    # same LP as ours, Σ_e p[e,t] − peak ≤ −base[t], peak ≤ the highest limit, and Σ_e p[e,t] ≤ limit[t] −
    # base[t] where the limit is lower (`add_lean_peak_rows`); without it the site rows bound Σ_e p
    peak_cost = d.peak_price_per_kw + lp_tie_break_weight(d) * d.dt_h
    top = float(d.import_limit_kw.max())
    below = np.flatnonzero(d.import_limit_kw < top) if peak_cost > 0 else np.zeros(0, dtype=np.int64)
    cap_row = np.full(steps, -1, dtype=np.int64)
    cap_row[below] = n_ev + steps + np.arange(len(below))
    has_cap = cap_row[pt] >= 0
    # column-wise (HiGHS's own storage, no transpose in passModel): column j is p[pe[j], pt[j]], with
    # entries in its EV's energy row, its step's site row and, where the peak term has one, its step's
    # limit row (in row order: no sort)
    counts = 2 + has_cap.astype(np.int64)
    start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    index = np.full((n, 3), -1, dtype=np.int64)
    index[:, 0], index[:, 1], index[:, 2] = pe, n_ev + pt, cap_row[pt]
    vals = np.column_stack([d.efficiency[pe] * d.step_h[pt], np.ones(n), np.ones(n)])
    keep = index >= 0
    index, vals = index[keep], vals[keep]
    row_lo = np.concatenate([d.need_kwh, np.full(steps + len(below), -highspy.kHighsInf)])
    site_hi = d.import_limit_kw - d.base_load_kw if peak_cost <= 0 else -d.base_load_kw
    cap_hi = d.import_limit_kw[below] - d.base_load_kw[below]
    row_hi = np.concatenate([d.capacity_kwh - d.initial_kwh, site_hi, cap_hi])
    cost, col_lo, col_hi = d.import_price[pt] * d.step_h[pt], np.zeros(n), d.p_max_kw[pe, pt]
    n_col = n
    if peak_cost > 0:  # the peak column: −1 in every step's site row
        start = np.append(start, start[-1] + steps)
        index = np.concatenate([index, n_ev + np.arange(steps)])
        vals = np.concatenate([vals, -np.ones(steps)])
        cost, col_lo = np.append(cost, peak_cost), np.append(col_lo, 0.0)
        col_hi = np.append(col_hi, max(top, 0.0))
        n_col += 1
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    if solver in ("ipm", "same"):
        h.setOptionValue("solver", "ipm")
        h.setOptionValue("run_crossover", "off")
    if solver == "vertex":
        h.setOptionValue("solver", "simplex")
        h.setOptionValue("presolve", "off")
    if solver == "same":  # the options optimizer.model.highs_solve uses for this LP
        h.setOptionValue("presolve", "off")
        small_peak = peak_cost > 0 and n_col <= LARGE_LP_COLUMNS
        h.setOptionValue("ipm_optimality_tolerance",
                         STICKY_IPM_OPTIMALITY_TOLERANCE if small_peak else IPM_OPTIMALITY_TOLERANCE)
    h.passModel(n_col, n_ev + steps + len(below), len(vals), 1, 1,
                float(d.import_price * d.step_h @ d.base_load_kw), cost, col_lo, col_hi, row_lo, row_hi,
                start.astype(np.int32), index.astype(np.int32), vals, np.zeros(n_col, dtype=np.int32))
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"direct highspy: {h.modelStatusToString(h.getModelStatus())}")
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    x = np.asarray(h.getSolution().col_value)
    grid = d.base_load_kw + np.bincount(pt, x[:n], steps)
    # the cost, as ours reports it: without the tie-break's share of the peak term
    tie = float(x[n]) * (peak_cost - d.peak_price_per_kw) if n_col > n else 0.0
    ev_kw = np.zeros((n_ev, steps))
    ev_kw[pe, pt] = x[:n]
    return {"wall": wall, "cpu": cpu, "objective": float(h.getInfo().objective_function_value) - tie,
            "peak": float(grid.max())}, ev_kw


def ours_ev_kw(inst: Instance) -> FloatArray:
    """`optimizer.solve`'s (EV, step) power [kW] (the cost strategy, as `evfleet optimize`)."""
    s = solve(inst, "cost")
    return np.array([s.ev_power_kw[ev.id] for ev in inst.evs])


def vertex_ev_kw(inst: Instance) -> FloatArray:
    """Direct highspy's dual simplex without presolve: its (EV, step) power [kW]."""
    return direct_solve(inst, "vertex")[1]


def one_ev_change(inst: Instance, method: Callable[[Instance], FloatArray]) -> dict[str, float]:
    """How far `method`'s schedule moves the other EVs when EV CHANGED_EV needs 1 kWh more (module doc)."""
    k = min(CHANGED_EV, len(inst.evs) - 1)
    evs = list(inst.evs)
    evs[k] = evs[k].model_copy(update={"energy_kwh": evs[k].energy_kwh + 1.0})
    before, after = method(inst), method(inst.model_copy(update={"evs": evs}))
    moved = np.abs(np.delete(after - before, k, axis=0))
    return {"mean_kw": float(moved.mean()), "max_kw": float(moved.max()),
            "evs_moved": float((moved.max(axis=1) > K16_KW).sum()), "others": float(len(moved))}
