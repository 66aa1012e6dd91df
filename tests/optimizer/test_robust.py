"""The robust option (Instance.robustness) and the rolling-horizon evaluation under uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.cases.seed001 import fleet
from optimizer.evaluate import check_schedule
from optimizer.problem import Robustness
from optimizer.robust import planned_evs
from optimizer.rolling import perfect_foresight, rolling, uncontrolled
from optimizer.solve import solve
from optimizer.uncertainty import UncertaintyModel, draw_scenario, seed001_consumption
from tests.optimizer.conftest import charger, ev, make_instance


def one_ev(**robustness: float) -> object:
    """An EV needing 10 kWh over 4 hourly steps, expensive first: it charges at the end unless told not to."""
    return make_instance(
        steps=4,
        tariff={"import_price": [0.3, 0.3, 0.1, 0.1]},
        chargers=[charger("c_a")],
        evs=[ev("a", departure=4, energy_kwh=10, capacity_kwh=50, initial_kwh=10)],
        robustness=robustness,
    )


def test_planned_needs_and_departures() -> None:
    """Energy margin multiplies the need (capped at the battery room); departures move up by whole steps."""
    inst = one_ev(energy_margin=0.5, departure_margin_minutes=61)
    (planned,) = planned_evs(inst)  # type: ignore[arg-type]
    assert planned.energy_kwh == 15 and planned.departure == 2  # 61 min = 2 hourly steps
    inst = one_ev(energy_margin=10)
    assert planned_evs(inst)[0].energy_kwh == 40  # type: ignore[arg-type]  # room: 50 - 10
    rolled = inst.model_copy(update={"evs": [inst.evs[0].model_copy(update={  # type: ignore[attr-defined]
        "energy_kwh": 2.0, "session_need_kwh": 10.0, "session_delivered_kwh": 8.0})],
        "robustness": Robustness(energy_margin=0.5)})
    assert planned_evs(rolled)[0].energy_kwh == 7.0  # 1.5 x 10 - 8: the margin is on the whole session
    only = inst.model_copy(update={"robustness": Robustness(energy_margin=0.5, estimated_only=True)})
    assert planned_evs(only)[0].energy_kwh == 10  # type: ignore[arg-type]  # a reported need: no margin
    est = only.model_copy(update={"evs": [only.evs[0].model_copy(update={"energy_estimated": True})]})
    assert planned_evs(est)[0].energy_kwh == 15


def test_departure_margin_moves_charging_earlier() -> None:
    """Without margin the EV charges in the cheap last steps; with a 2 h margin it must finish by step 2."""
    plain = solve(one_ev())  # type: ignore[arg-type]
    assert plain.ev_power_kw["a"] == pytest.approx([0.0, 0.0, 10.0, 0.0], abs=1e-6) or plain.ev_power_kw[
        "a"] == pytest.approx([0.0, 0.0, 5.0, 5.0], abs=1e-6)
    robust = solve(one_ev(departure_margin_minutes=120))  # type: ignore[arg-type]
    assert sum(robust.ev_power_kw["a"][:2]) == pytest.approx(10.0, abs=1e-6)
    assert robust.metrics.energy_cost == pytest.approx(3.0, abs=1e-6)
    big = solve(one_ev(energy_margin=0.5))  # type: ignore[arg-type]
    assert big.metrics.delivered_kwh == pytest.approx(15.0, abs=1e-6)
    assert check_schedule(one_ev(energy_margin=0.5), big) == []  # type: ignore[arg-type]


def test_rolling_under_uncertainty_and_what_the_margin_buys() -> None:
    """On a 12-car seed 001 fleet: perfect foresight is cheapest and meets every need; the rolling plan
    keeps most of the saving; the robust option leaves less energy unmet."""
    base = fleet(12)
    kwh_per_km = seed001_consumption(base)
    rng = np.random.default_rng(5)
    unmet_plain = unmet_robust = 0.0
    for _ in range(3):
        sc = draw_scenario(base, kwh_per_km, UncertaintyModel(), rng)
        pf, unc = perfect_foresight(base, sc), uncontrolled(base, sc)
        plain, robust = rolling(base, sc), rolling(base, sc, Robustness(energy_margin=1.0))
        assert pf.unmet_kwh.sum() < 1e-6 and unc.unmet_kwh.sum() < 1e-6
        assert pf.cost <= unc.cost
        assert plain.solves >= 2 and plain.cost < unc.cost
        unmet_plain += float(plain.unmet_kwh.sum())
        unmet_robust += float(robust.unmet_kwh.sum())
    assert unmet_robust < unmet_plain
