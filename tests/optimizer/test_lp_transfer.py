"""The LP reaches HiGHS column-wise (`csc_arrays`) as exactly the matrix `build_lp` built.

Fails if an entry is dropped, duplicated or put in the wrong place, or if the colwise pass solves a
different LP (or with a different method) than the row-wise pass the fast path used before.
"""

from __future__ import annotations

import highspy
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from optimizer.cases.seed001 import fleet
from optimizer.model import highs_solve
from optimizer.model.data import build_data
from optimizer.model.highs_lp import IPM_OPTIMALITY_TOLERANCE, LinearProgram, build_lp
from optimizer.model.highs_solve import csc_arrays, solve_lp_model
from optimizer.problem import Instance, SolveStatus
from optimizer.solve import solve
from tests.optimizer.conftest import charger, ev, make_instance
from tests.optimizer.test_random_instances import instances


def _mixed() -> Instance:
    """V2G, a charge-only EV with a reference plan, storage and PV: every row family of `build_lp`."""
    return make_instance(
        steps=4,
        site={"import_limit_kw": 20, "pv_kw": [0, 3, 5, 0], "export_limit_kw": 5},
        tariff={"import_price": [0.3, 0.1, 0.1, 0.4], "export_price": 0.05},
        chargers=[charger("a", bidirectional=True), charger("b")],
        evs=[ev("v", charger="a", v2g=True, initial_kwh=20, energy_kwh=5, departure=4),
             ev("p", charger="b", energy_kwh=8, departure=3, reference_kw=[4, 4, 0, 0])],
        storage=[{"id": "s", "capacity_kwh": 10, "initial_kwh": 5, "max_charge_kw": 3,
                  "max_discharge_kw": 3}],
    )


def _dense_from_coo(lp: LinearProgram) -> np.ndarray:
    a = np.zeros((lp.n_row, lp.n_col))
    np.add.at(a, (np.concatenate(lp.rows), np.concatenate(lp.cols)), np.concatenate(lp.vals))
    return a


@pytest.mark.parametrize("inst", [_mixed(), fleet(20)], ids=["mixed", "fleet20"])
def test_csc_is_the_coo_matrix(inst: Instance) -> None:
    lp = build_lp(build_data(inst))
    start, index, vals = csc_arrays(lp)
    assert start[0] == 0 and start[-1] == len(index) == len(vals) == sum(len(r) for r in lp.rows)
    dense = np.zeros((lp.n_row, lp.n_col))
    for j in range(lp.n_col):
        rows = index[start[j]:start[j + 1]]
        assert (np.diff(rows) > 0).all(), f"column {j}: rows not strictly increasing"
        dense[rows, j] = vals[start[j]:start[j + 1]]
    np.testing.assert_array_equal(dense, _dense_from_coo(lp))


def _rowwise_solution(lp: LinearProgram) -> np.ndarray:
    """The same LP passed row-wise, with the fast path's options (how it was solved before)."""
    rows, cols, vals = (np.concatenate(x) for x in (lp.rows, lp.cols, lp.vals))
    order = np.lexsort((cols, rows))
    start = np.zeros(lp.n_row + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=lp.n_row), out=start[1:])
    h = highspy.Highs()
    for name, value in (("output_flag", False), ("threads", 1), ("solver", "ipm"), ("run_crossover", "off"),
                        ("presolve", "off"), ("ipm_optimality_tolerance", IPM_OPTIMALITY_TOLERANCE)):
        h.setOptionValue(name, value)
    flat = [np.concatenate(x).astype(float) for x in (lp.cost, lp.col_lo, lp.col_hi, lp.row_lo, lp.row_hi)]
    h.passModel(lp.n_col, lp.n_row, len(vals), 2, 1, lp.cost_offset, *flat, start,
                cols[order].astype(np.int32), vals[order], np.zeros(lp.n_col, dtype=np.int32))
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return np.asarray(h.getSolution().col_value)


@pytest.mark.parametrize("n_ev", [20, 100])
def test_colwise_pass_solves_the_same_lp_to_the_same_point(n_ev: int) -> None:
    inst = fleet(n_ev)
    lp = build_lp(build_data(inst))
    res = solve_lp_model(lp)
    assert res.optimal
    # the interior point sees the same matrix: the same central solution (the peak among equal-cost optima)
    np.testing.assert_allclose(res.x, _rowwise_solution(lp), rtol=0, atol=1e-9)
    sched = solve(inst, "cost")
    assert sched.status == SolveStatus.OPTIMAL
    grid = build_data(inst).base_load_kw + np.asarray(list(sched.ev_power_kw.values())).sum(axis=0)
    assert sched.metrics.peak_grid_kw == pytest.approx(grid.max(), abs=1e-6)


def _solve_on_fresh_highs(lp: LinearProgram) -> np.ndarray | None:
    """`solve_lp_model` on a new HiGHS instance (what every solve did before small LPs reused one)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(highs_solve, "REUSED_HIGHS_MAX_COLUMNS", -1)
        res = solve_lp_model(lp)
    return res.x if res.has_solution else None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(instances(allow_pool=False), instances(allow_pool=False))
def test_reused_highs_solves_to_the_same_point_as_a_fresh_one(first: Instance, second: Instance) -> None:
    """Small LPs run on one HiGHS instance per thread: after another LP (and after itself) the result
    is bit for bit the one a fresh instance gives, so the reuse never changes a schedule."""
    lp_first, lp_second = build_lp(build_data(first)), build_lp(build_data(second))
    assert lp_first.n_col <= highs_solve.REUSED_HIGHS_MAX_COLUMNS
    fresh = _solve_on_fresh_highs(lp_second)
    solve_lp_model(lp_first)  # leaves its model, solution and options on the reused instance
    for _ in range(2):
        res = solve_lp_model(lp_second)
        if fresh is None:
            assert not res.has_solution
        else:
            assert res.has_solution
            np.testing.assert_array_equal(res.x, fresh)


def test_time_limit_counts_from_each_solve_on_a_reused_highs() -> None:
    """HiGHS's run clock adds up over an instance's runs: a time limit must count from this solve,
    or a worker's solves would hit it once their total passed it.

    The limit is wall time (HiGHS has no CPU-time limit), so on a loaded machine one 20-EV solve may
    really run past it (1.42 s wall for 0.004 s CPU at load 12-16): that is the limit working. What
    must never happen is a solve stopped by the limit before it ran for the limit itself (HiGHS's own
    clock for this run), and solves after the instance's total passed the limit must still finish."""
    lp = build_lp(build_data(fleet(20)))
    h = highs_solve._reused_highs()
    limit_s = 0.5  # a 20-EV solve takes about 5 ms of CPU
    start = h.getRunTime()
    optimal_after_limit = 0  # optimal solves once this instance's runs added up past the limit
    for _ in range(10_000):  # until this instance has run for several limits in total
        before = h.getRunTime()
        res = solve_lp_model(lp, time_limit_s=limit_s)
        ran_s = h.getRunTime() - before
        if not res.optimal:
            assert res.status == "Time limit reached", res.status
            assert ran_s >= limit_s, f"stopped by the time limit after {ran_s:.3f} s of its own {limit_s} s"
        elif before - start > limit_s:
            optimal_after_limit += 1
        if h.getRunTime() - start > 3 * limit_s and optimal_after_limit >= 10:
            break
    assert h.getRunTime() - start > 3 * limit_s
    assert optimal_after_limit >= 10
