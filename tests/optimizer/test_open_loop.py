"""Seed 003's uncertainty scenario: a day-ahead plan executed on realisations of the forecast."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.cases.seed003 import company_fleet
from optimizer.open_loop import ForecastErrors, execute, realise
from optimizer.solve import solve


def test_plan_on_its_own_forecast_is_unchanged_and_errors_cost_compliance() -> None:
    """With zero forecast error the executed plan is the plan; with errors its SOC compliance drops."""
    inst = company_fleet(step_minutes=60)
    plan = solve(inst)
    same = execute(plan, realise(inst, ForecastErrors(0, 0, 0, 0), np.random.default_rng(0)))
    assert same.metrics.energy_cost == pytest.approx(plan.metrics.energy_cost, abs=1e-3)
    assert same.metrics.soc_compliance == plan.metrics.soc_compliance
    rng = np.random.default_rng(1)
    noisy = [execute(plan, realise(inst, ForecastErrors(), rng)).metrics for _ in range(5)]
    assert np.mean([m.soc_compliance for m in noisy]) < (plan.metrics.soc_compliance or 0.0)
    for m in noisy:
        assert m.peak_grid_kw <= 300.0 + 1e-6  # the site limit holds on every realisation
