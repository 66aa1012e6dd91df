"""The strong charger-assignment MILP: hand-solved tiny cases, same optimum as the reference model."""

from __future__ import annotations

import pytest

from optimizer.cases.seed003 import company_fleet
from optimizer.evaluate import check_schedule
from optimizer.model.assignment import build_assignment_milp, identical_ev_groups
from optimizer.model.assignment_solve import highs_model, solve_milp
from optimizer.model.data import build_data
from optimizer.problem import SolveStatus
from optimizer.solve import solve
from tests.optimizer.conftest import charger, ev, make_instance


def two_evs_one_slot(**objective: float) -> object:
    """One 10 kW charger, one hourly step at 0.1/kWh, two EVs needing 5 kWh each, unmet 1/kWh."""
    return make_instance(
        steps=1,
        chargers=[charger("c", max_kw=10)],
        evs=[
            ev("a", charger=None, departure=1, energy_kwh=5),
            ev("b", charger=None, departure=1, energy_kwh=4),
        ],
        objective={"unmet_penalty_per_kwh": 1.0, "tie_break": 0.0, **objective},
    )


def lp_relaxation(inst: object, cuts: bool) -> float:
    """Objective of the LP relaxation of the assignment MILP."""
    data = build_data(inst)  # type: ignore[arg-type]
    h = highs_model(build_assignment_milp(data, cuts=cuts).lp, None)
    h.run()
    return float(h.getInfo().objective_function_value)


def test_slot_cut_closes_the_relaxation_gap_by_hand() -> None:
    """Without the cut the LP shares the charger (both served: 0.9); with it the bound is the optimum.

    MILP by hand: only one EV charges. Serving a (5 kWh) costs 0.5 + 4 unmet = 4.5, serving b costs
    0.4 + 5 = 5.4, so the optimum is 4.5. Cuts: x_a + unmet_a/5 ≥ 1 and x_b + unmet_b/4 ≥ 1 with
    x_a + x_b ≤ 1; the LP then also gives 4.5 (x_a = 1).
    """
    inst = two_evs_one_slot()
    assert lp_relaxation(inst, cuts=False) == pytest.approx(0.9)
    assert lp_relaxation(inst, cuts=True) == pytest.approx(4.5)
    s = solve(inst)  # type: ignore[arg-type]
    assert s.status == SolveStatus.OPTIMAL
    assert s.objective_value == pytest.approx(4.5)
    assert s.ev_power_kw == {"a": [5.0], "b": [0.0]}
    assert s.assignment == {"a": ["c"], "b": [None]}


def test_hard_needs_pick_the_cheap_step_for_the_big_need() -> None:
    """Two steps (0.1 then 0.2), one charger: a (10 kWh) takes the cheap step, b (5 kWh) the dear one: 2.0."""
    inst = make_instance(
        steps=2,
        tariff={"import_price": [0.1, 0.2]},
        chargers=[charger("c", max_kw=10)],
        evs=[ev("a", charger=None, energy_kwh=10), ev("b", charger=None, energy_kwh=5)],
        objective={"tie_break": 0.0},
    )
    s = solve(inst)
    assert s.status == SolveStatus.OPTIMAL and s.objective_value == pytest.approx(2.0)
    assert s.ev_power_kw == {"a": [10.0, 0.0], "b": [0.0, 5.0]}
    assert check_schedule(inst, s) == []


def test_identical_evs_are_ordered_and_the_optimum_is_kept() -> None:
    """Three identical EVs on two chargers: one ordering row per consecutive pair, same optimum as Pyomo."""
    same = {"charger": None, "departure": 2, "energy_kwh": 12, "max_kw": 10}
    inst = make_instance(
        steps=2,
        tariff={"import_price": [0.1, 0.3]},
        chargers=[charger("c1"), charger("c2")],
        evs=[ev("a", **same), ev("b", **same), ev("c", **same)],
        objective={"unmet_penalty_per_kwh": 1.0},
    )
    assert identical_ev_groups(build_data(inst)) == [[0, 1, 2]]
    strong, ref = solve(inst), solve(inst, backend="pyomo")
    assert strong.status == SolveStatus.OPTIMAL
    assert strong.metrics.total_cost == pytest.approx(ref.metrics.total_cost, abs=1e-6)
    assert check_schedule(inst, strong) == []


@pytest.mark.parametrize("seed", [3, 11])
def test_same_optimum_as_the_reference_model(seed: int) -> None:
    """Seed 003's hourly case (and another draw): the strong MILP proves the reference model's optimum."""
    inst = company_fleet(step_minutes=60, seed=seed)
    strong, ref = solve(inst), solve(inst, backend="pyomo")
    assert strong.status == SolveStatus.OPTIMAL and ref.status == SolveStatus.OPTIMAL
    assert strong.metrics.total_cost == pytest.approx(ref.metrics.total_cost, rel=2e-4)
    assert check_schedule(inst, strong) == []


def test_time_budget_returns_a_feasible_schedule_with_its_gap() -> None:
    """A budget too short to prove anything still gives the warm start (feasible) and a proven gap."""
    inst = company_fleet(step_minutes=15, seed=5)
    data = build_data(inst)
    out = solve_milp(build_assignment_milp(data), data, time_limit_s=0.05, mip_rel_gap=1e-9)
    assert out.x is not None and out.gap is not None and out.bound is not None
    assert out.warm.lp_bound is not None and out.bound >= out.warm.lp_bound - 1e-6
    s = solve(inst, time_limit_s=0.05)
    assert s.status in (SolveStatus.FEASIBLE, SolveStatus.OPTIMAL) and s.mip_gap is not None
    assert check_schedule(inst, s) == []


def test_partial_first_step_matches_the_reference_model() -> None:
    """A horizon starting 20 min into an hourly step: same optimum as the Pyomo model (step 0 is shorter)."""
    inst = company_fleet(step_minutes=60, seed=3).model_copy(update={"first_step_minutes": 20.0})
    inst = type(inst).model_validate(inst.model_dump())
    strong, ref = solve(inst), solve(inst, backend="pyomo")
    assert strong.status == SolveStatus.OPTIMAL and ref.status == SolveStatus.OPTIMAL
    assert strong.metrics.total_cost == pytest.approx(ref.metrics.total_cost, rel=2e-4)
    assert check_schedule(inst, strong) == []
