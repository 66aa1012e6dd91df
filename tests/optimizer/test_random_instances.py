"""Random instances (Hypothesis): every strategy is feasible; the optimum is never worse than a baseline.

Feasibility is checked independently of the models by `optimizer.evaluate.check_schedule`: site import
and export limits, EV and charger power limits, charger exclusivity (one EV per charger and step, one
charger per EV and step, fixed EVs on their own charger), EV SOC bounds and storage bounds.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.evaluate import check_schedule
from optimizer.problem import Instance, SolveStatus
from optimizer.solve import solve
from optimizer.strategies import BASELINES

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@st.composite
def instances(draw: st.DrawFn, *, allow_pool: bool = True, soft: bool | None = None) -> Instance:
    """Small random instances: fixed and assigned EVs, V2G, PV, base load, storage, soft or hard needs."""
    steps = draw(st.integers(2, 8))
    money = st.floats(0.05, 0.5).map(lambda x: round(x, 3))
    n_ev = draw(st.integers(1, 5))
    n_ch = draw(st.integers(1, 3)) if allow_pool else n_ev
    chargers = [
        {
            "id": f"c{i}",
            "max_kw": draw(st.sampled_from([3.7, 7.4, 11.0, 22.0])),
            "bidirectional": draw(st.booleans()),
        }
        for i in range(n_ch)
    ]
    evs: list[dict[str, Any]] = []
    for i in range(n_ev):
        arrival = draw(st.integers(0, steps - 1))
        departure = draw(st.integers(arrival + 1, steps))
        capacity = draw(st.sampled_from([20.0, 40.0, 60.0]))
        initial = round(draw(st.floats(0.0, 0.6)) * capacity, 2)
        fixed = i < n_ch and (not allow_pool or draw(st.booleans()))
        evs.append(
            {
                "id": f"e{i}",
                "charger": f"c{i}" if fixed else None,
                "arrival": arrival,
                "departure": departure,
                "energy_kwh": round(draw(st.floats(0.0, 1.0)) * (capacity - initial) * 0.6, 2),
                "max_kw": draw(st.sampled_from([3.7, 7.4, 11.0])),
                "capacity_kwh": capacity,
                "initial_kwh": initial,
                "min_kwh": round(initial * draw(st.floats(0.0, 1.0)), 2),
                "efficiency": draw(st.sampled_from([1.0, 0.95, 0.9])),
                "priority": draw(st.sampled_from([1.0, 2.0])),
                "v2g": draw(st.booleans()),
            }
        )
    import_price = [draw(money) for _ in range(steps)]
    storage = []
    if draw(st.booleans()):
        cap = draw(st.sampled_from([10.0, 50.0]))
        storage.append(
            {
                "id": "b",
                "capacity_kwh": cap,
                "initial_kwh": round(cap * draw(st.floats(0, 1)), 2),
                "max_charge_kw": 5.0,
                "max_discharge_kw": 5.0,
                "efficiency": 0.9,
            }
        )
    is_soft = draw(st.booleans()) if soft is None else soft
    return Instance.model_validate(
        {
            "start": "2026-01-01T00:00:00Z",
            "step_minutes": draw(st.sampled_from([15, 60])),
            "steps": steps,
            "site": {
                "import_limit_kw": [draw(st.floats(5.0, 40.0)) for _ in range(steps)],
                "export_limit_kw": draw(st.sampled_from([0.0, 10.0])),
                "base_load_kw": [draw(st.floats(0.0, 4.0)) for _ in range(steps)],
                "pv_kw": [draw(st.sampled_from([0.0, 3.0, 12.0])) for _ in range(steps)],
            },
            "tariff": {
                "import_price": import_price,
                "export_price": [round(p * draw(st.floats(0.0, 0.9)), 3) for p in import_price],
                "peak_price_per_kw": draw(st.sampled_from([0.0, 0.3])),
            },
            "chargers": chargers,
            "evs": evs,
            "storage": storage,
            "objective": {
                "unmet_penalty_per_kwh": 1.0 if is_soft else None,
                "degradation_per_kwh": draw(st.sampled_from([0.0, 0.02])),
            },
        }
    )


@SETTINGS
@given(instances())
def test_every_strategy_is_feasible(inst: Instance) -> None:
    """Optimizer (or its fallback) and all baselines respect every physical constraint."""
    for name in ("cost", *BASELINES):
        sched = solve(inst, name, time_limit_s=10)
        assert check_schedule(inst, sched, tol_kw=1e-9) == [], (name, sched.status, sched.message)
        for ev in inst.evs:
            assert sched.ev_unmet_kwh[ev.id] <= ev.energy_kwh + 1e-6
            assert sched.ev_final_kwh[ev.id] <= ev.capacity_kwh + 1e-6
        if (
            name == "cost"
            and sched.status == SolveStatus.OPTIMAL
            and inst.objective.unmet_penalty_per_kwh is None
        ):
            assert sched.metrics.unmet_kwh <= 1e-4  # hard needs are met whenever the model is solved


@SETTINGS
@given(instances())
def test_optimum_never_worse_than_a_baseline(inst: Instance) -> None:
    """On the cost objective (energy, demand charge, wear, penalties) the optimum beats every baseline."""
    best = solve(inst, "cost", time_limit_s=10)
    if best.status != SolveStatus.OPTIMAL:
        assert best.status == SolveStatus.FALLBACK and inst.objective.unmet_penalty_per_kwh is None
        return
    for name in BASELINES:
        base = solve(inst, name)
        if inst.objective.unmet_penalty_per_kwh is None and base.metrics.unmet_kwh > 1e-6:
            continue  # misses a hard need: not a feasible point of the model
        tol = 1e-3 * max(1.0, abs(base.metrics.total_cost))
        assert best.metrics.total_cost <= base.metrics.total_cost + tol, name


@SETTINGS
@given(instances(allow_pool=False))
def test_direct_lp_and_pyomo_agree(inst: Instance) -> None:
    """The numpy->HiGHS LP and the Pyomo reference model find the same optimal cost."""
    fast = solve(inst, "cost", backend="highs")
    ref = solve(inst, "cost", backend="pyomo")
    assert fast.status == ref.status
    if fast.status == SolveStatus.OPTIMAL:
        assert fast.objective_value is not None and ref.objective_value is not None
        assert fast.objective_value == pytest.approx(ref.objective_value, rel=1e-4, abs=2e-3)
