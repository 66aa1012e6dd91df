"""The small LPs' solve method: no costlier and no higher peak than the fastest highspy method, and stable.

Below ~100 EVs HiGHS's dual simplex without presolve solves the fleet LP faster than the interior point
(20 EVs: about 2 ms against 3.3 ms, benchmarks/optimizer_scaling.py `hs splx-np`). It returns a vertex
of the equal-cost face: the same cost and, with the default peak tie-break, the same lowest peak, but a
from-scratch re-plan after one EV's change jumps to another vertex (most EVs move by their full power).
These tests pin what any method `solve_lp_model` chooses must keep: the vertex's cost and peak at most,
and an offline re-plan that moves the other EVs little (the interior point's central solution does).
"""

from __future__ import annotations

import highspy
import numpy as np
import pytest

from optimizer.cases.seed001 import fleet
from optimizer.model.data import build_data
from optimizer.model.highs_lp import build_lp, p_values
from optimizer.model.highs_solve import csc_arrays, lp_cost
from optimizer.problem import Instance
from optimizer.solve import solve
from tests.optimizer.test_offline_ties import _flat_hard_site

K16_KW = 0.5
"""The csms's default re-send threshold."""


def _vertex(inst: Instance) -> tuple[float, float]:
    """Cost and site peak [kW] of the same LP by dual simplex without presolve (fastest at 20 EVs)."""
    data = build_data(inst)
    lp = build_lp(data)
    start, index, vals = csc_arrays(lp)
    h = highspy.Highs()
    for name, value in (("output_flag", False), ("threads", 1), ("solver", "simplex"), ("presolve", "off")):
        h.setOptionValue(name, value)
    cost, lo, hi, row_lo, row_hi = (np.concatenate(x).astype(float)
                                    for x in (lp.cost, lp.col_lo, lp.col_hi, lp.row_lo, lp.row_hi))
    h.passModel(lp.n_col, lp.n_row, len(vals), 1, 1, lp.cost_offset, cost, lo, hi, row_lo, row_hi, start,
                index, vals, np.zeros(lp.n_col, dtype=np.int32))
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    x = np.asarray(h.getSolution().col_value)
    grid = data.base_load_kw + np.bincount(data.charge_cells[1], p_values(lp, x), data.steps)
    return lp_cost(lp, data, x), float(grid.max())


def _cases() -> list[tuple[str, Instance]]:
    return [("fleet5", fleet(5)), ("fleet20", fleet(20)), ("fleet20-seed11", fleet(20, seed=11)),
            ("fleet100", fleet(100)), ("flat-hard20", _flat_hard_site(20)[0])]


@pytest.mark.parametrize("inst", [c[1] for c in _cases()], ids=[c[0] for c in _cases()])
def test_no_costlier_and_no_higher_peak_than_the_simplex_vertex(inst: Instance) -> None:
    s = solve(inst, "cost")
    cost, peak_kw = _vertex(inst)
    assert s.objective_value is not None
    assert s.objective_value <= cost + 1e-7 * max(abs(cost), 1.0)
    assert s.metrics.peak_grid_kw <= peak_kw + 1e-3


def _moves(inst: Instance, k: int) -> np.ndarray:
    """|Δ power| [kW] of every EV but k when EV k needs 1 kWh more, both plans from scratch."""
    evs = list(inst.evs)
    evs[k] = evs[k].model_copy(update={"energy_kwh": evs[k].energy_kwh + 1.0})
    a, b = solve(inst, "cost"), solve(inst.model_copy(update={"evs": evs}), "cost")
    others = [e.id for i, e in enumerate(inst.evs) if i != k]
    return np.abs(np.array([np.subtract(a.ev_power_kw[i], b.ev_power_kw[i]) for i in others]))


@pytest.mark.parametrize("seed", [1, 7, 11])
def test_an_offline_replan_of_20_evs_moves_the_others_little(seed: int) -> None:
    """As tests/optimizer/test_fallback.py's 200-EV test, at the size where a vertex method is fastest: the
    central solution moves 0-9 of 19 EVs by more than 0.5 kW, mean 0.000-0.017 kW; dual simplex 16-19 of
    19, mean 0.09-0.27 kW (each EV by up to its 11 kW)."""
    moved = _moves(fleet(20, seed=seed), 3)
    assert moved.mean() < 0.05
    assert (moved.max(axis=1) > K16_KW).sum() <= 10
