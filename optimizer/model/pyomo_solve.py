"""Solve an instance with the Pyomo reference model; MILPs get an LP-relaxation-and-rounding fallback."""

from __future__ import annotations

import time

import numpy as np
import pyomo.environ as pyo

from optimizer.evaluate import make_schedule
from optimizer.model.data import IntArray, ProblemData
from optimizer.model.pyomo_model import (
    SolveResult,
    assign_solution,
    build_model,
    class_free_count,
    solve_model,
)
from optimizer.problem import Instance, Schedule, SolveStatus

DEFAULT_MILP_TIME_LIMIT_S = 30.0


def solve_with_pyomo(
    instance: Instance, data: ProblemData, time_limit_s: float | None, mip_rel_gap: float, prep_s: float = 0.0
) -> Schedule:
    """Build, solve and read back the Pyomo model; fall back to relaxation+rounding or a baseline."""
    from optimizer.solve import fallback_schedule, reported_objective

    milp = data.kind == "service_time" or data.needs_assignment
    limit = time_limit_s if time_limit_s is not None else (DEFAULT_MILP_TIME_LIMIT_S if milp else None)
    t0 = time.perf_counter()
    m = build_model(data)
    build_s = prep_s + time.perf_counter() - t0
    # service time is a whole number of steps: a gap below one step proves optimality
    abs_gap = 0.999 * data.dt_h if data.kind == "service_time" else None
    res = solve_model(m, limit, mip_rel_gap, abs_gap)
    if res.has_solution:
        ev_kw, st_kw, assign = assign_solution(m, data)
        status = SolveStatus.OPTIMAL if res.optimal else SolveStatus.FEASIBLE
        message = "" if res.optimal else f"HiGHS stopped ({res.termination}) with a feasible solution"
        service_h = float(pyo.value(m.service_h)) if hasattr(m, "service_h") else None
        return make_schedule(
            instance,
            data,
            strategy=data.kind,
            status=status,
            ev_kw=ev_kw,
            st_kw=st_kw,
            assign=assign,
            objective_value=reported_objective(data.kind, float(pyo.value(m.cost)), service_h),
            mip_gap=res.mip_gap if milp else None,
            message=message,
            build_s=build_s,
            solve_s=time.perf_counter() - t0 - (build_s - prep_s),
        )
    if data.needs_assignment and res.termination != "infeasible":
        sched = solve_by_rounding(instance, data, res)
        if sched is not None:
            return sched
    return fallback_schedule(instance, f"HiGHS found no solution ({res.termination})")


def round_assignment(data: ProblemData, x_frac: dict[tuple[int, int, int], float]) -> IntArray:
    """Greedy rounding of a fractional class assignment: per step, largest y[e,k,t] first, within n_k(t)."""
    free = class_free_count(data)
    cls = np.full((data.n_ev, data.steps), -1, dtype=np.int64)
    by_t: dict[int, list[tuple[float, int, int]]] = {}
    for (e, k, t), v in x_frac.items():
        by_t.setdefault(t, []).append((v or 0.0, e, k))
    for t, items in by_t.items():
        left = free[:, t].copy()
        for v, e, k in sorted(items, key=lambda i: (-i[0], i[1], i[2])):
            if v <= 1e-6 or left[k] <= 0 or cls[e, t] >= 0:
                continue
            cls[e, t] = k
            left[k] -= 1
    return cls


def solve_by_rounding(instance: Instance, data: ProblemData, milp_result: SolveResult) -> Schedule | None:
    """LP relaxation of the assignment, greedy rounding, then the LP with the assignment fixed."""
    from optimizer.solve import reported_objective

    t0 = time.perf_counter()
    relaxed = build_model(data, relax_assignment=True)
    res = solve_model(relaxed)
    if not res.has_solution:
        return None
    assign = round_assignment(data, relaxed.x.extract_values())
    fixed = build_model(data, relax_assignment=True)
    for (e, k, t), var in fixed.x.items():
        var.fix(1.0 if assign[e, t] == k else 0.0)
    res2 = solve_model(fixed)
    if not res2.has_solution:
        return None
    ev_kw, st_kw, assign_out = assign_solution(fixed, data)
    return make_schedule(
        instance,
        data,
        strategy=data.kind,
        status=SolveStatus.FEASIBLE,
        ev_kw=ev_kw,
        st_kw=st_kw,
        assign=assign_out,
        objective_value=reported_objective(data.kind, float(pyo.value(fixed.cost))),
        message=f"MILP stopped ({milp_result.termination}) without a solution; LP relaxation + rounding used",
        solve_s=milp_result.seconds + time.perf_counter() - t0,
    )
