"""csms.smart_charging.budget: what each EVSE counts, fair shares, backoff (pure)."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csms.smart_charging.budget import (
    EvseBudgetState,
    Persistence,
    counted_series,
    fair_shares,
    refusal_backoff_s,
    reserve_w,
    scale_factor,
)

NOW = 1_000.0


def _count(**kw: object) -> float:
    state = EvseBudgetState(**{"transaction_id": "", "online": True, "steerable": True,  # type: ignore[arg-type]
                               "max_power_w": 11_000.0, **kw})
    return counted_series(state, NOW)[0][1]


def test_what_each_evse_counts() -> None:
    # idle: its default (the reservation), its maximum without one
    assert _count(default_w=0.0) == 0.0
    assert _count() == 11_000.0
    # refusing: the metered maximum, session or not
    assert _count(steerable=False, default_w=0.0, metered_max_w=11_500.0) == 11_500.0
    assert _count(steerable=False, transaction_id="t") == 11_000.0
    # a session: its accepted profile only if the record is for THIS session
    assert _count(transaction_id="t", record_tx="t", record_series=[(0.0, 4_000.0)]) == 4_000.0
    assert _count(transaction_id="t2", record_tx="t", record_series=[(0.0, 0.0)]) == 11_000.0
    assert _count(transaction_id="t2", record_tx="t", record_series=[(0.0, 0.0)], default_w=0.0) == 0.0
    # offline with a record of its session: that record; of an earlier session: its maximum
    assert _count(transaction_id="t", online=False, record_tx="t", record_series=[(0.0, 3_000.0)]) == 3_000.0
    assert _count(transaction_id="t", online=False, record_tx="old", record_series=[(0.0, 0.0)]) == 11_000.0
    # non-compliant: at least what it draws
    assert _count(transaction_id="t", record_tx="t", record_series=[(0.0, 4_000.0)],
                  noncompliant_w=9_000.0) == 9_000.0


def test_reserve_and_backoff() -> None:
    assert reserve_w(0.0, 100_000, 30, 22_000) == 0.0
    assert reserve_w(8_000.0, 20_000, 3, 22_000) == 20_000 / 3
    assert reserve_w(8_000.0, 100_000, 3, 7_000) == 7_000
    assert [refusal_backoff_s(n, 30) for n in (1, 2, 3)] == [30, 60, 120]
    assert refusal_backoff_s(30, 30) == 3600


def test_persistence() -> None:
    p = Persistence(2.0)
    assert not p.update("a", True, 0.0)
    assert not p.update("a", True, 2.0)
    assert p.update("a", True, 2.5)
    assert not p.update("a", False, 3.0)
    assert not p.update("a", True, 4.0)


def test_fair_shares_equal_and_capped() -> None:
    assert fair_shares(22_000, {"a": 11_000.0, "b": 11_000.0, "c": 11_000.0}) == pytest.approx({
        "a": 22_000 / 3, "b": 22_000 / 3, "c": 22_000 / 3})
    shares = fair_shares(22_000, {"a": 3_000.0, "b": 11_000.0, "c": 11_000.0})
    assert shares["a"] == 3_000 and abs(shares["b"] - 9_500) < 1e-3 and abs(shares["c"] - 9_500) < 1e-3
    # minimums that do not fit: the largest waits, the others are not held below theirs
    shares = fair_shares(8_000, {"a": 11_000.0, "b": 11_000.0, "c": 11_000.0},
                         {"a": 4_140.0, "b": 4_140.0, "c": 1_380.0})
    assert shares["c"] >= 1_380 and sum(v > 0 for v in shares.values()) == 2
    assert sum(shares.values()) <= 8_000 + 1e-6


@given(st.floats(0, 200_000), st.dictionaries(st.text(min_size=1, max_size=3),
                                              st.tuples(st.floats(0, 50_000), st.floats(0, 50_000)),
                                              min_size=1, max_size=12))
def test_fair_shares_properties(budget_w: float, sessions: dict[str, tuple[float, float]]) -> None:
    caps = {k: c for k, (c, _) in sessions.items()}
    mins = {k: m for k, (_, m) in sessions.items()}
    shares = fair_shares(budget_w, caps, mins)
    assert sum(shares.values()) <= budget_w + 1e-3
    running = [k for k, v in shares.items() if v > 0]
    for k, v in shares.items():
        assert v <= caps[k] + 1e-6
        if v > 0:
            assert v >= min(mins[k], caps[k]) - 1e-6
    # nobody above the common level while a running session sits below both its cap and the level
    if running:
        level = max(min(shares[k], caps[k]) for k in running if shares[k] < caps[k] - 1e-6) \
            if any(shares[k] < caps[k] - 1e-6 for k in running) else None
        if level is not None:
            for k in running:
                assert shares[k] <= max(level, min(mins[k], caps[k])) + 1e-3


def _bisected_fair_shares(budget_w: float, caps_w: dict[str, float],
                          mins_w: dict[str, float]) -> dict[str, float]:
    """The water-filling as it was until December 2026 (60 bisections over all sessions): the
    reference the exact sweep (`fair_shares`) must match."""
    mins = {k: min(max(0.0, mins_w.get(k, 0.0)), caps_w[k]) for k in caps_w}
    budget = max(0.0, budget_w)
    admitted = sorted(caps_w, key=lambda k: (mins[k], str(k)))
    # drop the largest minimums while they do not fit: the same sums as summing what is left each
    # time (left to right), kept as prefix sums (re-summing was quadratic: 31 s at 20,000 sessions)
    prefix = list(itertools.accumulate(mins[k] for k in admitted))
    while admitted and prefix[len(admitted) - 1] > budget + 1e-9:
        admitted.pop()
    out = dict.fromkeys(caps_w, 0.0)
    if not admitted:
        return out
    lo, hi = 0.0, max(caps_w[k] for k in admitted)

    def used(level: float) -> float:
        return sum(min(caps_w[k], max(mins[k], level)) for k in admitted)

    if used(hi) <= budget:
        lo = hi
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if used(mid) <= budget else (lo, mid)
    for k in admitted:
        out[k] = min(caps_w[k], max(mins[k], lo))
    return out


_WATTS = st.one_of(st.floats(0, 50_000),
                   st.sampled_from([0.0, 1_380.0, 4_140.0, 7_400.0, 11_000.0, 22_000.0]))


@settings(max_examples=400)
@given(st.one_of(st.floats(0, 400_000), st.sampled_from([0.0, 22_000.0, 100_000.0])),
       st.dictionaries(st.text(min_size=1, max_size=3), st.tuples(_WATTS, _WATTS), min_size=1, max_size=40))
def test_fair_shares_matches_the_bisection_and_never_exceeds_the_budget(
        budget_w: float, sessions: dict[str, tuple[float, float]]) -> None:
    caps = {k: c for k, (c, _) in sessions.items()}
    mins = {k: m for k, (_, m) in sessions.items()}
    shares = fair_shares(budget_w, caps, mins)
    reference = _bisected_fair_shares(budget_w, caps, mins)
    assert shares.keys() == reference.keys()
    for k in shares:  # the bisection stops within budget / 2**60 of the exact level
        assert shares[k] == pytest.approx(reference[k], rel=1e-9, abs=1e-6)
    assert sum(shares.values()) <= budget_w + 1e-9 * max(1.0, budget_w)  # float summation order only


def test_fair_shares_on_a_full_site_with_minimums_is_linear_not_quadratic() -> None:
    """10,000 EVs with a 6 A minimum on a 100 kW site: 72 fit, 9,928 wait. The old code summed every
    minimum again after each one it paused (5.6 s at load 8); the sweep 0.13 s."""
    caps = {f"S{i:05d}/1": 11_000.0 for i in range(10_000)}
    mins = dict.fromkeys(caps, 1_380.0)
    started = time.perf_counter()
    shares = fair_shares(100_000.0, caps, mins)
    assert time.perf_counter() - started < 2.0  # the old code: 5.6 s at load 8
    assert sum(v > 0 for v in shares.values()) == 72 and sum(shares.values()) <= 100_000.0


def test_scale_factor_fits_the_movable_load_under_the_limit_at_every_instant() -> None:
    assert scale_factor([5_000.0, 5_000.0], [10_000.0, 4_000.0], 20_000.0) is None  # fits: nothing to lower
    factor = scale_factor([5_000.0, 12_000.0], [10_000.0, 6_000.0], 15_000.0)
    assert factor == 0.5  # the worst instant decides: 12 kW fixed + 0.5 * 6 kW = 15 kW
    assert scale_factor([16_000.0], [4_000.0], 15_000.0) == 0.0  # fixed load alone is over: all paused
