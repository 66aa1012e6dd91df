"""The lean LP's site rows: one-sided in large LPs where the lower bound cannot bind, same optimum.

`add_lean_site_rows` leaves out −base ≤ Σ p (redundant when every term is ≥ 0 and base ≥ 0) above
`ONE_SIDED_SITE_ROWS_COLUMNS`; here the threshold is lowered so that a small fleet takes that path.
"""

from __future__ import annotations

import numpy as np
import pytest

import optimizer.model.highs_lp as highs_lp
from optimizer.cases.seed001 import fleet
from optimizer.model.data import FloatArray, build_data
from optimizer.model.highs_lp import INF, build_lp
from optimizer.problem import Instance, SolveStatus
from optimizer.solve import solve
from tests.optimizer.conftest import charger, ev, make_instance


def _site_row_lower(inst: Instance) -> FloatArray:
    lp = build_lp(build_data(inst))
    return np.asarray(lp.row_lo[0])  # the site rows are the first row block of the lean LP


def _plain_fleet(n: int) -> Instance:
    """The seed 001 fleet without the peak term (tie_break 0): the LP whose site rows these tests read."""
    inst = fleet(n)
    return inst.model_copy(update={"objective": inst.objective.model_copy(update={"tie_break": 0.0})})


def test_one_sided_site_rows_keep_the_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    inst = _plain_fleet(20)
    ranged = solve(inst, "cost")
    assert (_site_row_lower(inst) > -INF).all()
    monkeypatch.setattr(highs_lp, "ONE_SIDED_SITE_ROWS_COLUMNS", 0)
    assert (_site_row_lower(inst) == -INF).all()
    one_sided = solve(inst, "cost")
    assert ranged.status == one_sided.status == SolveStatus.OPTIMAL
    assert one_sided.objective_value == pytest.approx(ranged.objective_value, rel=1e-8)
    assert one_sided.metrics.unmet_kwh == 0.0


def test_site_rows_stay_ranged_where_the_lower_bound_can_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(highs_lp, "ONE_SIDED_SITE_ROWS_COLUMNS", 0)
    v2g = make_instance(chargers=[charger("c", bidirectional=True)],
                        evs=[ev("a", charger="c", v2g=True, energy_kwh=2.0)])
    assert (_site_row_lower(v2g) > -INF).all()
