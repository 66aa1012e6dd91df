"""Per-pass costs that scaled with the site: the metered watchdog works from readings kept in
memory (`csms/smart_charging/metered.py`), and fallback re-shares are coalesced.

Against the in-memory store (no Redis): a pass reads only the EVSEs with a new reading, a changed
limit or a running clock, yet the site's metered sum counts every current reading, and a station
that keeps drawing above its limit is still marked non-compliant when it sends no new reading.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from csms.settings import CsmsSettings
from csms.smart_charging import budget, safety, watchdog
from csms.smart_charging.metered import MeteredState
from csms.smart_charging.pacing import RESHARE_MIN_S, pass_gap_s
from csms.smart_charging.service import SmartChargingService, Work
from evfleet.events import Event, EventType
from evfleet.store.memory import InMemoryStateStore
from evfleet.store.port import EvseId, StoredEvse
from tests.loop.test_service_unit import SITE, T0, FixedClock, Stations, _service, _session


class CountingStore(InMemoryStateStore):
    """The in-memory store, counting the EVSE records each read asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[EvseId] = []

    async def evse_records(self, evses: Sequence[EvseId]) -> list[StoredEvse]:
        self.read += list(evses)
        return await super().evse_records(evses)


def _reading(sid: str, ref: str, power_w: float) -> Event:
    return Event(type=EventType.METER_VALUES, station_id=sid, evse_id=1, tx_ref=ref, site_id=SITE, ts=T0,
                 data={"power_w": power_w})


def test_the_state_counts_every_reading_and_hands_out_each_once() -> None:
    state = MeteredState()
    state.note(("A", 1), SITE, "ref-a", 1000.0)
    state.note(("B", 1), None, "ref-b", 500.0)  # site not known yet
    assert state.take(SITE) == {("A", 1)} and state.unsited == {("B", 1)}
    state.place(("B", 1), SITE)
    assert state.total_w(SITE, 0.0) == 1500.0
    assert state.take(SITE) == set()  # nothing new: nothing to read
    state.recheck(("A", 1))  # its limit changed
    assert state.take(SITE) == {("A", 1)}
    state.stale[SITE] = {("B", 1)}
    assert state.total_w(SITE, 0.0) == 1000.0 and state.take(SITE) == {("B", 1)}
    state.drop(("A", 1))
    assert state.total_w(SITE, 0.0) == 0.0 and state.all_of(SITE) == [("B", 1)]


async def test_a_pass_reads_only_new_readings_and_still_marks_a_silent_overdraw() -> None:
    clock, store = FixedClock(), CountingStore()
    store.sites[SITE] = {"limit_kw": "1000"}
    refs = {f"CP-{i}": _session(store, f"CP-{i}", 10_000.0) for i in range(50)}
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    svc._noncompliant = budget.Persistence(0.2)
    for sid, ref in refs.items():  # everyone within its limit, CP-0 draws 15 kW on a 10 kW limit
        await svc.dispatch(_reading(sid, ref, 15_000.0 if sid == "CP-0" else 9_000.0))
    await watchdog.tick(svc, SITE)
    assert len(store.read) == 50
    assert watchdog.SITE_METERED_KW.labels(SITE)._value.get() == 15.0 + 49 * 9.0
    store.read.clear()
    await svc.dispatch(_reading("CP-7", refs["CP-7"], 8_000.0))
    await watchdog.tick(svc, SITE)
    assert sorted(store.read) == [("CP-0", 1), ("CP-7", 1)]  # the new reading and CP-0's running clock
    assert watchdog.SITE_METERED_KW.labels(SITE)._value.get() == 15.0 + 48 * 9.0 + 8.0
    await asyncio.sleep(0.3)  # CP-0 sends nothing new, but its clock runs out
    store.read.clear()
    await watchdog.tick(svc, SITE)
    assert store.read[0] == ("CP-0", 1) and len(store.read) == 51  # then the site's enforcement pass
    assert store.evses[("CP-0", 1)].get("noncompliant_w") == "15000.0"
    marked = [e for e in store.typed_events() if e.type == EventType.EVSE_NONCOMPLIANT]
    assert [e.station_id for e in marked] == ["CP-0"]


async def test_a_cleared_mark_waits_for_the_paced_re_share_instead_of_reading_the_site() -> None:
    """A station that complies again counts less (its limit, not its draw): nothing needs lowering,
    so the watchdog does not run an enforcement pass over the whole site for it (in fallback mode
    it asks for the paced re-share that hands out what it freed). At 5,000 realistic-mix stations
    the clears after a boot wave made a whole-site pass of nearly every watchdog tick."""
    clock, store = FixedClock(), CountingStore()
    store.sites[SITE] = {"limit_kw": "1000"}
    refs = {f"CP-{i}": _session(store, f"CP-{i}", 10_000.0) for i in range(50)}
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    svc._noncompliant, svc._compliant = budget.Persistence(0.0), budget.Persistence(0.0)
    for sid, ref in refs.items():
        await svc.dispatch(_reading(sid, ref, 15_000.0 if sid == "CP-0" else 9_000.0))
    await watchdog.tick(svc, SITE)  # CP-0's clock starts
    await asyncio.sleep(0.01)
    await watchdog.tick(svc, SITE)
    assert store.evses[("CP-0", 1)].get("noncompliant_w") == "15000.0"
    svc._fallback.add(SITE)
    await svc.dispatch(_reading("CP-0", refs["CP-0"], 9_000.0))  # within its limit again
    store.read.clear()
    await watchdog.tick(svc, SITE)  # its compliance clock starts
    await asyncio.sleep(0.01)
    await watchdog.tick(svc, SITE)
    assert "noncompliant_w" not in store.evses[("CP-0", 1)]
    assert set(store.read) == {("CP-0", 1)}  # no whole-site pass (the old code read all 50)
    assert SITE in svc.pacing.reshare_queued  # the freed power goes out with the paced re-share


async def test_an_ended_session_no_longer_counts() -> None:
    clock, store = FixedClock(), CountingStore()
    store.sites[SITE] = {"limit_kw": "1000"}
    ref = _session(store, "CP-1", 10_000.0)
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    await svc.dispatch(_reading("CP-1", ref, 9_000.0))
    await watchdog.tick(svc, SITE)
    assert watchdog.SITE_METERED_KW.labels(SITE)._value.get() == 9.0
    store.evses[("CP-1", 1)].update(tx_ref="", transaction_id="")  # the record no longer shows it
    await svc.dispatch(_reading("CP-1", ref, 9_000.0))
    await watchdog.tick(svc, SITE)
    assert watchdog.SITE_METERED_KW.labels(SITE)._value.get() == 0.0
    assert ("CP-1", 1) not in svc.metered.power


async def test_a_session_dropped_while_the_pass_reads_is_skipped() -> None:
    """A session that ends while the watchdog awaits its EVSE records (another event dropped its
    reading) is left out of the pass instead of raising KeyError and stopping the site's watchdog."""
    clock = FixedClock()

    class DroppingStore(CountingStore):
        async def evse_records(self, evses: Sequence[EvseId]) -> list[StoredEvse]:
            svc.metered.drop(("CP-1", 1))  # the session ends during the read
            return await super().evse_records(evses)

    store = DroppingStore()
    store.sites[SITE] = {"limit_kw": "1000"}
    refs = {sid: _session(store, sid, 10_000.0) for sid in ("CP-1", "CP-2")}
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    for sid, ref in refs.items():
        await svc.dispatch(_reading(sid, ref, 9_000.0))
    await watchdog.tick(svc, SITE)
    assert watchdog.SITE_METERED_KW.labels(SITE)._value.get() == 9.0  # CP-2 still judged and counted
    assert ("CP-1", 1) not in svc.metered.power


async def test_sessions_starting_in_fallback_mode_share_one_re_share_per_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A site in fallback mode re-shares after sessions start or end, at most once per
    `RESHARE_MIN_S` (each pass reads the whole site), and not when an interim pass (which in
    fallback mode re-shares every session) ran after the ask; outside fallback mode not at all."""
    clock, store = FixedClock(), InMemoryStateStore()
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    passes: list[float] = []

    async def share_fairly(_svc: object, site_id: str, *args: object, **kwargs: object) -> int:
        passes.append(time.monotonic())
        return 0

    monkeypatch.setattr(safety, "share_fairly", share_fairly)
    svc.reshare_soon(SITE)
    await asyncio.sleep(0.05)
    assert passes == []  # not in fallback mode
    svc._fallback.add(SITE)
    for _ in range(5):
        svc.reshare_soon(SITE)
    await asyncio.sleep(0.1)
    assert len(passes) == 1
    for _ in range(5):
        svc.reshare_soon(SITE)
    await asyncio.sleep(0.3)
    assert len(passes) == 1  # the next waits for RESHARE_MIN_S after the first
    await asyncio.sleep(RESHARE_MIN_S)
    assert len(passes) == 2 and passes[1] - passes[0] >= RESHARE_MIN_S - 0.05
    svc.reshare_soon(SITE)  # asked now, due in a second ...
    await svc._handle(SITE, Work.INTERIM, None)  # ... but an interim pass re-shares everyone first
    assert len(passes) == 3
    await asyncio.sleep(RESHARE_MIN_S + 0.2)
    assert len(passes) == 3 and not svc.pacing.reshare_queued
    svc.reshare_soon(SITE)
    await svc._handle(SITE, Work.INTERIM, None)
    svc.reshare_soon(SITE)  # a session ends after that interim pass: merged into the queued re-share
    await asyncio.sleep(RESHARE_MIN_S + 0.2)
    assert len(passes) == 5  # the re-share ran (the interim pass started before the last ask)


async def test_interim_passes_are_at_most_one_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Interims falling due share a pass, and passes (each reads the whole site) are at least
    `RESHARE_MIN_S` apart: a session whose interim falls due meanwhile waits for the next."""
    clock, store = FixedClock(), InMemoryStateStore()
    settings = CsmsSettings(default_site=SITE, interim_profile_after_s=0.05)
    svc = SmartChargingService(store, clock, settings, "node-a", Stations(clock, 1e9))  # type: ignore[arg-type]
    passes: list[tuple[float, list[tuple[str, int]]]] = []

    async def share_fairly(_svc: object, site_id: str, due: Any = None, **kwargs: object) -> int:
        passes.append((time.monotonic(), sorted(due or {})))
        return 0

    monkeypatch.setattr(safety, "share_fairly", share_fairly)

    def started(sid: str) -> Event:
        return Event(type=EventType.TX_STARTED, station_id=sid, evse_id=1, tx_ref=f"{sid}:tx:0",
                     site_id=SITE, ts=T0)

    svc.start_interim_timer(SITE, started("CP-1"))
    await asyncio.sleep(0.3)
    svc.start_interim_timer(SITE, started("CP-2"))
    svc.start_interim_timer(SITE, started("CP-3"))
    await asyncio.sleep(RESHARE_MIN_S + 0.3)
    assert [p[1] for p in passes] == [[("CP-1", 1)], [("CP-2", 1), ("CP-3", 1)]]
    assert passes[1][0] - passes[0][0] >= RESHARE_MIN_S - 0.05


async def test_a_slow_whole_site_pass_spaces_the_next_by_the_duty_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-share pass that takes d seconds of CPU (a large site) is followed by the next no sooner
    than `pass_gap_s(d)` after its start, so whole-site passes take at most `WHOLE_SITE_DUTY` of the
    node; the time it spends awaiting (answers) does not count."""
    clock, store = FixedClock(), InMemoryStateStore()
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    svc._fallback.add(SITE)
    passes: list[float] = []
    pass_s = 0.6

    async def share_fairly(_svc: object, site_id: str, *args: object, **kwargs: object) -> int:
        passes.append(time.monotonic())
        await asyncio.sleep(0.3)  # awaiting answers costs no CPU: it does not count
        cpu = time.thread_time()
        while time.thread_time() - cpu < pass_s:  # reading and sharing a large site
            pass
        return 0

    monkeypatch.setattr(safety, "share_fairly", share_fairly)
    assert pass_gap_s(0.1) == RESHARE_MIN_S and pass_gap_s(pass_s) == pytest.approx(pass_s * 3)
    svc.reshare_soon(SITE)
    while SITE not in svc.pacing.gap:  # the first pass runs
        await asyncio.sleep(0.05)
    svc.reshare_soon(SITE)  # sessions started during the slow pass
    while len(passes) < 2:
        await asyncio.sleep(0.05)
    gap = svc.pacing.gap[SITE]
    # 0.6 CPU s -> 1.8 s; the 0.3 s awaited would make it 2.7 s if wall time counted
    assert pass_gap_s(pass_s) - 0.01 <= gap < pass_gap_s(pass_s + 0.3) - 0.3
    assert passes[1] - passes[0] >= gap - 0.05  # RESHARE_MIN_S alone: 1 s


async def test_a_reading_stored_before_the_default_arrived_marks_no_one_the_next_one_is_judged() -> None:
    """After a boot wave: CP-1's session draws 7.2 kW before its 0 W default arrives (no limit yet:
    it counts at its maximum), and that reading is judged only after the default was accepted; it
    sends its next reading 30 s later. The old reading shows nothing about the default, so no clock
    starts and CP-1 is not marked however long it waits (fails on the old code: marked after
    `noncompliant_after_s` on that one reading). A reading stored after the default that is above
    it is judged as before: marked once its clock runs out."""
    clock, store = FixedClock(), CountingStore()
    store.sites[SITE] = {"limit_kw": "1000"}
    ref = "CP-1:tx-1"
    store.add_evse("CP-1", 1, site_id=SITE, max_power_w="22000", rate_unit="W", tx_ref=ref,
                   transaction_id="tx-1")
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    svc._noncompliant = budget.Persistence(0.2)
    await svc.dispatch(_reading("CP-1", ref, 7_200.0))  # stored at T0, not judged yet
    clock.t += timedelta(seconds=2)
    await svc.ensure_defaults(SITE)  # the boot wave's default: 0 W, accepted at T0 + 2 s
    await asyncio.gather(*svc.defaults.tasks)
    assert store.evses[("CP-1", 1)]["default_limit_w"] == "0.0"
    for _ in range(3):
        await watchdog.tick(svc, SITE)
        await asyncio.sleep(0.15)
    assert "noncompliant_w" not in store.evses[("CP-1", 1)]
    clock.t += timedelta(seconds=30)  # its next reading: still 7.2 kW against the 0 W default
    await svc.dispatch(Event(type=EventType.METER_VALUES, station_id="CP-1", evse_id=1, tx_ref=ref,
                             site_id=SITE, ts=clock.t, data={"power_w": 7_200.0}))
    for _ in range(3):
        await watchdog.tick(svc, SITE)
        await asyncio.sleep(0.15)
    assert store.evses[("CP-1", 1)].get("noncompliant_w") == "7200.0"


async def test_a_reading_before_a_new_limit_still_marks_a_station_above_the_old_and_the_new_one() -> None:
    """A station that ignores its limits while the csms keeps changing them (every new TxProfile
    answered after its last reading) is still marked: a reading taken before the limit now in force
    is judged against the higher of that limit and the one before, 6 kW -> 5 kW here; 11 kW is
    above both (fails if such readings are skipped). One within the old limit (5.8 kW) is not."""
    clock, store = FixedClock(), CountingStore()
    store.sites[SITE] = {"limit_kw": "1000"}
    refs = {sid: _session(store, sid, 5_000.0) for sid in ("CP-1", "CP-2")}
    for sid in refs:  # 5 kW answered at T0 + 2 s, 6 kW before it
        store.profiles[(sid, 1)].update({"answered_at": (T0 + timedelta(seconds=2)).isoformat(),
                                         "previous_series_w": [[T0.timestamp() - 60, 6_000.0]]})
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    svc._noncompliant = budget.Persistence(0.2)
    await svc.dispatch(_reading("CP-1", refs["CP-1"], 11_000.0))  # stored at T0
    await svc.dispatch(_reading("CP-2", refs["CP-2"], 5_800.0))
    for _ in range(3):
        await watchdog.tick(svc, SITE)
        await asyncio.sleep(0.15)
    assert store.evses[("CP-1", 1)].get("noncompliant_w") == "11000.0"
    assert "noncompliant_w" not in store.evses[("CP-2", 1)]


async def test_a_reading_under_an_earlier_period_of_a_step_profile_is_judged_against_that_period() -> None:
    """A step profile: 2,484 W (3.6 A) until T0 + 10 s, then 1,932 W (2.8 A). CP-1 metered 2,484 W at
    T0, within the period then in force, and sends its next reading 30 s later; the watchdog judges the
    stored reading after the step: CP-1 is not marked however long it waits (fails on the old code,
    which judged it against 1,932 W: 482 such marks in one 5,000-station harness run). CP-2 metered
    3,000 W at T0, above both periods: it is marked."""
    clock, store = FixedClock(), CountingStore()
    store.sites[SITE] = {"limit_kw": "1000"}
    refs = {sid: _session(store, sid, 2_484.0) for sid in ("CP-1", "CP-2")}
    for sid in refs:
        store.profiles[(sid, 1)].update({
            "applied_series_w": [[T0.timestamp() - 60, 2_484.0], [T0.timestamp() + 10, 1_932.0]],
            "answered_at": (T0 - timedelta(seconds=59)).isoformat()})
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    svc._noncompliant = budget.Persistence(0.2)
    await svc.dispatch(_reading("CP-1", refs["CP-1"], 2_484.0))  # taken at T0
    await svc.dispatch(_reading("CP-2", refs["CP-2"], 3_000.0))
    clock.t += timedelta(seconds=20)  # after the step down, before the next readings
    for _ in range(3):
        await watchdog.tick(svc, SITE)
        await asyncio.sleep(0.15)
    assert "noncompliant_w" not in store.evses[("CP-1", 1)]
    assert store.evses[("CP-2", 1)].get("noncompliant_w") == "3000.0"
