"""Solving the HiGHS LP of `optimizer.model.highs_lp`: pass the arrays, run, read the columns back.

Stages: `solve_lp_model(lp)` (passModel + run; infeasible or time-limited is a value, never an
exception), `assign_lp_solution` (column values -> (E,T) arrays), `lp_cost`, and `solve_lp`, which
builds, solves and reports one schedule.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import highspy
import numpy as np
import numpy.typing as npt

from optimizer.evaluate import make_schedule
from optimizer.model.data import FloatArray, IntArray, ProblemData
from optimizer.model.highs_lp import (
    INF,
    IPM_OPTIMALITY_TOLERANCE,
    LARGE_LP_COLUMNS,
    STICKY_IPM_OPTIMALITY_TOLERANCE,
    LinearProgram,
    build_lp,
    p_values,
)
from optimizer.problem import Instance, Schedule, SolveStatus

Int32Array = npt.NDArray[np.int32]


@dataclass(frozen=True)
class LpResult:
    """Outcome of an LP solve: status name, whether values exist, objective, column values, timings."""

    status: str
    optimal: bool
    has_solution: bool
    objective: float | None
    x: FloatArray
    translate_s: float
    solve_s: float
    solve_cpu_s: float
    """CPU time of this process during the solve (less sensitive than wall time to other load)."""


def csc_arrays(lp: LinearProgram) -> tuple[Int32Array, Int32Array, FloatArray]:
    """The COO entries as CSC (column starts, row indices, values; int32 where HiGHS wants it).

    Within a column the entries are sorted by row, as HiGHS's own rowwise -> colwise transpose
    leaves them (the interior point then sees the same matrix, to the bit, as from a rowwise pass).
    One sort on a single int64 key (unique per entry), stable: the blocks arrive as long sorted runs,
    which the stable sort merges (10,000 EVs, 1M entries: 2 ms against 17 ms unstable, 25 ms lexsort).
    """
    if not lp.rows:
        return np.zeros(lp.n_col + 1, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0)
    rows = np.concatenate(lp.rows)
    cols = np.concatenate(lp.cols)
    vals: FloatArray = np.concatenate(lp.vals)
    order = np.argsort(cols * max(lp.n_row, 1) + rows, kind="stable")
    start = np.zeros(lp.n_col + 1, dtype=np.int32)
    np.cumsum(np.bincount(cols, minlength=lp.n_col), out=start[1:])
    return start, rows[order].astype(np.int32), np.ascontiguousarray(vals[order], dtype=float)


REUSED_HIGHS_MAX_COLUMNS = LARGE_LP_COLUMNS
"""LPs up to this many columns are solved on one HiGHS instance per thread (`_reused_highs`): creating a
`highspy.Highs` costs about 0.1 ms, a few percent of a 20-EV solve; larger LPs get a fresh one, so that
no large model stays in memory between solves."""
_THREAD_HIGHS = threading.local()


def _lp_highs() -> highspy.Highs:
    """A new HiGHS instance with the options every LP solve shares (quiet, one thread, interior point)."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    # interior point without crossover: fastest here at every size measured (benchmarks/optimizer_scaling.py)
    # and its solution lies in the middle of the optimal face, so equal-cost optima come out flat and stable
    # (lowest peak among them, within a few percent, tests/optimizer/test_ties.py).
    h.setOptionValue("solver", "ipm")
    # no presolve: it reduces equal-cost optima to a vertex (all of an EV's energy in its last cheap step,
    # the peak several-fold the flat schedule) and on these LPs it costs more than it saves (1,000 EVs:
    # 0.16 s CPU without, 0.25 s with; 10,000 EVs: 2.2 s vs 3.6 s, benchmarks/optimizer_scaling.py)
    h.setOptionValue("presolve", "off")
    return h


def _reused_highs() -> highspy.Highs:
    """This thread's HiGHS instance for small LPs (passModel replaces its model and clears the solution)."""
    h: highspy.Highs | None = getattr(_THREAD_HIGHS, "highs", None)
    if h is None:
        h = _lp_highs()
        _THREAD_HIGHS.highs = h
    return h


def solve_lp_model(lp: LinearProgram, time_limit_s: float | None = None) -> LpResult:
    """Pass the arrays to HiGHS (column-wise) and solve; never raises for infeasible or time-limited LPs."""
    t0 = time.perf_counter()
    start, index, vals = csc_arrays(lp)
    h = _reused_highs() if lp.n_col <= REUSED_HIGHS_MAX_COLUMNS else _lp_highs()
    # set on every solve (a reused instance keeps what the last solve left): no crossover, unless the
    # solve below needs it
    h.setOptionValue("run_crossover", "off")
    # small LPs with references or a peak tie-break: the tighter tolerance (equal-cost plans come back
    # within 1e-4 kW, and energies within 1e-6 kWh, tests/optimizer/test_horizon_now.py)
    sticky_small = (lp.p_ref is not None or "peak" in lp.blocks) and lp.n_col <= LARGE_LP_COLUMNS
    h.setOptionValue("ipm_optimality_tolerance",
                     STICKY_IPM_OPTIMALITY_TOLERANCE if sticky_small else IPM_OPTIMALITY_TOLERANCE)
    # HiGHS's run clock adds up over an instance's runs (no call resets it): the limit is from now on
    h.setOptionValue("time_limit", INF if time_limit_s is None else h.getRunTime() + float(time_limit_s))

    def flat(parts: list[FloatArray]) -> FloatArray:
        return np.ascontiguousarray(np.concatenate(parts), dtype=float)

    passed = h.passModel(
        lp.n_col,
        lp.n_row,
        len(vals),
        1,  # MatrixFormat.kColwise: HiGHS's own storage (a rowwise matrix is transposed in passModel)
        1,  # ObjSense.kMinimize
        lp.cost_offset,
        flat(lp.cost),
        flat(lp.col_lo),
        flat(lp.col_hi),
        flat(lp.row_lo),
        flat(lp.row_hi),
        start,
        index,
        vals,
        np.zeros(lp.n_col, dtype=np.int32),
    )
    if passed == highspy.HighsStatus.kError:
        raise RuntimeError("HiGHS rejected the LP arrays (passModel)")
    t1 = time.perf_counter()
    c1 = time.process_time()
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kUnknown:
        # IPX without crossover could not certify the solution (seen on small, degenerate LPs): finish with
        # crossover, which ends at an optimal vertex
        h.setOptionValue("run_crossover", "on")
        h.run()
        status = h.getModelStatus()
    sol = h.getSolution()
    has = bool(sol.value_valid)
    x = np.asarray(sol.col_value, dtype=float) if has else np.zeros(lp.n_col)
    t2 = time.perf_counter()
    cpu = time.process_time() - c1
    return LpResult(
        status=h.modelStatusToString(status),
        optimal=status == highspy.HighsModelStatus.kOptimal,
        has_solution=has and status == highspy.HighsModelStatus.kOptimal,
        objective=float(h.getObjectiveValue()) if has else None,
        x=x,
        translate_s=t1 - t0,
        solve_s=t2 - t1,
        solve_cpu_s=cpu,
    )


def assign_lp_solution(
    lp: LinearProgram, data: ProblemData, x: FloatArray
) -> tuple[FloatArray, FloatArray, IntArray]:
    """(ev_kw net of V2G, storage_kw, assignment) from the LP's column values."""
    ev_kw = np.zeros((data.n_ev, data.steps))
    pe, pt = data.charge_cells
    ev_kw[pe, pt] = p_values(lp, x)
    de, dtt = data.discharge_cells
    ev_kw[de, dtt] -= x[lp.block("d")]
    st_kw = np.zeros((data.n_storage, data.steps))
    if data.n_storage:
        st_kw = (x[lp.block("bch")] - x[lp.block("bdis")]).reshape(data.n_storage, data.steps)
    assign = np.where(data.available, data.ev_charger[:, None], -1).astype(np.int64)
    return ev_kw, st_kw, assign


def lp_cost(lp: LinearProgram, data: ProblemData, x: FloatArray) -> float:
    """The cost objective without the tie-break terms."""
    dt = data.step_h
    _, dtt = data.discharge_cells
    if "imp" in lp.blocks:
        cost = float((dt * data.import_price) @ x[lp.block("imp")])
        cost -= float((dt * data.export_price) @ x[lp.block("exp")])
        cost += data.peak_price_per_kw * float(x[lp.block("peak")][0])
    else:  # lean LP: import = base + net EV and storage power
        _, pt = data.charge_cells
        net = data.base_load_kw + np.bincount(pt, p_values(lp, x), data.steps)
        net -= np.bincount(dtt, x[lp.block("d")], data.steps)
        if data.n_storage:
            net += (x[lp.block("bch")] - x[lp.block("bdis")]).reshape(data.n_storage, data.steps).sum(axis=0)
        cost = float((dt * data.import_price) @ net)
        if "peak" in lp.blocks:  # the peak in the site rows (`add_lean_peak_rows`)
            cost += data.peak_price_per_kw * float(x[lp.block("peak")][0])
    cost += data.degradation_per_kwh * float(dt[dtt] @ x[lp.block("d")])
    if "unmet" in lp.blocks:
        assert data.unmet_penalty_per_kwh is not None
        cost += float(data.unmet_penalty_per_kwh * (data.priority @ x[lp.block("unmet")]))
    return cost


def solve_lp(
    instance: Instance, data: ProblemData, time_limit_s: float | None, prep_s: float = 0.0
) -> Schedule:
    """Build, solve, read back; falls back to a baseline when HiGHS has no solution."""
    from optimizer.solve import fallback_schedule, reported_objective

    t0 = time.perf_counter()
    lp = build_lp(data)
    build_s = prep_s + time.perf_counter() - t0
    res = solve_lp_model(lp, time_limit_s)
    if not res.has_solution:
        return fallback_schedule(instance, f"HiGHS found no solution ({res.status})")
    t1 = time.perf_counter()
    ev_kw, st_kw, assign = assign_lp_solution(lp, data, res.x)
    extract_s = time.perf_counter() - t1
    return make_schedule(
        instance,
        data,
        strategy=data.kind,
        status=SolveStatus.OPTIMAL if res.optimal else SolveStatus.FEASIBLE,
        message="" if res.optimal else f"HiGHS stopped ({res.status})",
        ev_kw=ev_kw,
        st_kw=st_kw,
        assign=assign,
        objective_value=reported_objective(data.kind, lp_cost(lp, data, res.x)),
        build_s=build_s,
        solve_s=res.translate_s + res.solve_s + extract_s,
    )
