"""Optimal objective values on small instances solved by hand, for both model backends."""

from __future__ import annotations

import pytest

from optimizer.evaluate import check_schedule
from optimizer.problem import SolveStatus
from optimizer.solve import solve
from tests.optimizer.conftest import charger, ev, make_instance

BACKENDS = ["auto", "pyomo"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_cheapest_steps_under_site_limit(backend: str) -> None:
    """a: 10 kWh over 4 steps, b: 5 kWh in steps 1-2, limit 10 kW, prices .3/.1/.2/.1 -> all 15 kWh at 0.1."""
    inst = make_instance(
        steps=4,
        site={"import_limit_kw": 10},
        tariff={"import_price": [0.3, 0.1, 0.2, 0.1]},
        chargers=[charger("c_a", 7), charger("c_b", 7)],
        evs=[
            ev("a", departure=4, energy_kwh=10, max_kw=7),
            ev("b", arrival=1, departure=3, energy_kwh=5, max_kw=7),
        ],
    )
    s = solve(inst, "cost", backend=backend)
    assert s.status == SolveStatus.OPTIMAL
    assert s.objective_value == pytest.approx(1.5, abs=1e-6)
    assert s.ev_power_kw["b"][1] == pytest.approx(5.0, abs=1e-5)
    assert sum(s.ev_power_kw["a"][i] for i in (1, 3)) == pytest.approx(10.0, abs=1e-5)
    assert check_schedule(inst, s) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_demand_charge_spreads_load(backend: str) -> None:
    """10 kWh in 2 equal-price steps with 1/kW demand charge: 5 + 5 kW, cost 1.0 + 5.0."""
    inst = make_instance(
        tariff={"import_price": 0.1, "peak_price_per_kw": 1.0},
        chargers=[charger("c_a")],
        evs=[ev("a", energy_kwh=10)],
    )
    s = solve(inst, "cost", backend=backend)
    assert s.objective_value == pytest.approx(6.0, abs=1e-5)
    assert s.metrics.peak_grid_kw == pytest.approx(5.0, abs=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_storage_arbitrage_with_losses(backend: str) -> None:
    """BESS buys 10 kWh at 0.1, stores 9 (eta .9), sells 8.1 at 0.3: cost 1.0 - 2.43 = -1.43."""
    inst = make_instance(
        site={"import_limit_kw": 10, "export_limit_kw": 10},
        tariff={"import_price": [0.1, 0.3], "export_price": [0.1, 0.3]},
        storage=[
            {
                "id": "bess",
                "capacity_kwh": 20,
                "initial_kwh": 0,
                "max_charge_kw": 10,
                "max_discharge_kw": 10,
                "efficiency": 0.9,
                "final_kwh": 0,
            }
        ],
    )
    s = solve(inst, "cost", backend=backend)
    assert s.objective_value == pytest.approx(-1.43, abs=1e-5)
    assert s.storage_power_kw["bess"] == pytest.approx([10.0, -8.1], abs=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_v2g_profit_with_degradation(backend: str) -> None:
    """Sell 10 kWh at 0.5 (wear 0.05/kWh), rebuy 10 at 0.1: profit 5 - 0.5 - 1 = 3.5."""
    inst = make_instance(
        steps=3,
        site={"import_limit_kw": 20, "export_limit_kw": 10},
        tariff={"import_price": [0.1, 0.5, 0.1], "export_price": [0.1, 0.5, 0.1]},
        chargers=[charger("c_a", 10, bidirectional=True)],
        evs=[ev("a", departure=3, initial_kwh=20, min_kwh=10, capacity_kwh=40, v2g=True)],
        objective={"kind": "profit", "degradation_per_kwh": 0.05},
    )
    s = solve(inst, "profit", backend=backend)
    assert s.objective_value == pytest.approx(3.5, abs=1e-5)
    assert s.ev_power_kw["a"][1] == pytest.approx(-10.0, abs=1e-4)
    assert s.ev_final_kwh["a"] >= 20.0 - 1e-4
    assert check_schedule(inst, s) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_needs_serve_higher_priority(backend: str) -> None:
    """5 kW for one step, two EVs need 5 kWh (priority 1 and 3), penalty 1/kWh: serve 'hi', cost .5 + 5."""
    inst = make_instance(
        steps=1,
        site={"import_limit_kw": 5},
        chargers=[charger("c_lo"), charger("c_hi")],
        evs=[ev("lo", departure=1, energy_kwh=5), ev("hi", departure=1, energy_kwh=5, priority=3)],
        objective={"unmet_penalty_per_kwh": 1.0},
    )
    s = solve(inst, "cost", backend=backend)
    assert s.objective_value == pytest.approx(5.5, abs=1e-5)
    assert s.ev_unmet_kwh == pytest.approx({"lo": 5.0, "hi": 0.0}, abs=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_free_pv_is_used_first(backend: str) -> None:
    """5 kW of PV in step 0 covers the 5 kWh need: cost 0, self-consumption 100 %."""
    inst = make_instance(
        site={"import_limit_kw": 10, "pv_kw": [5, 0]},
        tariff={"import_price": 0.2},
        chargers=[charger("c_a")],
        evs=[ev("a", energy_kwh=5)],
    )
    s = solve(inst, "cost", backend=backend)
    assert s.objective_value == pytest.approx(0.0, abs=1e-6)
    assert s.metrics.pv_self_consumption == pytest.approx(1.0)


def test_charger_assignment_milp() -> None:
    """Two EVs, one 10 kW charger, prices .1/.2: one EV per step, cost 1 + 2 = 3."""
    inst = make_instance(
        tariff={"import_price": [0.1, 0.2]},
        chargers=[charger("only")],
        evs=[ev("a", charger=None, energy_kwh=10), ev("b", charger=None, energy_kwh=10)],
    )
    s = solve(inst, "cost")
    assert s.status == SolveStatus.OPTIMAL
    assert s.objective_value == pytest.approx(3.0, abs=1e-6)
    assert {s.assignment["a"][0], s.assignment["b"][0]} == {"only", None}
    assert check_schedule(inst, s) == []


def test_service_time_smallest_first() -> None:
    """1 kW source, needs 1 and 2 kWh: smallest first finishes at 1 h and 3 h (4 h); sharing gives 5 h."""
    inst = make_instance(
        steps=4,
        site={"import_limit_kw": 1},
        chargers=[charger("c_small"), charger("c_big")],
        evs=[ev("big", departure=4, energy_kwh=2), ev("small", departure=4, energy_kwh=1)],
        objective={"kind": "service_time"},
    )
    s = solve(inst)
    assert s.status == SolveStatus.OPTIMAL
    assert s.objective_value == pytest.approx(4.0, abs=1e-6)
    assert s.ev_power_kw["small"][0] == pytest.approx(1.0, abs=1e-5)
    assert solve(inst, "equal_share").metrics.service_time_h == pytest.approx(5.0, abs=1e-6)


def test_class_and_per_charger_assignment_agree() -> None:
    """Charger classes (the production model) and seed 003's per-charger binaries find the same optimum."""
    from optimizer.model.data import build_data
    from optimizer.model.pyomo_model import assign_solution, build_model, solve_model

    inst = make_instance(
        steps=3,
        site={"import_limit_kw": 25},
        tariff={"import_price": [0.3, 0.1, 0.2]},
        chargers=[charger("x", 11), charger("y", 11), charger("z", 7.4)],
        evs=[ev(f"e{i}", charger=None, departure=3, energy_kwh=8 + 3 * i, max_kw=11) for i in range(5)],
        objective={"unmet_penalty_per_kwh": 1.0},
    )
    data = build_data(inst)
    costs = []
    for per_charger in (False, True):
        m = build_model(data, per_charger=per_charger)
        res = solve_model(m, mip_rel_gap=1e-9)
        assert res.optimal
        ev_kw, _, assign = assign_solution(m, data)
        for t in range(3):
            used = assign[:, t][assign[:, t] >= 0]
            assert len(used) == len(set(used.tolist()))
        costs.append(res.objective)
    assert costs[0] == pytest.approx(costs[1], rel=1e-7)
