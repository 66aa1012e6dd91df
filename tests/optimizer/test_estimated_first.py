"""EVs whose need is only an estimate charge first, within the lowest peak (issue 12, live peak).

A car without ISO 15118 tells its real need only by filling up (or by still drawing): the sooner it charges,
the sooner a re-plan knows the site's real energy. Among equal-cost, equal-peak schedules the live LP puts
such EVs (`EV.energy_estimated`, set by the snapshot for sessions without needs) into the earliest steps and
leaves the later ones to the EVs that reported their needs, at the same peak and cost
(`optimizer.model.highs_lp.estimated_first_cost`).
"""

from __future__ import annotations

import pytest

from optimizer.snapshot import SnapshotConfig
from optimizer.solve import solve
from tests.optimizer.conftest import charger, ev, make_instance

LIVE_TIE_BREAK = SnapshotConfig().tie_break


def _two_cars(estimated: bool) -> tuple[list[float], list[float], float, float]:
    """Two 20 kWh cars on 10 kW chargers over 4 flat 1-hour steps: every schedule costs the same and the
    lowest peak is 10 kW; returns (a's plan, b's plan, cost, peak)."""
    inst = make_instance(
        steps=4, site={"import_limit_kw": 100.0}, tariff={"import_price": 0.2},
        chargers=[charger("c_a"), charger("c_b")],
        evs=[ev("a", departure=4, energy_kwh=20, energy_estimated=estimated),
             ev("b", departure=4, energy_kwh=20)],
        objective={"kind": "cost", "unmet_penalty_per_kwh": 10.0, "tie_break": LIVE_TIE_BREAK},
    )
    sched = solve(inst, "cost")
    a, b = sched.ev_power_kw["a"], sched.ev_power_kw["b"]
    site = [x + y for x, y in zip(a, b, strict=True)]
    return a, b, sum(0.2 * kw for kw in site), max(site)


def test_an_estimated_ev_takes_the_first_steps_at_the_same_peak_and_cost() -> None:
    a, b, cost, peak = _two_cars(estimated=True)
    assert sum(a[:2]) == pytest.approx(20.0, abs=0.05)  # all of a's estimate in the first two hours
    assert sum(b[2:]) == pytest.approx(20.0, abs=0.05)
    assert peak == pytest.approx(10.0, abs=1e-3)
    assert cost == pytest.approx(8.0, abs=1e-6)


def test_without_an_estimate_the_two_share_every_step() -> None:
    a, _, cost, peak = _two_cars(estimated=False)
    assert sum(a[:2]) == pytest.approx(10.0, abs=0.5)  # the central solution: half of it in each half
    assert (peak, cost) == pytest.approx((10.0, 8.0), abs=1e-3)



def test_the_order_buys_nothing_earlier_at_a_dearer_price() -> None:
    """A 30 kWh estimated car with two dear and two cheap hours buys 10 kWh dear: spread over both dear hours
    as without the order (ordered, it bought them in the first: in the demo at the afternoon price, energy a
    later estimate no longer needed)."""
    inst = make_instance(
        steps=4, site={"import_limit_kw": 100.0}, tariff={"import_price": [0.3, 0.3, 0.1, 0.1]},
        chargers=[charger("c_a")], evs=[ev("a", departure=4, energy_kwh=30, energy_estimated=True)],
        objective={"kind": "cost", "unmet_penalty_per_kwh": 10.0, "tie_break": LIVE_TIE_BREAK},
    )
    a = solve(inst, "cost").ev_power_kw["a"]
    assert a[2:] == pytest.approx([10.0, 10.0], abs=0.01)
    assert a[0] == pytest.approx(a[1], abs=0.5)
