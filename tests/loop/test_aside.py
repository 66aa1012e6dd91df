"""Calls beside a site's task (`csms/smart_charging/aside.py`): what the site counts and sends
while one is out. In-memory store, the `Stations` stand-ins of test_service_unit/test_first_answer
(they check after every accepted profile that the limits the stations hold fit the site)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from csms.smart_charging.service import SmartChargingService
from evfleet.events import Event, EventType
from evfleet.store.memory import InMemoryStateStore
from evfleet.txprofile import iso_z
from tests.loop.test_first_answer import SilentStation
from tests.loop.test_service_unit import SITE, T0, FixedClock, _service, _session


def _breach(clock: FixedClock, ref: str, limit_w: float) -> Event:
    """The EV of CP-1 plans `limit_w` from now (NotifyEVChargingSchedule)."""
    data = {"time_base": iso_z(clock.t), "schedule": {
        "startSchedule": iso_z(clock.t), "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_w}]}}
    return Event(type=EventType.EV_CHARGING_SCHEDULE, station_id="CP-1", evse_id=1, transaction_id="tx-CP-1",
                 tx_ref=ref, site_id=SITE, ts=clock.t, data=data)


def _plan_both_at_10_kw(store: InMemoryStateStore, refs: dict[str, str]) -> None:
    """The site's plan p1: CP-1 and CP-2 at 10 kW each."""
    store.plans[SITE] = {"plan_id": "p1", "start": iso_z(T0), "step_s": 900, "limit_kw": 20.0,
                         "evses": {"CP-1/1": [10.0], "CP-2/1": [10.0]},
                         "transactions": {"CP-1/1": refs["CP-1"], "CP-2/1": refs["CP-2"]}}


async def _planned_with_cp1_silent() -> tuple[FixedClock, InMemoryStateStore, dict[str, str],
                                              SilentStation, SmartChargingService]:
    """20 kW site, CP-1 and CP-2 planned at 10 kW each and answered; from then on CP-1 answers
    nothing until `release` is set again (`out` is set by its next call)."""
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "20"}
    refs = {sid: _session(store, sid, 8_000.0) for sid in ("CP-1", "CP-2")}
    stations = SilentStation(clock, 20_000.0, silent="CP-1")
    stations.release.set()
    stations.limits_w = {"CP-1": 8_000.0, "CP-2": 8_000.0}
    svc = _service(store, stations, clock)
    svc.held.add(SITE)
    _plan_both_at_10_kw(store, refs)
    await svc.apply_plan(SITE)
    stations.release.clear()
    stations.out.clear()  # set by the plan's call to CP-1; callers wait for the next call's own
    return clock, store, refs, stations, svc


async def test_a_plan_while_a_k17_resend_is_out_leaves_that_evse_alone_until_its_answer() -> None:
    """20 kW site, CP-1 and CP-2 planned at 10 kW each. CP-1's EV breaches (K17): our 10 kW profile
    is re-sent and CP-1 does not answer. The check returns at once (fails if it awaits the answer).
    A new plan (CP-1 4 kW, CP-2 16 kW) comes meanwhile: nothing goes to CP-1 while its call is out
    (one profile out per EVSE), CP-2's rise does not fit while CP-1 counts 10 kW, so the plan is
    blocked, not waited on. Once CP-1 answers, the site applies the plan (decrease first). The
    limits the stations may hold (CP-1 at max(old, new) while out) never sum above 20 kW."""
    clock, store, refs, stations, svc = await _planned_with_cp1_silent()
    clock.t += timedelta(seconds=5)
    sent = len(stations.sent)
    record = await asyncio.wait_for(svc.check_ev_schedule(SITE, _breach(clock, refs["CP-1"], 22_000.0)), 1)
    assert record is not None and record["within_limits"] is False
    await asyncio.wait_for(stations.out.wait(), 1)  # the re-send is at CP-1, unanswered
    assert [sid for sid, _ in stations.sent[sent:]] == ["CP-1"]
    store.plans[SITE] = {"plan_id": "p2", "start": iso_z(T0), "step_s": 900, "limit_kw": 20.0,
                         "evses": {"CP-1/1": [4.0], "CP-2/1": [16.0]},
                         "transactions": {"CP-1/1": refs["CP-1"], "CP-2/1": refs["CP-2"]}}
    stats = await asyncio.wait_for(svc.apply_plan(SITE), 1)
    assert stats["blocked"] == 2 and stats["sent"] == 0
    assert [sid for sid, _ in stations.sent[sent:]] == ["CP-1"]  # nothing else went to CP-1
    assert SITE in svc._plan_blocked
    stations.release.set()  # CP-1 answers: the site applies the blocked plan (`Work.ASIDE_DONE`)
    for _ in range(200):
        if stations.limits_w.get("CP-2") == pytest.approx(16_000.0):
            break
        await asyncio.sleep(0.01)
    assert stations.limits_w == pytest.approx({"CP-1": 4_000.0, "CP-2": 16_000.0})
    assert [sid for sid, _ in stations.sent[sent:]] == ["CP-1", "CP-1", "CP-2"]
    assert stations.worst_sum_w <= 20_000.0 + 1.0
    assert not svc.aside.out and not svc.aside.tasks
    svc.sites[SITE].task.cancel()  # type: ignore[union-attr]


async def test_while_a_call_is_out_its_evse_counts_at_least_what_that_profile_allows() -> None:
    """The K17 re-send of a profile above what the EVSE's record counts (5 kW counted, the accepted
    profile allows 12 kW): while CP-1 has not answered, every read counts it at 12 kW (fails if a
    read counts the record only), and an arrival's share is what that leaves (20 - 12 kW, not
    20 - 5 kW); after the answer it counts its record again."""
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "20"}
    ref = _session(store, "CP-1", 10_000.0)
    stations = SilentStation(clock, 20_000.0, silent="CP-1")
    stations.release.set()
    stations.limits_w = {"CP-1": 10_000.0}
    svc = _service(store, stations, clock)
    svc.held.add(SITE)
    store.plans[SITE] = {"plan_id": "p1", "start": iso_z(T0), "step_s": 900, "limit_kw": 20.0,
                         "evses": {"CP-1/1": [12.0]}, "transactions": {"CP-1/1": ref}}
    await svc.apply_plan(SITE)
    record = store.profiles[("CP-1", 1)]
    record["applied_series_w"] = [[T0.timestamp(), 5_000.0]]  # counted lower than the profile allows
    stations.release.clear()
    stations.out.clear()  # set by the first plan's call to CP-1; wait for the re-send's own
    clock.t += timedelta(seconds=5)
    await svc.check_ev_schedule(SITE, _breach(clock, ref, 22_000.0))
    await asyncio.wait_for(stations.out.wait(), 1)
    now_s = clock.timestamp()
    info = (await svc.site_evses(SITE))["CP-1/1"]
    assert info.applied(now_s)[-1][1] == pytest.approx(12_000.0)
    from tests.loop.test_first_answer import _arrival

    _arrival(store, "CP-9")
    svc.needs_due(SITE, ("CP-9", 1))
    from csms.smart_charging import safety

    await safety.share_fairly(svc, SITE, arrivals={("CP-9", 1)})
    assert stations.limits_w["CP-9"] == pytest.approx(8_000.0)
    assert stations.worst_sum_w <= 20_000.0 + 1.0
    stations.release.set()
    await svc.aside.settled(SITE)
    assert not svc.aside.out
    info = (await svc.site_evses(SITE))["CP-1/1"]
    assert info.out_series is None and info.applied(now_s)[-1][1] == pytest.approx(12_000.0)


async def test_a_refusal_of_a_call_beside_the_task_wakes_the_site_to_lower_the_others() -> None:
    """CP-1 answers the K17 re-send with NotImplemented: it now counts at its maximum (22 kW on a
    20 kW site), so the site's task lowers CP-2 with no other event to wake it (fails if the
    refusal waits for the site's next piece of work)."""
    from tests.loop.test_service_unit import Stations

    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "20"}
    refs = {sid: _session(store, sid, 8_000.0) for sid in ("CP-1", "CP-2")}
    stations = Stations(clock, 20_000.0)
    svc = _service(store, stations, clock)
    svc.held.add(SITE)
    _plan_both_at_10_kw(store, refs)
    await svc.apply_plan(SITE)
    stations.answers["CP-1"] = "NotImplemented"
    clock.t += timedelta(seconds=5)
    await svc.check_ev_schedule(SITE, _breach(clock, refs["CP-1"], 22_000.0))
    await svc.aside.settled(SITE)
    assert store.evses[("CP-1", 1)]["steerable"] == "0"
    for _ in range(200):
        if stations.limits_w["CP-2"] < 1.0:
            break
        await asyncio.sleep(0.01)
    assert stations.limits_w["CP-2"] == pytest.approx(0.0)
    svc.sites[SITE].task.cancel()  # type: ignore[union-attr]


async def test_the_probe_of_a_silent_refusing_station_does_not_hold_the_watchdog() -> None:
    """CP-1 refused profiles; its backoff has passed, so the watchdog probes it with a TxProfile at
    its maximum, and CP-1 does not answer. The watchdog pass ends at once (fails when it awaits the
    probe: up to the call timeout per refusing EVSE), and a second pass sends no second probe while
    the first is out."""
    from csms.smart_charging import watchdog

    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "40"}
    _session(store, "CP-1", 22_000.0)
    store.evses[("CP-1", 1)].update({"steerable": "0", "refusals": "1", "retry_after": "0"})
    stations = SilentStation(clock, 40_000.0, silent="CP-1")
    svc = _service(store, stations, clock)
    svc.held.add(SITE)
    svc._refusing[SITE] = {("CP-1", 1)}
    await asyncio.wait_for(watchdog.tick(svc, SITE), 1)
    await asyncio.wait_for(stations.out.wait(), 1)  # the probe is at CP-1, unanswered
    await asyncio.wait_for(watchdog.tick(svc, SITE), 1)
    assert [sid for sid, _ in stations.sent] == ["CP-1"]
    stations.release.set()
    await svc.aside.settled(SITE)
    assert store.evses[("CP-1", 1)]["steerable"] == "1"


async def test_a_lost_lease_cancels_the_sites_calls_and_wakes_nothing() -> None:
    """CP-1's K17 re-send is out when the node loses the site's lease: the call is cancelled, its
    EVSE leaves `out` (it counts its record again), and no work is queued for the site."""
    clock, store, refs, stations, svc = await _planned_with_cp1_silent()
    clock.t += timedelta(seconds=5)
    await svc.check_ev_schedule(SITE, _breach(clock, refs["CP-1"], 22_000.0))
    await asyncio.wait_for(stations.out.wait(), 1)
    svc.aside.held.add(("CP-1", 1))  # as if a pass had left CP-1 alone meanwhile
    store.leases[SITE] = "node-b"  # another node took the site
    assert not await svc.holds(SITE, renew=True)
    await asyncio.wait_for(svc.aside.settled(SITE), 1)
    assert not svc.aside.out and SITE not in svc.sites
