"""Stickiness toward a previous plan (`reference_kw`): kept where it costs nothing, never at a real cost."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from optimizer.cases.rolling import STEP_H, flat_site
from optimizer.problem import Instance
from optimizer.reference import reference_for
from optimizer.solve import solve
from tests.optimizer.conftest import charger, ev, make_instance

BACKENDS = ["highs", "pyomo"]


def _two_evs_sharing(reference: dict[str, list[float | None]] | None, **objective: Any) -> Instance:
    """Two EVs each needing 10 kWh over two 1-h steps, site limit 10 kW, flat price: any split is optimal."""
    evs = [ev(i, energy_kwh=10, reference_kw=(reference or {}).get(i)) for i in ("a", "b")]
    return make_instance(chargers=[charger("c_a"), charger("c_b")], evs=evs,
                         site={"import_limit_kw": 10}, objective=objective)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_equal_cost_reference_is_kept_exactly(backend: str) -> None:
    # "a first, then b" and "b first, then a" cost the same; the solver must return the one referenced
    for ref in ({"a": [10.0, 0.0], "b": [0.0, 10.0]}, {"a": [0.0, 10.0], "b": [10.0, 0.0]}):
        s = solve(_two_evs_sharing(ref), "cost", backend=backend)
        assert s.status.value == "optimal"
        for ev_id in ("a", "b"):
            assert s.ev_power_kw[ev_id] == pytest.approx(ref[ev_id], abs=1e-4)
        assert s.objective_value == pytest.approx(2.0, abs=1e-6)  # 20 kWh at 0.1, stickiness not billed


@pytest.mark.parametrize("backend", BACKENDS)
def test_stickiness_zero_ignores_the_reference(backend: str) -> None:
    first_a = _two_evs_sharing({"a": [10.0, 0.0], "b": [0.0, 10.0]}, stickiness=0)
    first_b = _two_evs_sharing({"a": [0.0, 10.0], "b": [10.0, 0.0]}, stickiness=0)
    one, other = (solve(inst, "cost", backend=backend) for inst in (first_a, first_b))
    assert one.objective_value == pytest.approx(2.0, abs=1e-6)
    for ev_id in ("a", "b"):  # opposite references, same answer
        assert one.ev_power_kw[ev_id] == pytest.approx(other.ev_power_kw[ev_id], abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reference_never_wins_over_a_real_price_difference(backend: str) -> None:
    # the reference charges in the expensive step; the optimum moves everything to the cheap one
    inst = make_instance(chargers=[charger("c_a")], evs=[ev("a", energy_kwh=10, reference_kw=[10.0, 0.0])],
                         tariff={"import_price": [0.30, 0.29]})
    s = solve(inst, "cost", backend=backend)
    assert s.ev_power_kw["a"] == pytest.approx([0.0, 10.0], abs=1e-4)
    assert s.objective_value == pytest.approx(2.9, abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_cost_with_a_reference_is_within_the_stickiness_bound(seed: int) -> None:
    """cost* ≤ cost(with reference) ≤ cost* + λΔtΣ|ref − p*| on random instances, both backends alike."""
    rng = random.Random(seed)
    steps, n = 8, 5
    evs = []
    for i in range(n):
        arrival = rng.randrange(0, 4)
        evs.append(ev(f"e{i}", arrival=arrival, departure=rng.randrange(arrival + 2, steps + 1),
                      energy_kwh=rng.uniform(0, 12), max_kw=rng.choice([7.4, 11.0])))
    prices = [round(rng.uniform(0.1, 0.4), 2) for _ in range(steps)]
    base: dict[str, Any] = dict(steps=steps, chargers=[charger(f"c_e{i}", 11) for i in range(n)],
                                site={"import_limit_kw": rng.uniform(15, 30)},
                                tariff={"import_price": prices},
                                objective={"unmet_penalty_per_kwh": 5})
    free = solve(make_instance(evs=evs, **base), "cost", backend="highs")
    refs = {e["id"]: [rng.uniform(0, 11) for _ in range(steps)] for e in evs}
    inst = make_instance(evs=[{**e, "reference_kw": refs[e["id"]]} for e in evs], **base)
    lam = 1e-3 * max(prices)  # default stickiness × the largest price, per kWh
    bound = lam * 1.0 * sum(  # 1-h steps
        abs(min(max(r, 0.0), 11.0) - p) for e in evs for r, p in zip(refs[e["id"]], free.ev_power_kw[e["id"]],
                                                                      strict=True))
    for backend in BACKENDS:
        sticky = solve(inst, "cost", backend=backend)
        assert sticky.objective_value >= free.objective_value - 1e-5
        assert sticky.objective_value <= free.objective_value + bound + 1e-5


def test_rolling_replan_keeps_every_ev_on_its_plan_with_references() -> None:
    """One step later, with each EV's need reduced by what it drew, nothing material changes (K16)."""
    n, steps, step_h = 120, 32, STEP_H
    rng = random.Random(1)
    departures = [rng.randint(12, steps) for _ in range(n)]
    energies = [rng.uniform(5, 30) for _ in range(n)]

    first = solve(flat_site(steps, energies, departures))
    p0 = np.array([first.ev_power_kw[f"EV{i}"] for i in range(n)])
    need = [max(0.0, energies[i] - p0[i, 0] * step_h) for i in range(n)]
    refs: list[list[float | None]] = [[*p0[i, 1:], None] for i in range(n)]
    moved: dict[float, int] = {}
    for stickiness in (0.0, 1e-3):
        again = solve(flat_site(steps, need, departures, shift=1, refs=refs, stickiness=stickiness))
        assert again.status.value == "optimal"
        p1 = np.array([again.ev_power_kw[f"EV{i}"] for i in range(n)])
        moved[stickiness] = int((np.abs(p1[:, :-1] - p0[:, 1:]).max(axis=1) > 0.5).sum())
        assert again.objective_value == pytest.approx(first.objective_value - 0.25 * step_h * p0[:, 0].sum(),
                                                      rel=1e-4)
    assert moved[1e-3] == 0
    assert moved[0.0] > 0  # the churn the references remove (interior point re-centres without them)


def test_reference_for_maps_the_previous_plan_onto_the_new_grid() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    plan = {"start": start.isoformat(), "step_s": 900, "evses": {"CP/1": [1.0, 2.0, 3.0, 4.0]},
            "transactions": {"CP/1": "tx-1"}}
    later = start + timedelta(minutes=30)
    assert reference_for(plan, "CP/1", "tx-1", later, 900, 3) == [3.0, 4.0, None]
    assert reference_for(plan, "CP/1", "tx-1", start, 900, 2) == [1.0, 2.0]
    assert reference_for(plan, "CP/1", "tx-2", later, 900, 3) is None  # another session on the EVSE
    assert reference_for(plan, "CP/2", "tx-1", later, 900, 3) is None
    assert reference_for(plan, "CP/1", "tx-1", later, 600, 3) is None  # other step length
    assert reference_for(plan, "CP/1", "tx-1", start + timedelta(hours=2), 900, 3) is None  # past its end
    assert reference_for(plan, "CP/1", "tx-1", start + timedelta(minutes=7), 900, 3) is None  # off the grid
    assert reference_for(plan, "CP/1", "tx-1", start - timedelta(minutes=15), 900, 3) == [None, 1.0, 2.0]


def test_a_reference_of_the_wrong_length_is_refused() -> None:
    expected = r"evs\[0\] \(a\)\.reference_kw: has 3 values, expected steps=2"
    with pytest.raises(ValidationError, match=expected):
        make_instance(chargers=[charger("c_a")], evs=[ev("a", reference_kw=[1.0, 2.0, 3.0])])
