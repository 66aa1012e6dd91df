"""csms.smart_charging.provisional: who shares the headroom a plan leaves, and how much (pure)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from csms.smart_charging import planner
from csms.smart_charging.provisional import cheap_mask, fits, headroom_shares, optimizer_silent, sharers

NOW = 1_000.0


def _at(series: planner.Series, t: float) -> float:
    return planner.value_at(series, t)


def test_a_late_session_does_not_take_the_planned_sessions_limits() -> None:
    # issue 11: one late session used to put the whole site in fallback and re-share ALL sessions
    planned = {"a/1": True, "b/1": True, "late/1": False}
    assert sharers(planned, None, silent=False) == ["late/1"]
    # the optimizer silent beyond the bound: everyone re-shares
    assert sharers(planned, None, silent=True) == ["a/1", "b/1", "late/1"]
    # provisional pass: only the sessions whose needs just arrived (and have no plan)
    assert sharers(planned, frozenset({"late/1", "a/1"}), silent=False) == ["late/1"]


def test_late_session_gets_what_the_plan_leaves_at_each_instant() -> None:
    # 30 kW site: two planned EVs at 11 kW now, 15 kW each from NOW+900 (the cheap window)
    plan = [(NOW, 11_000.0), (NOW + 900, 15_000.0)]
    shares = headroom_shares([plan, plan], 30_000.0, {"late": 11_000.0}, {"late": 0.0}, NOW)
    assert _at(shares["late"], NOW) == 8_000.0
    assert _at(shares["late"], NOW + 900) == 0.0
    # the plan's sessions keep their limits: the sum is the site limit, never above
    assert 2 * 11_000.0 + _at(shares["late"], NOW) <= 30_000.0


def test_never_below_the_ev_minimum_while_another_sharer_gets_more() -> None:
    # 7 kW left for two late EVs, one needs at least 4.2 kW: 3.5 + 3.5 would hold it below its minimum
    shares = headroom_shares([[(NOW, 23_000.0)]], 30_000.0, {"x": 11_000.0, "y": 11_000.0},
                             {"x": 4_200.0, "y": 0.0}, NOW)
    x, y = _at(shares["x"], NOW), _at(shares["y"], NOW)
    assert x + y <= 7_000.0 + 1e-6
    assert x >= 4_200.0 and y <= x
    # 3 kW left: the 4.2 kW minimum does not fit -> that EV waits (0), the other takes the rest
    shares = headroom_shares([[(NOW, 27_000.0)]], 30_000.0, {"x": 11_000.0, "y": 11_000.0},
                             {"x": 4_200.0, "y": 0.0}, NOW)
    assert _at(shares["x"], NOW) == 0.0 and abs(_at(shares["y"], NOW) - 3_000.0) < 1e-3


def test_others_already_over_the_limit_leave_nothing() -> None:
    shares = headroom_shares([[(NOW, 40_000.0)]], 30_000.0, {"x": 11_000.0}, {"x": 0.0}, NOW)
    assert shares["x"] == [(NOW, 0.0)]


def test_optimizer_silent_after_the_bound_only() -> None:
    assert not optimizer_silent(None, 100.0, 15.0)
    assert not optimizer_silent(90.0, 100.0, 15.0)
    assert optimizer_silent(80.0, 100.0, 15.0)



def test_an_optimizer_planning_other_sites_is_behind_not_silent_up_to_four_bounds() -> None:
    assert not optimizer_silent(80.0, 100.0, 15.0, last_plan_any_s=95.0)  # plans for other sites came
    assert not optimizer_silent(41.0, 100.0, 15.0, last_plan_any_s=95.0)
    assert optimizer_silent(39.0, 100.0, 15.0, last_plan_any_s=95.0)  # > 4 x 15 s: silent anyway
    assert optimizer_silent(80.0, 100.0, 15.0, last_plan_any_s=80.0)  # none for any site within 15 s


def test_fits_refuses_a_profile_above_its_share() -> None:
    share = [(NOW, 5_000.0), (NOW + 60, 2_000.0)]
    assert fits([(NOW, 5_000.0), (NOW + 60, 2_000.0)], share, NOW)
    assert fits([(NOW, 2_000.0)], share, NOW)
    assert not fits([(NOW, 5_000.0)], share, NOW)


_series = st.lists(st.tuples(st.integers(0, 20), st.floats(0, 22_000)), min_size=1, max_size=6).map(
    lambda pts: sorted({NOW + 300 * t: w for t, w in pts}.items()))


@settings(max_examples=200, deadline=None)
@given(others=st.lists(_series, max_size=8), budget_kw=st.floats(0, 200),
       caps=st.lists(st.floats(0, 22_000), min_size=1, max_size=6),
       mins=st.lists(st.floats(0, 8_000), min_size=6, max_size=6))
def test_sum_of_applied_limits_never_exceeds_the_site_limit(
        others: list[planner.Series], budget_kw: float, caps: list[float], mins: list[float]) -> None:
    """The rule: others + shares <= site limit at every instant (where the others alone fit)."""
    caps_w = {f"s{i}": c for i, c in enumerate(caps)}
    mins_w = {f"s{i}": mins[i] for i in range(len(caps))}
    shares = headroom_shares(others, budget_kw * 1000.0, caps_w, mins_w, NOW)
    every = others + list(shares.values())
    for t in planner.grid(every, NOW):
        other_w = sum(_at(s, t) for s in others)
        share_w = sum(_at(s, t) for s in shares.values())
        assert share_w <= max(0.0, budget_kw * 1000.0 - other_w) + 1e-6
        for k, s in shares.items():
            assert 0.0 <= _at(s, t) <= caps_w[k] + 1e-9


def test_shares_before_the_plan_only_use_its_cheapest_steps() -> None:
    # plan prices per 15 min: peak now, cheap from the 3rd step; the EV leaves after the 4th
    prices = [0.30, 0.24, 0.09, 0.09, 0.05]
    mask = cheap_mask(prices, NOW, 900.0, NOW + 100, NOW + 4 * 900, 11_000.0)
    assert mask == [(NOW + 100, 0.0), (NOW + 1800, 11_000.0), (NOW + 3600, 0.0)]
    assert cheap_mask(None, NOW, 900.0, NOW, None, 11_000.0) is None
    # the masked sharer leaves its headroom to the other one meanwhile
    shares = headroom_shares([], 20_000.0, {"a": 11_000.0, "b": 11_000.0}, {}, NOW + 100, {"a": mask})
    assert _at(shares["a"], NOW + 100) == 0.0 and _at(shares["b"], NOW + 100) == 11_000.0
    assert abs(_at(shares["a"], NOW + 2000) - 10_000.0) < 1e-3
