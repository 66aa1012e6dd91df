"""optimizer.level: the blocks of EVs with a minimum power add up to a flat site load, same energies and cost.

The cause of issue 12's live peak above the min-peak with every need known: `optimizer.min_power` puts an
ISO 15118 EV into whole blocks at or above its minimum, stickiness carries them into every re-plan, and
their sum is lumpy (seed 1: 35.7 and 40.0 kW side by side all night, 1.056x the min-peak).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optimizer.level import level_peak
from optimizer.min_peak import Session, min_peak
from optimizer.problem import Instance, Schedule
from optimizer.solve import solve

START = datetime(2026, 3, 2, 22, tzinfo=UTC)
PRICES = [0.3, 0.1, 0.1, 0.1, 0.1, 0.3]
MIN_KW = {"a": 4.14, "b": 4.14, "c": 4.14}  # ISO 15118 EVs (6 A on three phases); d has no minimum


def instance(limit_kw: float | list[float] = 40.0) -> Instance:
    """Six 1 h steps, four cheap ones; four EVs of 10 kWh on their own 11 kW chargers."""
    return Instance.model_validate({
        "start": START, "step_minutes": 60, "steps": 6,
        "site": {"import_limit_kw": limit_kw},
        "tariff": {"import_price": PRICES},
        "chargers": [{"id": c, "max_kw": 11} for c in "ABCD"],
        "evs": [{"id": e, "charger": e.upper(), "arrival": 0, "departure": 6, "energy_kwh": 10, "max_kw": 11,
                 "capacity_kwh": 60} for e in "abcd"],
    })


def with_power(inst: Instance, power: dict[str, list[float]]) -> Schedule:
    """A real solver Schedule of `inst` with the EVs' power replaced by `power`."""
    return solve(inst, "cost").model_copy(update={"ev_power_kw": power, "message": ""})


def site(s: Schedule) -> list[float]:
    return [sum(p[t] for p in s.ev_power_kw.values()) for t in range(6)]


def cost(s: Schedule) -> float:
    return sum(kw * price for kw, price in zip(site(s), PRICES, strict=True))


def lowest_peak() -> float:
    """The lowest peak of the same four EVs at the same cost, no minimum power (`optimizer.min_peak`)."""
    sessions = [Session(START, START + timedelta(hours=6), 10.0, 11.0) for _ in "abcd"]
    return min_peak(sessions, START, START + timedelta(hours=6), 3600.0, PRICES, 40.0).peak_kw


# a, b and c each in two blocks of 5 kW, all in the same two cheap hours: 15 + 2.5 kW there, 2.5 kW after
LUMPY = {"a": [0, 5, 5, 0, 0, 0], "b": [0, 5, 5, 0, 0, 0], "c": [0, 5, 5, 0, 0, 0],
         "d": [0, 2.5, 2.5, 2.5, 2.5, 0]}


def test_blocks_piled_into_the_same_steps_are_spread_to_the_lowest_peak_at_the_same_cost() -> None:
    inst = instance()
    before = with_power(inst, LUMPY)
    out = level_peak(inst, before, MIN_KW)
    assert max(site(before)) == pytest.approx(17.5)
    assert lowest_peak() == pytest.approx(10.0, abs=1e-6)
    assert max(site(out)) <= lowest_peak() * 1.01  # without levelling: 17.5 kW, 1.75x
    assert cost(out) <= cost(before) + 1e-6
    for ev_id, plan in out.ev_power_kw.items():
        assert sum(plan) == pytest.approx(sum(LUMPY[ev_id]), abs=1e-4)  # every EV keeps its energy
        if ev_id in MIN_KW:
            assert all(p <= 1e-9 or p >= MIN_KW[ev_id] - 1e-6 for p in plan)  # 0 or at least the minimum
        assert all(p <= 11.0 + 1e-9 for p in plan)
    assert "levelled" in out.message


def test_the_site_limit_holds_while_levelling() -> None:
    # 8 kW in the third cheap hour: the levelled plan fills it up to the limit and no further
    limit = [40.0, 40.0, 40.0, 8.0, 40.0, 40.0]
    inst = instance(limit_kw=limit)
    lumpy = {"a": [0, 5, 5, 0, 0, 0], "b": [0, 5, 5, 0, 0, 0], "c": [0, 0, 0, 5, 5, 0],
             "d": [0, 2.5, 0, 2.5, 5, 0]}
    before = with_power(inst, lumpy)
    out = level_peak(inst, before, MIN_KW)
    assert max(site(before)) == pytest.approx(12.5)
    assert all(load <= cap + 1e-6 for load, cap in zip(site(out), limit, strict=True))
    assert max(site(out)) <= (40.0 - 8.0) / 3 * 1.01  # the other three cheap hours share the rest evenly


def test_a_flat_plan_is_returned_unchanged() -> None:
    """Nothing to gain, nothing moved: a re-plan on a flat standing plan re-sends no profile (K16)."""
    inst = instance()
    flat = with_power(inst, {"a": [0, 5, 5, 0, 0, 0], "b": [0, 0, 0, 5, 5, 0], "c": [0, 5, 0, 5, 0, 0],
                             "d": [0, 0, 5, 0, 5, 0]})
    assert max(site(flat)) == pytest.approx(10.0)
    assert level_peak(inst, flat, MIN_KW) is flat


def test_without_an_ev_minimum_the_plan_is_left_to_the_cost_lp() -> None:
    inst = instance()
    plan = with_power(inst, LUMPY)
    assert level_peak(inst, plan, {}) is plan
