"""Solver trouble is a status with a safe schedule, never an exception; stable re-solves."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.cases.seed001 import fleet
from optimizer.cases.seed003 import company_fleet
from optimizer.evaluate import check_schedule
from optimizer.model.data import build_data
from optimizer.model.pyomo_model import SolveResult
from optimizer.model.pyomo_solve import solve_by_rounding
from optimizer.problem import SolveStatus
from optimizer.solve import solve
from tests.optimizer.conftest import charger, ev, make_instance


def test_infeasible_hard_need_falls_back() -> None:
    """A need no schedule can meet: status fallback, reason given, baseline schedule within limits."""
    inst = make_instance(
        steps=1,
        site={"import_limit_kw": 5},
        chargers=[charger("c_a")],
        evs=[ev("a", departure=1, energy_kwh=20)],
    )
    for backend in ("auto", "pyomo"):
        s = solve(inst, "cost", backend=backend)
        assert s.status == SolveStatus.FALLBACK
        assert "no solution" in s.message and "edf" in s.message
        assert check_schedule(inst, s) == []
        assert s.ev_power_kw["a"] == [5.0]


def test_time_limit_never_raises() -> None:
    """A time limit too short to finish the MILP still returns a feasible schedule and says why."""
    inst = company_fleet(step_minutes=15)
    s = solve(inst, "cost", time_limit_s=0.01)
    assert s.status in (SolveStatus.FEASIBLE, SolveStatus.FALLBACK, SolveStatus.OPTIMAL)
    if s.status != SolveStatus.OPTIMAL:
        assert s.message
    assert check_schedule(inst, s) == []


def test_relaxation_and_rounding_is_feasible_and_close() -> None:
    """The MILP fallback (LP relaxation + rounding) gives a feasible schedule near the optimum."""
    inst = company_fleet()
    data = build_data(inst)
    rounded = solve_by_rounding(inst, data, SolveResult("time_limit", False, False, None, None, 0.0))
    assert rounded is not None and rounded.status == SolveStatus.FEASIBLE
    assert check_schedule(inst, rounded) == []
    best = solve(inst)
    assert best.metrics.total_cost <= rounded.metrics.total_cost <= 1.05 * best.metrics.total_cost


def test_resolve_is_deterministic_and_stable() -> None:
    """Same input, same schedule; one EV's change barely moves the others (interior-point centre)."""
    inst = fleet(200, seed=7)
    a, b = solve(inst), solve(inst)
    assert a.ev_power_kw == b.ev_power_kw
    evs = list(inst.evs)
    evs[3] = evs[3].model_copy(update={"energy_kwh": evs[3].energy_kwh + 1.0})
    c = solve(inst.model_copy(update={"evs": evs}))
    others = [e.id for i, e in enumerate(inst.evs) if i != 3]
    diff = np.array([np.subtract(a.ev_power_kw[i], c.ev_power_kw[i]) for i in others])
    assert np.abs(diff).mean() < 0.05  # kW, mean over other EVs and steps


def test_fallback_message_says_what_to_fix() -> None:
    """An impossible need and an overloaded step are named in the fallback message."""
    inst = make_instance(
        site={"import_limit_kw": 5, "base_load_kw": [1, 7]},
        chargers=[charger("c_a")],
        evs=[ev("a", departure=2, energy_kwh=30)],
    )
    s = solve(inst, "cost")
    assert s.status == SolveStatus.FALLBACK
    assert "ev a: needs 30 kWh but can take at most 20 kWh" in s.message
    assert "step 1: base load 7 kW" in s.message
    assert check_schedule(inst, s) == [f"step 1: import {7.0:.3f} kW > limit {5.0:.3f} kW"]


def test_solver_exception_becomes_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error inside the model code is reported in the schedule, not raised."""
    import optimizer.model.highs_solve as highs_solve

    def broken(*_args: object, **_kw: object) -> None:
        raise RuntimeError("HiGHS exploded")

    monkeypatch.setattr(highs_solve, "build_lp", broken)
    inst = make_instance(chargers=[charger("c_a")], evs=[ev("a", energy_kwh=5)])
    s = solve(inst, "cost")
    assert s.status == SolveStatus.FALLBACK
    assert "solver error: RuntimeError: HiGHS exploded" in s.message
    assert check_schedule(inst, s) == [] and s.metrics.unmet_kwh == 0


def test_storage_discharge_never_leaves_a_trace_of_export() -> None:
    """Regression (found by Hypothesis): BESS discharge 1e-12 kW over a zero export limit."""
    from optimizer.problem import Instance

    inst = Instance.model_validate({
        "start": "2026-01-01T00:00:00Z", "step_minutes": 15, "steps": 8,
        "site": {"import_limit_kw": 5.0, "export_limit_kw": 0.0,
                 "base_load_kw": [0, 0, 1, 0, 0, 1, 0, 0]},
        "tariff": {"import_price": [0.5, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]},
        "chargers": [{"id": "c0", "max_kw": 3.7}],
        "evs": [{"id": f"e{i}", "charger": None, "arrival": 0, "departure": 1, "energy_kwh": 0.0,
                 "max_kw": 3.7, "capacity_kwh": 20.0, "initial_kwh": 0.0} for i in (0, 1, 3, 4)]
        + [{"id": "e2", "charger": None, "arrival": 2, "departure": 7, "energy_kwh": 3.0,
            "max_kw": 3.7, "capacity_kwh": 20.0, "initial_kwh": 0.0}],
        "storage": [{"id": "b", "capacity_kwh": 10.0, "initial_kwh": 0.0, "max_charge_kw": 5.0,
                     "max_discharge_kw": 5.0, "efficiency": 0.9}],
    })
    sched = solve(inst, "cost", time_limit_s=10)
    assert check_schedule(inst, sched, tol_kw=1e-9) == []
