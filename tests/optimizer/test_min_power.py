"""optimizer.min_power: an EV with a minimum power charges at 0 or at least that, within the site limit."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from optimizer.min_power import enforce_min_power, level_fill, needs_reshaping
from optimizer.problem import Instance, Schedule
from optimizer.solve import solve

START = datetime(2026, 3, 2, 22, tzinfo=UTC)


def instance(limit_kw: float = 20.0, prices: list[float] | None = None) -> Instance:
    return Instance.model_validate({
        "start": START, "step_minutes": 60, "steps": 6,
        "site": {"import_limit_kw": limit_kw},
        "tariff": {"import_price": prices or [0.3, 0.1, 0.1, 0.1, 0.1, 0.3]},
        "chargers": [{"id": "A", "max_kw": 11}, {"id": "B", "max_kw": 11}],
        "evs": [{"id": "a", "charger": "A", "arrival": 0, "departure": 6, "energy_kwh": 8, "max_kw": 11,
                 "capacity_kwh": 60},
                {"id": "b", "charger": "B", "arrival": 0, "departure": 6, "energy_kwh": 30, "max_kw": 11,
                 "capacity_kwh": 60}],
    })


def schedule(a: list[float], b: list[float]) -> Schedule:
    """A real solver Schedule with the EVs' power replaced by `a` and `b`."""
    solved = solve(instance(), "cost")
    return solved.model_copy(update={"ev_power_kw": {"a": a, "b": b}, "message": ""})


def full_site(a_update: dict[str, object]) -> Instance:
    """24 kW, flat prices, EV `a` (updated) and two more, `b` and `c`, on chargers B and C."""
    inst = instance(limit_kw=24.0, prices=[0.1] * 6)
    c = inst.evs[1].model_copy(update={"id": "c", "charger": "C"})
    charger_c = inst.chargers[1].model_copy(update={"id": "C"})
    return inst.model_copy(update={"chargers": [*inst.chargers, charger_c],
                                   "evs": [inst.evs[0].model_copy(update=a_update), inst.evs[1], c]})


def full_site_schedule(a: list[float]) -> Schedule:
    """`a`, and two urgent EVs `b` and `c` filling the first three steps (20.3 kW of 24)."""
    urgent = [9.92, 10.15, 10.15, 0, 0, 0]
    lp = schedule(a, urgent)
    return lp.model_copy(update={"ev_power_kw": {**lp.ev_power_kw, "c": list(urgent)}})


def test_thin_plan_is_packed_into_the_cheapest_steps_at_the_minimum_or_more() -> None:
    inst = instance()
    out = enforce_min_power(inst, schedule([0, 2, 2, 2, 2, 0], [0, 7.5, 7.5, 7.5, 7.5, 0]), {"a": 4.14})
    a = out.ev_power_kw["a"]
    assert not needs_reshaping(a, 4.14)
    assert sum(a) == pytest.approx(8.0, abs=4.14)  # energy kept (at most one minimum step more)
    assert sum(a) >= 8.0
    assert all(p == 0 or p >= 4.14 for p in a)
    assert a[0] == 0 and a[5] == 0  # only cheap steps
    for t in range(6):
        assert a[t] + out.ev_power_kw["b"][t] <= 20.0 + 1e-9  # site limit holds
    assert out.ev_power_kw["b"] == [0, 7.5, 7.5, 7.5, 7.5, 0]  # EVs without a minimum are untouched
    assert "reshaped" in out.message


def test_site_limit_is_never_exceeded_when_room_is_short() -> None:
    inst = instance(limit_kw=10.0)
    out = enforce_min_power(inst, schedule([1, 1, 1, 1, 1, 1], [8, 8, 8, 8, 8, 8]), {"a": 4.14})
    a = out.ev_power_kw["a"]
    assert all(a[t] + 8 <= 10.0 + 1e-9 for t in range(6))
    assert all(p == 0 for p in a)  # nowhere room for the minimum: pause rather than break the limit


def test_plan_already_at_or_above_the_minimum_is_returned_unchanged() -> None:
    plan = schedule([0, 5, 5, 0, 0, 0], [0, 0, 0, 0, 0, 0])
    assert enforce_min_power(instance(), plan, {"a": 4.14}) is plan


def test_evs_sharing_a_cheap_window_fill_it_evenly_at_their_minimum() -> None:
    # 10 EVs of 4 kWh with a 4.14 kW minimum and 4 cheap hours: at most 3 of them per hour (12.4 kW),
    # never all 10 in the first cheap hour (41 kW) as "cheapest and earliest first" did
    n = 10
    inst = Instance.model_validate({
        "start": START, "step_minutes": 60, "steps": 6, "site": {"import_limit_kw": 100.0},
        "tariff": {"import_price": [0.3, 0.1, 0.1, 0.1, 0.1, 0.3]},
        "chargers": [{"id": f"C{i}", "max_kw": 11} for i in range(n)],
        "evs": [{"id": f"e{i}", "charger": f"C{i}", "arrival": 0, "departure": 6, "energy_kwh": 4,
                 "max_kw": 11, "capacity_kwh": 60} for i in range(n)],
    })
    solved = solve(inst, "cost")
    thin = {f"e{i}": [0, 1, 1, 1, 1, 0] for i in range(n)}
    out = enforce_min_power(inst, solved.model_copy(update={"ev_power_kw": thin}), {k: 4.14 for k in thin})
    load = [sum(p[t] for p in out.ev_power_kw.values()) for t in range(6)]
    assert load[0] == 0 and load[5] == 0
    assert max(load) <= 3 * 4.14 + 1e-9
    for p in out.ev_power_kw.values():
        assert all(v == 0 or v >= 4.14 for v in p) and sum(p) >= 4.0 - 1e-9


def test_thin_plans_on_a_full_site_keep_their_energy() -> None:
    """Both EVs thin at a binding site limit: reshaped together, neither loses energy (one at a time,
    the first found only its own thin slice free and was paused)."""
    inst = instance(limit_kw=8.0, prices=[0.1] * 6)
    inst = inst.model_copy(update={"evs": [ev.model_copy(update={"departure": 4}) for ev in inst.evs]})
    out = enforce_min_power(inst, schedule([3, 3, 3, 3, 0, 0], [3, 3, 3, 3, 0, 0]), {"a": 4.14, "b": 4.14})
    a, b = out.ev_power_kw["a"], out.ev_power_kw["b"]
    assert sum(a) == pytest.approx(12.0) and sum(b) == pytest.approx(12.0)
    assert all(p == 0 or p >= 4.14 for p in a + b)
    assert all(a[t] + b[t] <= 8.0 + 1e-9 for t in range(6))


def test_a_plan_near_its_reference_is_rounded_to_it_not_reshaped() -> None:
    """A re-plan that keeps the standing plan (already at 0 or >= the minimum) up to solver noise gets
    that plan back exactly, with its energy: no energy moved to other steps, no renegotiation."""
    ref = [0.0, 5.0, 5.0, 5.0, 0.0, 0.0]
    inst = instance(limit_kw=20.0, prices=[0.1] * 6)
    evs = [inst.evs[0].model_copy(update={"reference_kw": ref}), inst.evs[1]]
    inst = inst.model_copy(update={"evs": evs})
    out = enforce_min_power(inst, schedule([0.0, 5.0, 4.99, 5.0, 1e-4, 0.0], [0] * 6), {"a": 4.14})
    assert out.ev_power_kw["a"] == pytest.approx([0.0, 5.0, 4.99, 5.0, 0.0, 0.0], abs=2e-4)
    assert sum(out.ev_power_kw["a"]) == pytest.approx(14.9901)
    shifted = enforce_min_power(inst, schedule([0.0, 5.0, 5.0, 4.0, 0.3, 0.7], [0] * 6), {"a": 4.14})
    assert shifted.ev_power_kw["a"][4:] == [0.0, 0.0] and shifted.ev_power_kw["a"][3] >= 4.14
    assert sum(shifted.ev_power_kw["a"]) == pytest.approx(15.0)


def test_a_plan_near_its_reference_is_not_rounded_up_where_the_site_is_full() -> None:
    """A re-plan near the standing plan (4.3 kW, above the 4.14 kW minimum) leaves a thin 3.7 kW where
    two new urgent EVs fill the site to its 24 kW limit: that step goes to 0, not up to the minimum, and
    its energy moves to steps with room. Rounding it up made plans of 24.45 kW on a 24 kW site; the csms
    rightly blocked their increases, and a session that started during a failover stayed at 0 W."""
    inst = full_site({"reference_kw": [4.34] * 6, "energy_kwh": 27})
    lp = full_site_schedule([4.15, 3.69, 3.69, 5.0, 5.0, 5.0])
    out = enforce_min_power(inst, lp, {"a": 4.14})
    a, b, c = (out.ev_power_kw[k] for k in "abc")
    assert all(a[t] + b[t] + c[t] <= 24.0 + 1e-9 for t in range(6)), a  # the site limit holds
    assert all(p == 0 or p >= 4.14 for p in a)
    assert a[1] == 0 and a[2] == 0  # no room for the minimum there: paused
    assert sum(a) == pytest.approx(sum(lp.ev_power_kw["a"]))  # its energy moved, not lost


def test_a_reshaped_plan_keeps_its_energy_when_few_steps_have_room_for_the_minimum() -> None:
    """29.5 kWh at a 4.14 kW minimum fills 7 steps at about 4.2 kW, but only 4 of the 6 steps have room
    for the minimum (two new EVs fill the others): those 4 take it all, within the site limit (the
    level of 7 steps in 4 lost 12.7 kWh)."""
    inst = full_site({"energy_kwh": 30})
    lp = full_site_schedule([4.15, 3.69, 3.69, 6.0, 6.0, 6.0])
    out = enforce_min_power(inst, lp, {"a": 4.14})
    a, b, c = (out.ev_power_kw[k] for k in "abc")
    assert sum(a) == pytest.approx(29.53)
    assert all(p == 0 or 4.14 <= p <= 11.0 for p in a)
    assert all(a[t] + b[t] + c[t] <= 24.0 + 1e-9 for t in range(6))


def test_level_fill_raises_the_lowest_loads_to_one_level() -> None:
    one_h = np.ones(3)
    added = level_fill(np.array([10.0, 12.0, 14.0]), np.full(3, 5.0), one_h, 4.0)
    assert added.tolist() == pytest.approx([3.0, 1.0, 0.0])  # 10 and 12 both up to 13 kW
    assert level_fill(np.array([10.0, 12.0, 14.0]), np.array([1.0, 5.0, 5.0]), one_h, 4.0).tolist() \
        == pytest.approx([1.0, 2.5, 0.5])  # the first capped at +1: the others to 14.5
    assert level_fill(np.zeros(3), np.ones(3), one_h, 10.0).tolist() == [1.0, 1.0, 1.0]  # more than fits
    assert level_fill(np.array([1.0, 2.0]), np.ones(2), np.array([0.5, 0.25]), 0.0).tolist() == [0.0, 0.0]


def test_level_fill_adds_the_energy_asked_across_a_flat_stretch() -> None:
    """Between two loads whose caps leave a gap (no step can take power there), the level jumps the gap:
    7 kWh into loads 0 and 10 capped at 5 each is 5 + 2 (it gave 5: the level was put inside the gap)."""
    one_h = np.ones(2)
    assert level_fill(np.array([0.0, 10.0]), np.full(2, 5.0), one_h, 7.0).tolist() == pytest.approx([5, 2])
    taken = level_fill(np.array([-24.44, -23.99, -5.0, -5.0, -5.0]), np.array([0.0, 0.0, 0.31, 0.31, 0.31]),
                       np.ones(5), 0.9)  # taking 0.9 kWh, as `_repair_near` does (negated loads)
    assert taken.sum() == pytest.approx(0.9)
    assert level_fill(np.array([1.0, 2.0]), np.zeros(2), np.ones(2), 3.0).tolist() == [0.0, 0.0]  # no room


def test_energy_a_repair_puts_back_goes_where_the_site_draws_least_not_into_the_first_step() -> None:
    """A re-plan near the standing plan leaves a thin slice (1 kW in the last, dear step); rounding it to
    0 puts its 1 kWh back into the cheap steps where the other EV draws least, not all into the first
    cheap step (which raised every re-plan's first step in the demo, and so its peak)."""
    ref = [0.0, 5.0, 5.0, 5.0, 5.0, 0.0]
    inst = instance(limit_kw=20.0)
    a_ref = inst.evs[0].model_copy(update={"reference_kw": ref})
    inst = inst.model_copy(update={"evs": [a_ref, inst.evs[1]]})
    b = [0.0, 9.0, 6.0, 6.0, 6.0, 0.0]
    out = enforce_min_power(inst, schedule([0.0, 5.0, 5.0, 5.0, 5.0, 1.0], b), {"a": 4.14})
    a = out.ev_power_kw["a"]
    assert a == pytest.approx([0.0, 5.0, 5 + 1 / 3, 5 + 1 / 3, 5 + 1 / 3, 0.0])
    assert max(x + y for x, y in zip(a, b, strict=True)) == pytest.approx(14.0)  # the LP's peak, not 15
    # energy short of the reference goes back to it first (no renegotiation), even where the site draws more
    out = enforce_min_power(inst, schedule([0.0, 5.0, 5.0, 5.0, 4.5, 0.5], b), {"a": 4.14})
    assert out.ev_power_kw["a"] == pytest.approx(ref)
