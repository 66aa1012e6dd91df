"""csms.smart_charging.budget (ordering, churn control, K17) on planner series (pure, with Hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from csms.smart_charging.budget import check_ev_plan, churn_filter, fair_share_w, next_batch
from csms.smart_charging.planner import (
    Series,
    constant,
    from_steps,
    grid,
    is_below,
    max_abs_diff_w,
    pointwise,
    sample,
    total,
)

NOW = 1_000_000.0
STEP = 900.0
BUDGET = 50_000.0


def _scaled(raw: list[list[float]], budget: float) -> list[Series]:
    """Series whose sum fits `budget` at every step (scale down where needed; floored, so rounding
    never lifts a step's sum above `budget`)."""
    steps = len(raw[0])
    sums = [sum(r[i] for r in raw) for i in range(steps)]
    out = []
    for r in raw:
        vals = [float(math.floor(v * min(1.0, budget / s))) if s > 0 else 0.0
                for v, s in zip(r, sums, strict=True)]
        out.append(from_steps(NOW, STEP, vals))
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[int, Series], dict[int, Series], list[bool]]:
    n = draw(st.integers(1, 8))
    steps = draw(st.integers(1, 6))
    vec = st.lists(st.floats(0, 22_000, allow_nan=False), min_size=steps, max_size=steps)
    applied_raw = draw(st.lists(vec, min_size=n, max_size=n))
    target_raw = draw(st.lists(vec, min_size=n, max_size=n))
    applied = dict(enumerate(_scaled(applied_raw, BUDGET)))
    target = dict(enumerate(_scaled(target_raw, BUDGET)))
    if draw(st.booleans()):
        # some EVSEs have never had a profile (count as 0 now) or leave the target set
        applied.pop(0, None)
    answers = draw(st.lists(st.booleans(), min_size=64, max_size=64))
    return applied, target, answers


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_sum_of_applied_never_exceeds_budget(data: tuple[dict[int, Series], dict[int, Series],
                                                         list[bool]]) -> None:
    applied, target, answers = data
    target = dict(target)
    rounds = 0
    all_accepted = True
    while True:
        batch = next_batch(applied, target, BUDGET, NOW)
        if not batch:
            break
        rounds += 1
        assert rounds < 20
        # worst case while in flight: every change counted at max(old, new)
        in_flight = dict(applied)
        for ch in batch:
            old = applied.get(ch.key, constant(0.0, NOW))
            in_flight[ch.key] = pointwise(old, ch.series, NOW, "max")
        pts = grid(in_flight.values(), NOW)
        assert max(total(list(in_flight.values()), pts)) <= BUDGET + 1.0 * len(in_flight) + 1e-6
        for ch in batch:
            ok = answers.pop() if answers else True
            if ok:
                applied[ch.key] = ch.series
            else:  # rejected: keep the old series and give up on this key
                all_accepted = False
                target[ch.key] = applied.get(ch.key, constant(0.0, NOW))
                if ch.key not in applied:
                    applied[ch.key] = constant(0.0, NOW)
        pts = grid(applied.values(), NOW)
        assert max(total(list(applied.values()), pts)) <= BUDGET + 1.0 * len(applied) + 1e-6
    if all_accepted:
        for key, series in target.items():
            assert is_below(series, applied[key], NOW) and is_below(applied[key], series, NOW)


def test_decrease_goes_before_increase() -> None:
    applied = {"a": constant(30_000, NOW), "b": constant(20_000, NOW)}
    target = {"a": constant(10_000, NOW), "b": constant(40_000, NOW)}
    first = next_batch(applied, target, BUDGET, NOW)
    assert [(c.key, c.final) for c in first] == [("a", True)]
    applied["a"] = first[0].series
    second = next_batch(applied, target, BUDGET, NOW)
    assert [(c.key, c.final) for c in second] == [("b", True)]


def test_mixed_change_sends_decreasing_half_first() -> None:
    # a moves its power from the first step to the second, b the other way round
    applied = {"a": from_steps(NOW, STEP, [40_000, 10_000]), "b": from_steps(NOW, STEP, [10_000, 40_000])}
    target = {"a": from_steps(NOW, STEP, [10_000, 40_000]), "b": from_steps(NOW, STEP, [40_000, 10_000])}
    first = next_batch(applied, target, BUDGET, NOW)
    assert all(not c.final for c in first)
    for c in first:
        applied[c.key] = c.series
    second = next_batch(applied, target, BUDGET, NOW)
    assert {c.key for c in second} == {"a", "b"} and all(c.final for c in second)


def test_churn_skips_small_changes_unless_budget_needs_them() -> None:
    applied = {"a": constant(10_000, NOW), "b": constant(10_000, NOW)}
    planned = {"a": constant(10_300, NOW), "b": constant(15_000, NOW)}
    dec = churn_filter(applied, planned, BUDGET, 500, NOW)
    assert dec.skipped == ["a"] and dec.target["a"] == applied["a"]
    # site budget shrank: a's small decrease is needed after all
    applied = {"a": constant(25_000, NOW), "b": constant(25_000, NOW)}
    planned = {"a": constant(24_800, NOW), "b": constant(24_000, NOW)}
    assert churn_filter(applied, planned, 48_900, 500, NOW).skipped == []
    assert churn_filter(applied, planned, 50_000, 500, NOW).skipped == ["a"]


def test_fair_share() -> None:
    assert fair_share_w(50_000, 30_000, 2, 22_000) == 10_000
    assert fair_share_w(50_000, 10_000, 1, 22_000) == 22_000
    assert fair_share_w(50_000, 10_000, 1, 22_000, fallback_w=7_000) == 7_000
    assert fair_share_w(50_000, 60_000, 1, 22_000, fallback_w=7_000) == 0


def test_k17_check() -> None:
    sent = from_steps(NOW, STEP, [11_000, 0, 7_000])
    ok = from_steps(NOW, STEP, [11_000, 0, 6_000])
    bad = from_steps(NOW, STEP, [11_000, 3_000, 6_000])
    assert check_ev_plan(ok, sent, NOW, 50).within_limits
    res = check_ev_plan(bad, sent, NOW, 50)
    assert not res.within_limits and res.worst_excess_w == 3_000 and res.at_s == NOW + STEP


def test_k17_ignores_change_points_moved_by_a_second() -> None:
    sent = from_steps(NOW, STEP, [11_000, 4_000])
    ev = [(NOW, 11_000.0), (NOW + STEP + 1.0, 4_000.0)]  # the EV steps down 1 s late (whole seconds)
    assert check_ev_plan(ev, sent, NOW, 50).within_limits
    late = [(NOW, 11_000.0), (NOW + STEP + 60.0, 4_000.0)]  # a minute late: a breach
    res = check_ev_plan(late, sent, NOW, 50)
    assert not res.within_limits and res.worst_excess_w == 7_000


def test_equal_series_compare_without_sampling_and_a_nan_never_counts_as_equal() -> None:
    a = from_steps(NOW, 900, [7000.0, 3000.0, 11000.0])
    assert max_abs_diff_w(a, a, NOW) == 0.0 and max_abs_diff_w(a, list(a), NOW) == 0.0
    assert is_below(a, list(a), NOW) and not is_below(a, list(a), NOW, tol_w=-1.0)
    b = from_steps(NOW, 900, [7000.0, 3500.0, 11000.0])
    assert max_abs_diff_w(a, b, NOW) == 500.0 and not is_below(b, a, NOW) and is_below(a, b, NOW)
    bad = from_steps(NOW, 900, [float("nan")])
    assert not max_abs_diff_w(bad, bad, NOW) <= 1.0  # unknown: never "unchanged"
    assert not is_below(bad, bad, NOW)


_STEPS = st.lists(st.floats(0, 22_000), min_size=1, max_size=6)


@given(_STEPS, _STEPS)
@settings(max_examples=200, deadline=None)
def test_the_equal_series_shortcut_agrees_with_sampling(x: list[float], y: list[float]) -> None:
    a, b = from_steps(NOW, 900, x), from_steps(NOW, 900, y)
    points = grid([a, b], NOW)
    sampled = max(abs(p - q) for p, q in zip(sample(a, points), sample(b, points), strict=True))
    assert max_abs_diff_w(a, b, NOW) == sampled
    assert max_abs_diff_w(a, from_steps(NOW, 900, x), NOW) == 0.0
