"""A full battery next to free PV surplus: the plan curtails, it does not charge and discharge in one step.

Charging b⁺ and discharging b⁻ in the same step burns surplus through the losses and ties with
curtailing it at zero price; the schedule then reports the net, a charge the full battery has no room
for. The throughput cost (`STORAGE_THROUGHPUT`) breaks that tie. Found by
test_random_instances.test_every_strategy_is_feasible, which failed only in some test orders.
"""

from __future__ import annotations

from typing import Any

import pytest

from optimizer.evaluate import check_schedule
from optimizer.problem import Instance, SolveStatus
from optimizer.solve import solve


def _instance(with_charger: bool) -> Instance:
    ev: dict[str, Any] = {"arrival": 1, "departure": 2, "energy_kwh": 0.0, "max_kw": 3.7,
                          "capacity_kwh": 20.0, "initial_kwh": 0.0}
    evs = [{**ev, "id": f"e{i}", "charger": None if with_charger else f"c{i}"} for i in range(3)]
    chargers = [{"id": "c0", "max_kw": 3.7}] if with_charger else [
        {"id": f"c{i}", "max_kw": 3.7} for i in range(3)]
    return Instance.model_validate({
        "start": "2026-01-01T00:00:00Z", "step_minutes": 15, "steps": 6,
        "site": {"import_limit_kw": [5.0] * 6, "export_limit_kw": 0.0, "base_load_kw": [0.0] * 6,
                 "pv_kw": [3.0, 0, 0, 0, 0, 0]},
        "tariff": {"import_price": [0.5] * 6, "export_price": [0.0] * 6},
        "chargers": chargers, "evs": evs,
        "storage": [{"id": "b", "capacity_kwh": 10.0, "initial_kwh": 10.0, "max_charge_kw": 5.0,
                     "max_discharge_kw": 5.0, "efficiency": 0.9}],
        "objective": {"kind": "cost", "unmet_penalty_per_kwh": None},
    })


@pytest.mark.parametrize(("with_charger", "backend"), [(True, "pyomo"), (False, "pyomo"), (False, "highs")])
def test_full_battery_does_not_take_free_surplus(with_charger: bool, backend: str) -> None:
    inst = _instance(with_charger)
    sched = solve(inst, "cost", time_limit_s=10, backend=backend)
    assert sched.status == SolveStatus.OPTIMAL
    assert check_schedule(inst, sched, tol_kw=1e-9) == []
    assert sched.storage_power_kw["b"][0] <= 1e-6  # no room: the surplus is curtailed
