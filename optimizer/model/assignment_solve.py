"""Solve the strong assignment MILP: LP relaxation, rounding, warm start, time budget, proven gap.

Stages (each a function): `relax_and_round` solves the LP relaxation of
`optimizer.model.assignment.build_assignment_milp`, rounds the fractional assignment per step
(largest x first, within each class's free chargers) and re-solves the LP with the assignment fixed,
which is a feasible schedule in milliseconds; `solve_milp` hands that schedule to HiGHS as its first
incumbent and runs branch and cut within the time budget; `solve_assignment` turns the best schedule
found into a `Schedule` whose `mip_gap` is the gap HiGHS proved (status `optimal` when it closed it to
`mip_rel_gap`). It never raises for a time limit: the warm start is always a feasible answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np

from optimizer.evaluate import make_schedule
from optimizer.model.assignment import AssignmentMilp, build_assignment_milp
from optimizer.model.data import FloatArray, IntArray, ProblemData
from optimizer.model.highs_lp import LinearProgram
from optimizer.model.highs_solve import assign_lp_solution, lp_cost
from optimizer.model.pyomo_model import class_free_count, classes_to_chargers
from optimizer.problem import Instance, Schedule, SolveStatus

DEFAULT_TIME_LIMIT_S = 10.0
"""Budget of one MILP solve when the caller gives none."""


def highs_model(lp: LinearProgram, integrality: np.ndarray | None) -> highspy.Highs:
    """A quiet single-threaded HiGHS instance holding `lp` (rowwise), integral columns as given."""
    rows = np.concatenate(lp.rows) if lp.rows else np.zeros(0, dtype=np.int64)
    cols = np.concatenate(lp.cols) if lp.cols else np.zeros(0, dtype=np.int64)
    vals = np.concatenate(lp.vals) if lp.vals else np.zeros(0)
    order = np.lexsort((cols, rows))
    start = np.zeros(lp.n_row + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=lp.n_row), out=start[1:])
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)

    def flat(parts: list[FloatArray]) -> FloatArray:
        return np.ascontiguousarray(np.concatenate(parts), dtype=float)

    status = h.passModel(
        lp.n_col, lp.n_row, len(vals), 2, 1, lp.cost_offset,
        flat(lp.cost), flat(lp.col_lo), flat(lp.col_hi), flat(lp.row_lo), flat(lp.row_hi),
        start, cols[order].astype(np.int32), vals[order],
        np.zeros(lp.n_col, dtype=np.int32) if integrality is None else integrality.astype(np.int32),
    )
    if status == highspy.HighsStatus.kError:
        raise RuntimeError("HiGHS rejected the MILP arrays (passModel)")
    return h


@dataclass(frozen=True)
class WarmStart:
    """LP relaxation bound and the rounded, feasible schedule (column values and objective)."""

    lp_bound: float | None
    x: FloatArray | None
    objective: float | None
    seconds: float


def round_classes(milp: AssignmentMilp, data: ProblemData, x_value: FloatArray) -> IntArray:
    """(E,T) class per EV and step (−1 none): per step, largest fractional x first, within n_k(t)."""
    free = class_free_count(data)
    cls = np.full((data.n_ev, data.steps), -1, dtype=np.int64)
    left = free.copy()
    order = np.lexsort((milp.xk, milp.xe, -x_value))
    for i in order.tolist():
        if x_value[i] <= 1e-6:
            break
        e, k, t = int(milp.xe[i]), int(milp.xk[i]), int(milp.xt[i])
        if cls[e, t] < 0 and left[k, t] > 0:
            cls[e, t] = k
            left[k, t] -= 1
    return cls


def relax_and_round(milp: AssignmentMilp, data: ProblemData, time_limit_s: float) -> WarmStart:
    """LP relaxation (dual simplex), greedy rounding, LP with the rounded assignment fixed."""
    t0 = time.perf_counter()
    h = highs_model(milp.lp, None)
    h.setOptionValue("time_limit", max(time_limit_s, 0.01))
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return WarmStart(None, None, None, time.perf_counter() - t0)
    bound = float(h.getInfo().objective_function_value)
    x = np.asarray(h.getSolution().col_value, dtype=float)
    cls = round_classes(milp, data, x[milp.x_cols])
    fixed = (cls[milp.xe, milp.xt] == milp.xk).astype(float)
    idx = milp.x_cols.astype(np.int32)
    h.changeColsBounds(len(idx), idx, fixed, fixed)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return WarmStart(bound, None, None, time.perf_counter() - t0)
    x = np.asarray(h.getSolution().col_value, dtype=float)
    x[milp.x_cols] = fixed
    return WarmStart(bound, x, float(h.getInfo().objective_function_value), time.perf_counter() - t0)


@dataclass(frozen=True)
class MilpOutcome:
    """Best schedule found (column values), its objective, the proven bound and gap, how it ended."""

    x: FloatArray | None
    objective: float | None
    bound: float | None
    gap: float | None
    optimal: bool
    status: str
    warm: WarmStart
    seconds: float


def solve_milp(
    milp: AssignmentMilp,
    data: ProblemData,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    mip_rel_gap: float = 1e-4,
    mip_abs_gap: float | None = None,
    warm_start: bool = True,
) -> MilpOutcome:
    """Relax-and-round warm start, then HiGHS branch and cut within what is left of `time_limit_s`."""
    t0 = time.perf_counter()
    # the warm start runs to completion even under a tiny budget: it is the feasible answer of last resort
    warm = WarmStart(None, None, None, 0.0)
    if warm_start:
        warm = relax_and_round(milp, data, max(time_limit_s, 2.0))
    h = highs_model(milp.lp, milp.integrality())
    h.setOptionValue("time_limit", max(time_limit_s - (time.perf_counter() - t0), 0.01))
    h.setOptionValue("mip_rel_gap", mip_rel_gap)
    if mip_abs_gap is not None:
        h.setOptionValue("mip_abs_gap", mip_abs_gap)
    if warm.x is not None:
        h.setSolution(_solution(warm.x))
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    sol = h.getSolution()
    has = bool(sol.value_valid) and info.primal_solution_status >= 2
    x = np.asarray(sol.col_value, dtype=float) if has else warm.x
    objective = float(info.objective_function_value) if has else warm.objective
    # both are proven lower bounds; a solve stopped early may not have reached the root LP's
    bounds = [b for b in (info.mip_dual_bound, warm.lp_bound) if b is not None and np.isfinite(b)]
    bound = max(bounds) if bounds else None
    gap = None
    if objective is not None and bound is not None:
        gap = max(objective - bound, 0.0) / max(abs(objective), 1e-9)
    return MilpOutcome(
        x=x,
        objective=objective,
        bound=bound,
        gap=gap,
        optimal=status == highspy.HighsModelStatus.kOptimal,
        status=h.modelStatusToString(status),
        warm=warm,
        seconds=time.perf_counter() - t0,
    )


def _solution(x: FloatArray) -> highspy.HighsSolution:
    sol = highspy.HighsSolution()
    sol.col_value = x.tolist()
    sol.value_valid = True
    return sol


def milp_arrays(
    milp: AssignmentMilp, data: ProblemData, x: FloatArray
) -> tuple[FloatArray, FloatArray, IntArray]:
    """(ev_kw, storage_kw, assignment to charger ids) from the MILP's column values."""
    ev_kw, st_kw, assign = assign_lp_solution(milp.lp, data, x)
    cls = np.full((data.n_ev, data.steps), -1, dtype=np.int64)
    on = x[milp.x_cols] > 0.5
    cls[milp.xe[on], milp.xt[on]] = milp.xk[on]
    return ev_kw, st_kw, classes_to_chargers(data, cls)


def solve_assignment(
    instance: Instance,
    data: ProblemData,
    time_limit_s: float | None,
    mip_rel_gap: float,
    prep_s: float = 0.0,
) -> Schedule:
    """The strong MILP for cost/profit instances with charger assignment, as a Schedule (never raises
    for time limits; a baseline fallback only if even the LP relaxation has no solution)."""
    from optimizer.solve import fallback_schedule, reported_objective

    t0 = time.perf_counter()
    milp = build_assignment_milp(data)
    build_s = prep_s + time.perf_counter() - t0
    out = solve_milp(milp, data, DEFAULT_TIME_LIMIT_S if time_limit_s is None else time_limit_s, mip_rel_gap)
    if out.x is None:
        return fallback_schedule(instance, f"assignment MILP found no solution ({out.status})")
    ev_kw, st_kw, assign = milp_arrays(milp, data, out.x)
    gap = "-" if out.gap is None else f"{100 * out.gap:.3g} %"
    message = "" if out.optimal else f"HiGHS stopped ({out.status}); best feasible schedule, proven gap {gap}"
    return make_schedule(
        instance,
        data,
        strategy=data.kind,
        status=SolveStatus.OPTIMAL if out.optimal else SolveStatus.FEASIBLE,
        ev_kw=ev_kw,
        st_kw=st_kw,
        assign=assign,
        objective_value=reported_objective(data.kind, lp_cost(milp.lp, data, out.x)),
        mip_gap=out.gap,
        message=message,
        build_s=build_s,
        solve_s=time.perf_counter() - t0 - (build_s - prep_s),
    )
