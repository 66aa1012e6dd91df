"""The site's metered sum (`MeteredState.total_w`, the over-limit alarm) is kept as readings come,
not summed over the site's EVSEs in every watchdog pass (issue 14: 17-27 ms of CPU a second on the
20,000-EVSE site). After any sequence of readings, site changes, ended sessions, stale sessions,
accepted profiles (caps) and non-compliance marks it equals the full sum over the site."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from csms.smart_charging import planner
from csms.smart_charging.metered import MeteredState
from evfleet.store.port import EvseId

SITES = ("north", "south")
EVSES = [(f"CP-{i}", 1) for i in range(6)]


def full_sum(state: MeteredState, site_id: str, now_s: float, capped: bool = True) -> float:
    """The sum over every EVSE of the site, as each pass computed it before the kept sum."""
    stale = state.stale.get(site_id, set())
    total = 0.0
    for e in state.members.get(site_id, ()):
        if e in stale or e not in state.power:
            continue
        w = state.power[e][1]
        cap = state.caps.get(e) if capped else None
        if cap is not None and e not in state.untrusted:
            w = min(w, planner.value_at(cap, now_s))
        total += w
    return total


EVSE = st.sampled_from(EVSES)
OP = st.one_of(
    st.tuples(st.just("note"), EVSE, st.sampled_from([*SITES, None]), st.sampled_from(["t1", "t2"]),
              st.floats(0, 22_000, allow_nan=False).map(lambda w: round(w, 3)), st.floats(90, 110)),
    st.tuples(st.just("place"), EVSE, st.sampled_from(SITES)),
    st.tuples(st.just("drop"), EVSE),
    st.tuples(st.just("stale"), st.sampled_from(SITES), st.frozensets(EVSE, max_size=3)),
    st.tuples(st.just("hold"), EVSE, st.sampled_from(["t1", "t2"]),
              st.floats(0, 11_000).map(lambda w: round(w, 1))),
    st.tuples(st.just("untrusted"), EVSE, st.booleans()),
)


def apply(state: MeteredState, op: tuple) -> None:
    kind, *args = op
    if kind == "note":
        evse, site, ref, power_w, at_s = args
        state.note(evse, site, ref, power_w, at_s)
    elif kind == "place":
        state.place(*args)
    elif kind == "drop":
        state.drop(*args)
    elif kind == "stale":  # as the watchdog sets it after a pass
        site, evses = args
        state.stale[site] = set(evses)
    elif kind == "hold":  # a TxProfile answered at 100 s: a reading stored before 102 s is capped
        evse, ref, limit_w = args
        state.hold(evse, ref, 95.0, 100.0, [(0.0, limit_w), (105.0, limit_w / 2)])
    elif kind == "untrusted":
        evse, marked = args
        (state.untrusted.add if marked else state.untrusted.discard)(evse)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(OP, max_size=40), now_s=st.sampled_from([100.0, 110.0]))
def test_the_kept_sum_is_the_full_sum_after_any_sequence(ops: list[tuple], now_s: float) -> None:
    state = MeteredState()
    for op in ops:
        apply(state, op)
        for site in SITES:
            for capped in (True, False):
                assert abs(state.total_w(site, now_s, capped) - full_sum(state, site, now_s, capped)) < 0.01


class NoLoop(set[EvseId]):
    """A site's EVSEs that may be asked about, not looped over."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("total_w looped over every EVSE of the site")


def test_a_pass_does_not_loop_over_the_site() -> None:
    state = MeteredState()
    for i in range(1000):
        state.note((f"CP-{i}", 1), "north", f"t{i}", 7200.0, 50.0)
    state.hold(("CP-3", 1), "t3", 95.0, 100.0, [(0.0, 3000.0)])
    state.stale["north"] = {("CP-4", 1)}
    state.members["north"] = NoLoop(state.members["north"])
    assert state.total_w("north", 100.0) == 998 * 7200.0 + 3000.0
