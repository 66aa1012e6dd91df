"""The site over-limit alarm's decision without sockets: readings and accepted profiles in
(`MeteredState`), the alarm's verdict out (`SiteAlarms.judge`).

A mass re-share on a full site confirms its decreases before its increases; the lowered stations'
last readings, taken before their decreases, must not raise the alarm beside the raised ones'
fresh readings. A station above its applied limit, or fresh readings summing above the limit,
must raise it as soon as it has lasted `after_s`.
"""

from __future__ import annotations

from csms.smart_charging.metered import READING_LAG_S, MeteredState
from csms.smart_charging.site_alarm import SiteAlarms, Verdict, tolerance_w

SITE = "S1"
LIMIT_W = 16_000.0
AFTER_S = 5.0
T0 = 1_800_000_000.0


def _full_site() -> tuple[MeteredState, list[tuple[str, int]]]:
    """Four sessions sharing 16 kW (4 kW each, accepted at T0 - 60 s), each metering 4 kW at T0."""
    state = MeteredState()
    evses = [(f"CP-{i}", 1) for i in range(1, 5)]
    for evse in evses:
        state.hold(evse, f"tx-{evse[0]}", T0 - 60, T0 - 60, [(T0 - 60, 4_000.0)])
        state.note(evse, SITE, f"tx-{evse[0]}", 4_000.0, T0)
    return state, evses


def _verdicts(alarms: SiteAlarms, state: MeteredState, start_s: float, end_s: float,
              limit_w: float = LIMIT_W) -> list[Verdict]:
    """A pass every second from `start_s` to `end_s` (wall and monotonic time alike)."""
    out, t = [], start_s
    while t <= end_s:
        out.append(alarms.judge(SITE, state.total_w(SITE, t), state.total_w(SITE, t, capped=False),
                                limit_w, t).verdict)
        t += 1.0
    return out


def _reshare_for_a_fifth(state: MeteredState, evses: list[tuple[str, int]]) -> tuple[str, int]:
    """A fifth session arrives: the four are lowered to 3.2 kW (answered T0 + 5..8 s), then the
    fifth raised to 3.2 kW (T0 + 9 s) and metering it at T0 + 10 s. The four meter next at T0 + 40 s."""
    for n, evse in enumerate(evses):
        state.hold(evse, f"tx-{evse[0]}", T0 + 4 + n, T0 + 5 + n, [(T0 + 4 + n, 3_200.0)])
    fifth = ("CP-5", 1)
    state.hold(fifth, "tx-CP-5", T0 + 8.5, T0 + 9, [(T0 + 8.5, 3_200.0)])
    state.note(fifth, SITE, "tx-CP-5", 3_200.0, T0 + 10)
    return fifth


def test_a_mass_reshare_on_a_full_site_raises_no_alarm() -> None:
    state, evses = _full_site()
    alarms = SiteAlarms(AFTER_S)
    _reshare_for_a_fifth(state, evses)
    # as taken: 4 x 4 + 3.2 kW for 30 s (the old sum raised the alarm); counted: 5 x 3.2 kW
    assert state.total_w(SITE, T0 + 20, capped=False) == 19_200.0
    assert state.total_w(SITE, T0 + 20) == 16_000.0
    assert set(_verdicts(alarms, state, T0 + 10, T0 + 39)) == {Verdict.QUIET}
    for evse in evses:  # fresh readings at their new limits: the same sum
        state.note(evse, SITE, f"tx-{evse[0]}", 3_200.0, T0 + 40)
    assert set(_verdicts(alarms, state, T0 + 40, T0 + 60)) == {Verdict.QUIET}


def test_a_limit_cut_raises_no_alarm_once_its_decreases_are_confirmed() -> None:
    state, evses = _full_site()
    alarms = SiteAlarms(AFTER_S)
    for n, evse in enumerate(evses):  # cut to 12 kW at T0 + 5 s, answered within 1 s
        state.hold(evse, f"tx-{evse[0]}", T0 + 5, T0 + 5.2 + 0.2 * n, [(T0 + 5, 3_000.0)])
    assert state.total_w(SITE, T0 + 7, capped=False) == 16_000.0
    assert set(_verdicts(alarms, state, T0 + 7, T0 + 39, limit_w=12_000.0)) == {Verdict.QUIET}


def test_a_station_above_its_applied_limit_raises_the_alarm_promptly() -> None:
    """CP-1 ignores its decrease: its next reading (4 kW, after the answer) counts in full, and the
    alarm is raised at the first pass more than `after_s` after that reading was noted."""
    state, evses = _full_site()
    alarms = SiteAlarms(AFTER_S)
    _reshare_for_a_fifth(state, evses)
    assert set(_verdicts(alarms, state, T0 + 10, T0 + 19)) == {Verdict.QUIET}
    state.note(evses[0], SITE, f"tx-{evses[0][0]}", 4_000.0, T0 + 20)  # fresh: in full
    verdicts = _verdicts(alarms, state, T0 + 20, T0 + 30)
    assert verdicts[:6] == [Verdict.QUIET] * 6 and verdicts[6] is Verdict.RAISE
    assert set(verdicts[7:]) == {Verdict.KEEP}


def test_fresh_readings_summing_above_the_limit_raise_the_alarm() -> None:
    """Every station obeys a limit of its own, but the fresh readings sum above the site limit
    (an unmanaged load, a wrong limit): raised after `after_s` and kept while they show it."""
    state, evses = _full_site()
    alarms = SiteAlarms(AFTER_S)
    for evse in evses:
        state.hold(evse, f"tx-{evse[0]}", T0 + 1, T0 + 1, [(T0 + 1, 4_500.0)])
        state.note(evse, SITE, f"tx-{evse[0]}", 4_500.0, T0 + 1 + READING_LAG_S + 1)
    verdicts = _verdicts(alarms, state, T0 + 4, T0 + 12)
    assert Verdict.RAISE in verdicts and verdicts.index(Verdict.RAISE) == 6


def test_a_raised_alarm_is_cleared_on_the_readings_as_taken() -> None:
    """Raised on fresh readings (4 x 4.5 kW); the corrective pass lowers everyone to 4 kW: counted
    at those limits the sum is under, but the readings still show 18 kW: kept until they do not."""
    state, evses = _full_site()
    alarms = SiteAlarms(AFTER_S)
    for evse in evses:
        state.note(evse, SITE, f"tx-{evse[0]}", 4_500.0, T0 + 1)
    assert Verdict.RAISE in _verdicts(alarms, state, T0 + 1, T0 + 8)
    for evse in evses:  # lowered to 3.5 kW by the corrective pass: their readings predate it
        state.hold(evse, f"tx-{evse[0]}", T0 + 9, T0 + 9, [(T0 + 9, 3_500.0)])
    assert state.total_w(SITE, T0 + 10) == 14_000.0
    assert set(_verdicts(alarms, state, T0 + 10, T0 + 20)) == {Verdict.KEEP}
    for evse in evses:
        state.note(evse, SITE, f"tx-{evse[0]}", 3_500.0, T0 + 21)
    assert _verdicts(alarms, state, T0 + 21, T0 + 22) == [Verdict.CLEAR, Verdict.QUIET]


def test_within_the_tolerance_is_not_over() -> None:
    alarms = SiteAlarms(0.0)
    bound_w = LIMIT_W + tolerance_w(LIMIT_W)
    assert tolerance_w(LIMIT_W) == 100.0 and tolerance_w(100_000.0) == 500.0
    assert alarms.judge(SITE, bound_w, bound_w, LIMIT_W, 0.0).verdict is Verdict.QUIET
    assert alarms.judge(SITE, bound_w + 1, bound_w + 1, LIMIT_W, 1.0).verdict is Verdict.QUIET
    assert alarms.judge(SITE, bound_w + 1, bound_w + 1, LIMIT_W, 2.0).verdict is Verdict.RAISE


def test_a_reading_that_arrives_after_the_answer_it_predates_is_capped() -> None:
    """A session's first reading, stored before its decrease was answered (or within
    `READING_LAG_S` after), reaches the watchdog after the answer (the event stream lags): it counts
    at most at the new limit, as it would had it come first. On main it counted in full until the
    station's next reading (it was capped only if the reading before it was)."""
    state, evses = _full_site()
    late = ("CP-5", 1)
    state.hold(late, "tx-CP-5", T0 + 4, T0 + 5, [(T0 + 4, 1_000.0)])  # lowered to 1 kW, answered T0 + 5
    state.note(late, SITE, "tx-CP-5", 7_000.0, T0 + 4.5)  # taken under the default, noted after
    assert state.total_w(SITE, T0 + 6) == 17_000.0
    state.note(late, SITE, "tx-CP-5", 7_000.0, T0 + 5 + READING_LAG_S / 2)  # may predate it too
    assert state.total_w(SITE, T0 + 8) == 17_000.0
    state.note(late, SITE, "tx-CP-5", 7_000.0, T0 + 5 + READING_LAG_S + 1)  # fresh: in full
    assert state.total_w(SITE, T0 + 9) == 23_000.0
