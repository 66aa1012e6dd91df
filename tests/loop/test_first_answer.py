"""Issue 12's fast first answer: needs that arrive during a longer pass are answered between its rounds.

Against the in-memory store with the `Stations` stand-in of test_service_unit, which checks after
every accepted profile that the limits the stations hold sum to at most the site limit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csms.commands import CommandReply
from csms.smart_charging import safety
from evfleet.events import Event, EventType
from evfleet.keys import tx_ref
from evfleet.store.memory import InMemoryStateStore
from evfleet.txprofile import iso_z
from tests.loop.test_service_unit import SITE, T0, FixedClock, Stations, _service, _session


class ArrivingStations(Stations):
    """Stations where an EV announces its needs while the first profile of a pass is on its way."""

    def __init__(self, clock: FixedClock, site_limit_w: float, arrive_on: str,
                 arrival: tuple[str, int]) -> None:
        super().__init__(clock, site_limit_w)
        self.arrive_on, self.arrival = arrive_on, arrival
        self.svc: Any = None

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> CommandReply:
        if station_id == self.arrive_on and self.svc is not None:  # what `dispatch` does for the needs
            self.svc._provisional_due.setdefault(SITE, set()).add(self.arrival)
            self.svc = None
        return await super().call(station_id, action, payload, timeout_s)


def _arrival(store: InMemoryStateStore, sid: str, max_power_w: float = 22_000.0) -> str:
    """A session that just started on `sid` (0 W default confirmed, no TxProfile yet)."""
    ref = tx_ref(sid, f"tx-{sid}")
    store.add_evse(sid, 1, site_id=SITE, max_power_w=str(max_power_w), rate_unit="W", tx_ref=ref,
                   transaction_id=f"tx-{sid}", default_limit_w="0.0")
    return ref


async def test_needs_during_a_plan_are_answered_between_its_rounds_from_what_the_plan_leaves() -> None:
    """30 kW site. The plan lowers CP-1 15 -> 5 kW and raises CP-2 10 -> 20 kW (two rounds: the
    decrease is confirmed first). CP-9's needs arrive while the decrease is on its way: its
    provisional share goes out before the plan's increase (fails if it waits for the whole plan),
    and it is only what the plan leaves once applied, 5 kW (fails if it takes the power the plan
    freed for CP-2, which would then be blocked). At no answer do the limits exceed 30 kW."""
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "30"}
    refs = {sid: _session(store, sid, w) for sid, w in (("CP-1", 15_000.0), ("CP-2", 10_000.0))}
    _arrival(store, "CP-9")
    stations = ArrivingStations(clock, 30_000.0, arrive_on="CP-1", arrival=("CP-9", 1))
    stations.limits_w = {"CP-1": 15_000.0, "CP-2": 10_000.0}
    store.plans[SITE] = {"plan_id": "p1", "start": iso_z(T0), "step_s": 900, "limit_kw": 30.0,
                         "evses": {"CP-1/1": [5.0, 5.0], "CP-2/1": [20.0, 20.0]},
                         "transactions": {"CP-1/1": refs["CP-1"], "CP-2/1": refs["CP-2"]}}
    svc = _service(store, stations, clock)
    stations.svc = svc
    stats = await svc.apply_plan(SITE)
    assert [sid for sid, _ in stations.sent] == ["CP-1", "CP-9", "CP-2"]
    assert stats["accepted"] == 2 and stats["blocked"] == 0
    assert stations.limits_w == pytest.approx({"CP-1": 5_000.0, "CP-2": 20_000.0, "CP-9": 5_000.0})
    assert stations.worst_sum_w <= 30_000.0 + 1.0
    assert store.profiles[("CP-9", 1)]["kind"] == "provisional"
    assert SITE not in svc._provisional_due  # served: the pass after the plan does not send it again


async def test_a_full_site_answers_the_needs_at_once_with_zero() -> None:
    """No headroom left by the plan: the EV still gets its answer between the rounds, a 0 W
    provisional profile (it waits for its plan), and is marked starved so freed power reaches it."""
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "30"}
    refs = {sid: _session(store, sid, w) for sid, w in (("CP-1", 15_000.0), ("CP-2", 15_000.0))}
    _arrival(store, "CP-9")
    stations = ArrivingStations(clock, 30_000.0, arrive_on="CP-1", arrival=("CP-9", 1))
    stations.limits_w = {"CP-1": 15_000.0, "CP-2": 15_000.0}
    store.plans[SITE] = {"plan_id": "p1", "start": iso_z(T0), "step_s": 900, "limit_kw": 30.0,
                         "evses": {"CP-1/1": [10.0], "CP-2/1": [20.0]},
                         "transactions": {"CP-1/1": refs["CP-1"], "CP-2/1": refs["CP-2"]}}
    svc = _service(store, stations, clock)
    stations.svc = svc
    await svc.apply_plan(SITE)
    assert [sid for sid, _ in stations.sent] == ["CP-1", "CP-9", "CP-2"]
    assert stations.limits_w == pytest.approx({"CP-1": 10_000.0, "CP-2": 20_000.0, "CP-9": 0.0})
    assert stations.worst_sum_w <= 30_000.0 + 1.0
    assert svc._starved[SITE] == {("CP-9", 1)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.lists(st.integers(0, 22), min_size=1, max_size=5), data=st.data(),
       limit_kw=st.integers(10, 60), ev_cap_kw=st.integers(1, 22))
def test_an_arrival_during_any_plan_keeps_the_limit_and_leaves_the_plan_whole(
        old: list[int], data: st.DataObject, limit_kw: int, ev_cap_kw: int) -> None:
    """Property: whatever the limits before and after a plan, and during whichever of its calls the
    needs arrive, the limits the stations hold never sum above the site limit, the EV gets its
    answer during the pass, and the plan is never blocked by it (the share is what the plan leaves)."""
    new = data.draw(st.lists(st.integers(0, 22), min_size=len(old), max_size=len(old)))
    if sum(old) > limit_kw or sum(new) > limit_kw:  # a plan fits the site, and so did the last one
        return
    sids = [f"CP-{i}" for i in range(len(old))]
    arrive_on = data.draw(st.sampled_from(sids))
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": str(limit_kw)}
    refs = {sid: _session(store, sid, kw * 1000.0) for sid, kw in zip(sids, old, strict=True)}
    _arrival(store, "CP-9", max_power_w=ev_cap_kw * 1000.0)
    stations = ArrivingStations(clock, limit_kw * 1000.0, arrive_on=arrive_on, arrival=("CP-9", 1))
    stations.limits_w = {sid: kw * 1000.0 for sid, kw in zip(sids, old, strict=True)}
    store.plans[SITE] = {"plan_id": "p", "start": iso_z(T0), "step_s": 900, "limit_kw": float(limit_kw),
                         "evses": {f"{sid}/1": [float(kw)] for sid, kw in zip(sids, new, strict=True)},
                         "transactions": {f"{sid}/1": refs[sid] for sid in sids}}
    svc = _service(store, stations, clock)
    stations.svc = svc
    stats = asyncio.run(svc.apply_plan(SITE))
    assert stations.worst_sum_w <= limit_kw * 1000.0 + 1.0
    assert sum(stations.limits_w.values()) <= limit_kw * 1000.0 + 1.0
    assert stats["blocked"] == 0
    if stations.svc is None:  # the needs arrived (their station was sent a profile): answered in the pass
        assert "CP-9" in [sid for sid, _ in stations.sent]
        assert stations.limits_w["CP-9"] == pytest.approx(min(ev_cap_kw, limit_kw - sum(new)) * 1000.0)


async def test_a_share_rising_by_less_than_k16_is_not_resent_a_lower_one_always_is() -> None:
    """K16 for shares: CP-1 holds a 10 kW provisional share; a re-share worth 10.3 kW sends nothing
    (a rise below the 0.5 kW threshold; the lower limit it keeps raises nothing), one worth 10.6 kW
    is sent, and one worth 10.4 kW after that is sent too (a decrease always goes)."""
    clock, store = FixedClock(), InMemoryStateStore()
    _session(store, "CP-1", 10_000.0, kind="provisional")
    stations = Stations(clock, 30_000.0)
    stations.limits_w = {"CP-1": 10_000.0}
    svc = _service(store, stations, clock)
    for limit_kw, sent in ((10.3, 0), (10.6, 1), (10.4, 2)):
        store.sites[SITE] = {"limit_kw": str(limit_kw)}
        await safety.share_fairly(svc, SITE, arrivals={("CP-1", 1)})
        assert len(stations.sent) == sent, limit_kw
    assert stations.limits_w["CP-1"] == pytest.approx(10_400.0)


class SilentStation(Stations):
    """Stations of which one (`silent`) never answers a TxProfile until `release` is set. As a
    station may apply a profile it has not answered, it is taken to hold max(old, new) meanwhile
    (the worst sum the site could see)."""

    def __init__(self, clock: FixedClock, site_limit_w: float, silent: str) -> None:
        super().__init__(clock, site_limit_w)
        self.silent = silent
        self.release = asyncio.Event()
        self.out = asyncio.Event()

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> CommandReply:
        if station_id != self.silent:
            return await super().call(station_id, action, payload, timeout_s)
        old = self.limits_w.get(station_id, 0.0)
        reply = await super().call(station_id, action, payload, timeout_s)
        new = self.limits_w[station_id]
        self.limits_w[station_id] = max(old, new)
        self.worst_sum_w = max(self.worst_sum_w, sum(self.limits_w.values()))
        self.out.set()
        await self.release.wait()
        self.limits_w[station_id] = new
        return reply


async def test_a_slow_station_does_not_hold_the_first_answer_and_its_pass_awaits_it() -> None:
    """40 kW site. The plan lowers CP-1 15 -> 5 kW and raises CP-2 10 -> 20 kW; CP-1 answers only
    when released (up to the 30 s call timeout in production). CP-9's needs arrive while CP-1's
    profile is out: its provisional share goes out at once (fails if the pass serves no needs
    while it awaits its batch), counting CP-1 at max(15, 5) and CP-2 at its target, 20 kW: 5 kW.
    The pass itself awaits CP-1's answer (no pass goes on without it, so no other profile can
    overtake it), then ends with every change applied. At no instant do the limits the stations
    may hold (CP-1 at max(old, new) while out) sum above 40 kW."""
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "40"}
    refs = {sid: _session(store, sid, w) for sid, w in (("CP-1", 15_000.0), ("CP-2", 10_000.0))}
    _arrival(store, "CP-9")
    stations = SilentStation(clock, 40_000.0, silent="CP-1")
    stations.limits_w = {"CP-1": 15_000.0, "CP-2": 10_000.0}
    store.plans[SITE] = {"plan_id": "p1", "start": iso_z(T0), "step_s": 900, "limit_kw": 40.0,
                         "evses": {"CP-1/1": [5.0, 5.0], "CP-2/1": [20.0, 20.0]},
                         "transactions": {"CP-1/1": refs["CP-1"], "CP-2/1": refs["CP-2"]}}
    svc = _service(store, stations, clock)
    loop = asyncio.get_running_loop()
    plan = asyncio.create_task(svc.apply_plan(SITE))
    await asyncio.wait_for(stations.out.wait(), 2)
    arrived = loop.time()
    svc.needs_due(SITE, ("CP-9", 1))  # what `dispatch` does with the needs
    while "CP-9" not in [sid for sid, _ in stations.sent]:
        assert loop.time() - arrived < 0.2, "the first answer waited for the silent station"
        await asyncio.sleep(0.005)
    assert stations.limits_w["CP-9"] == pytest.approx(5_000.0)
    await asyncio.sleep(0.3)
    assert not plan.done()  # the pass awaits CP-1's answer
    held = store.profiles.get(("CP-1", 1), {})
    assert held.get("limit_w") != pytest.approx(5_000.0)  # not recorded before its answer
    stations.release.set()
    stats = await asyncio.wait_for(plan, 2)
    assert stats["blocked"] == 0
    assert stations.limits_w == pytest.approx({"CP-1": 5_000.0, "CP-2": 20_000.0, "CP-9": 5_000.0})
    assert store.profiles[("CP-1", 1)]["limit_w"] == pytest.approx(5_000.0)
    assert stations.worst_sum_w <= 40_000.0 + 1.0


async def test_needs_in_a_read_of_the_stream_are_flagged_before_the_read_is_dispatched() -> None:
    """A read of the stream holds up to 500 events, dispatched one by one (with Redis round trips):
    new needs of a site this node holds are flagged for their provisional share first, and an idle
    site task is woken; repeated and rejected needs, and sites not known held, are not."""
    clock, store = FixedClock(), InMemoryStateStore()
    svc = _service(store, Stations(clock, 30_000.0), clock)
    svc.held.add(SITE)
    svc._lease_fresh_until[SITE] = svc.liveness.fresh_until = time.monotonic() + 5.0

    def needs(sid: str, site: str = SITE, status: str = "Processing") -> Event:
        return Event(type=EventType.EV_CHARGING_NEEDS, station_id=sid, evse_id=1, tx_ref=f"{sid}:tx",
                     site_id=site, ts=T0, data={"status": status})

    svc.flag_needs([needs("CP-1"), needs("CP-2", status="Repeated"), needs("CP-3", status="Rejected"),
                    needs("CP-4", site="elsewhere")])
    assert svc._provisional_due == {SITE: {("CP-1", 1)}}
    site = svc.sites[SITE]
    assert site.queue.qsize() == 1 and site.task is not None
    site.task.cancel()
