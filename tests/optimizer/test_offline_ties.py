"""`evfleet optimize`'s default tie-break: the lowest peak among equal-cost schedules, never at a cost.

The default `objective.tie_break` (null) puts the site's peak into the LP at a weight below half the
smallest cost gap of the instance (`optimizer.model.ties`), so among the cheapest schedules the
flattest wins, and no price difference, however small, is traded for a lower peak.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from optimizer.cases.rolling import STEP_H, flat_site
from optimizer.min_peak import Session, min_peak
from optimizer.model.data import build_data
from optimizer.model.highs_lp import build_lp
from optimizer.model.ties import lp_tie_break_weight
from optimizer.problem import Instance
from optimizer.solve import solve
from tests.optimizer.conftest import charger, ev, make_instance

STEPS = 40


def _flat_hard_site(n: int) -> tuple[Instance, list[int], list[float]]:
    """n EVs from step 0 with differing departures, hard needs, one flat price (every plan costs the same)."""
    rng = random.Random(1)
    departures = [rng.randint(12, STEPS) for _ in range(n)]
    energies = [min(rng.uniform(5, 40), 0.9 * 11 * d * STEP_H) for d in departures]
    inst = flat_site(STEPS, energies, departures)
    obj = inst.objective.model_copy(update={"unmet_penalty_per_kwh": None})
    return inst.model_copy(update={"objective": obj}), departures, energies


@pytest.mark.parametrize("n", [10, 20, 25])
def test_a_flat_tariff_plan_has_the_lowest_peak_at_the_same_cost(n: int) -> None:
    inst, departures, energies = _flat_hard_site(n)
    s = solve(inst, "cost")
    assert s.status.value == "optimal"
    start = inst.start
    sessions = [Session(start, start + timedelta(minutes=15 * d), e, 11.0)
                for d, e in zip(departures, energies, strict=True)]
    assert s.objective_value is not None
    best = min_peak(sessions, start, start + timedelta(minutes=15 * STEPS), 900.0, [0.25] * STEPS,
                    float(np.max(build_data(inst).import_limit_kw)), max_cost=s.objective_value * (1 + 1e-9))
    assert s.objective_value == pytest.approx(best.min_cost, rel=1e-9)
    assert s.metrics.peak_grid_kw <= 1.02 * best.peak_kw
    # without the peak term (tie_break 0) the interior point spreads each EV over its own stay: 1.3-1.6x
    off = inst.objective.model_copy(update={"tie_break": 0.0})
    central = solve(inst.model_copy(update={"objective": off}))
    assert central.metrics.peak_grid_kw > 1.3 * best.peak_kw


def _tiny_gap_site(objective: dict[str, Any] | None = None) -> Instance:
    """Three EVs over four 1-hour steps whose prices differ by 1e-7 per kWh: the cheap steps are full."""
    evs = [ev(f"e{i}", departure=4, energy_kwh=15, max_kw=10, capacity_kwh=60) for i in range(3)]
    return make_instance(steps=4, chargers=[charger(f"c_e{i}") for i in range(3)], evs=evs,
                         tariff={"import_price": [0.1, 0.1000001, 0.1, 0.1000001]}, objective=objective or {})


def test_a_price_gap_of_1e_7_is_never_traded_for_peak() -> None:
    # optimum: each EV 10 kWh in step 0 and 5 kWh in step 2 (0.1 per kWh), 4.5; the peak term would like
    # to move energy into steps 1 and 3 (peak 30 -> 11.25 kW) for 1e-7 per kWh
    s = solve(_tiny_gap_site(), "cost")
    assert s.objective_value == pytest.approx(4.5, rel=1e-9)
    # a fixed weight (the live 1e-2 x the largest price) does trade it: the test tells the two apart
    naive = solve(_tiny_gap_site({"tie_break": 1e-2}), "cost")
    assert naive.objective_value is not None and naive.objective_value > 4.5 * (1 + 1e-8)


def test_a_varying_import_limit_holds_under_the_peak_term() -> None:
    # the limit drops to 12 kW in steps 1-2: the peak term's rows carry the lower limit as rows of their own
    limit = [40.0, 12.0, 12.0, 40.0]
    evs = [ev(f"e{i}", departure=4, energy_kwh=20, max_kw=10) for i in range(3)]
    inst = make_instance(steps=4, site={"import_limit_kw": limit}, tariff={"import_price": 0.2},
                         chargers=[charger(f"c_e{i}") for i in range(3)], evs=evs)
    data = build_data(inst)
    assert lp_tie_break_weight(data) > 0 and "peak" in build_lp(data).blocks
    s = solve(inst, "cost")
    grid = np.sum([s.ev_power_kw[f"e{i}"] for i in range(3)], axis=0)
    assert np.all(grid <= np.array(limit) + 1e-6)
    # every EV gets its 20 kWh (the schedule's own clip to the limit would show as energy missing)
    assert [sum(s.ev_power_kw[f"e{i}"]) for i in range(3)] == pytest.approx([20.0] * 3, abs=1e-4)
    assert s.objective_value == pytest.approx(12.0, rel=1e-9)
    # 60 kWh with 24 in steps 1-2 leaves 36 for steps 0 and 3: 18 kW each is the lowest peak
    assert s.metrics.peak_grid_kw == pytest.approx(18.0, abs=1e-3)


def test_tie_break_zero_is_off_and_a_value_means_what_it_did() -> None:
    assert lp_tie_break_weight(build_data(_tiny_gap_site({"tie_break": 0.0}))) == 0.0
    assert "peak" not in build_lp(build_data(_tiny_gap_site({"tie_break": 0.0}))).blocks
    explicit = lp_tie_break_weight(build_data(_tiny_gap_site({"tie_break": 1e-3})))
    assert explicit == pytest.approx(1e-3 * 0.1000001)
    # default: half the smallest gap (1e-7) per kWh, per kW of peak and hour
    assert lp_tie_break_weight(build_data(_tiny_gap_site())) == pytest.approx(0.5e-7, rel=1e-6)


@pytest.mark.parametrize("case", ["v2g", "storage", "demand charge", "stickiness"])
def test_the_default_stays_off_where_the_argument_fails(case: str) -> None:
    kw: dict[str, Any] = {"steps": 2, "chargers": [charger("c_a", bidirectional=case == "v2g")],
                          "evs": [ev("a", energy_kwh=5, v2g=case == "v2g",
                                     reference_kw=[2.0, 3.0] if case == "stickiness" else None)]}
    if case == "storage":
        kw["storage"] = [{"id": "b", "capacity_kwh": 10, "max_charge_kw": 5, "max_discharge_kw": 5}]
    if case == "demand charge":
        kw["tariff"] = {"import_price": 0.1, "peak_price_per_kw": 5.0}
    data = build_data(make_instance(**kw))
    assert lp_tie_break_weight(data) == 0.0
