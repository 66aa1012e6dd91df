"""Seed 003's FCFS baseline as the paper defines it: arrival order, a charger held until departure."""

from __future__ import annotations

from optimizer.cases.seed003 import company_fleet
from optimizer.evaluate import check_schedule
from optimizer.problem import SolveStatus
from optimizer.solve import solve
from tests.optimizer.conftest import charger, ev, make_instance


def test_fcfs_holds_the_charger_until_departure() -> None:
    """a (arrived first, 5 kWh) is full after one step but keeps the charger; b waits and leaves empty.

    The `uncontrolled` baseline releases the charger when a is full, so b charges in step 1.
    """
    inst = make_instance(
        steps=3,
        chargers=[charger("c", max_kw=10)],
        evs=[
            ev("b", charger=None, arrival=1, departure=3, energy_kwh=10),
            ev("a", charger=None, arrival=0, departure=3, energy_kwh=5),
            ev("d", charger=None, arrival=1, departure=2, energy_kwh=3),
        ],
        objective={"unmet_penalty_per_kwh": 1.0},
    )
    s = solve(inst, "fcfs")
    assert s.status == SolveStatus.HEURISTIC and check_schedule(inst, s) == []
    assert s.ev_power_kw == {"b": [0.0, 0.0, 0.0], "a": [5.0, 0.0, 0.0], "d": [0.0, 0.0, 0.0]}
    assert s.assignment["a"] == ["c", "c", "c"] and s.assignment["b"] == [None, None, None]
    assert s.metrics.soc_compliance == 1 / 3
    unc = solve(inst, "uncontrolled")
    assert unc.ev_power_kw["b"] == [0.0, 10.0, 0.0] and unc.metrics.soc_compliance == 2 / 3


def test_waiting_evs_take_a_freed_charger_in_arrival_order() -> None:
    """a leaves after step 0; of the two waiting EVs, the earlier arrival (d) takes the charger."""
    inst = make_instance(
        steps=3,
        chargers=[charger("c", max_kw=10)],
        evs=[
            ev("a", charger=None, arrival=0, departure=1, energy_kwh=5),
            ev("e", charger=None, arrival=1, departure=3, energy_kwh=5),
            ev("d", charger=None, arrival=0, departure=3, energy_kwh=20),
        ],
        objective={"unmet_penalty_per_kwh": 1.0},
    )
    s = solve(inst, "fcfs")
    assert s.ev_power_kw["d"] == [0.0, 10.0, 10.0] and s.ev_power_kw["e"] == [0.0, 0.0, 0.0]
    assert check_schedule(inst, s) == []


def test_seed003_fcfs_is_worse_than_uncontrolled_and_the_optimum() -> None:
    """On seed 003 the paper's baseline meets fewer needs than ours, and the MILP meets more than both."""
    inst = company_fleet(step_minutes=60)
    fcfs, unc, best = solve(inst, "fcfs"), solve(inst, "uncontrolled"), solve(inst)
    assert fcfs.metrics.soc_compliance is not None and unc.metrics.soc_compliance is not None
    assert best.metrics.soc_compliance is not None
    assert fcfs.metrics.soc_compliance < unc.metrics.soc_compliance < best.metrics.soc_compliance
    assert best.metrics.total_cost < unc.metrics.total_cost < fcfs.metrics.total_cost
    assert check_schedule(inst, fcfs) == []
