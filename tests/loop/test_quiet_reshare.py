"""A silent fallback site whose shares allow nothing: a start or end re-reads only its EVSE (`quiet`).

Issue 14: on a 20,000-EVSE site in silent fallback mode each share is 5 W, nothing to send, yet
every start and end re-read and re-shared the whole site (about a second of CPU). Against the
in-memory store, the stations' side sampled after every answer (`Stations.worst_sum_w`).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from csms.settings import CsmsSettings
from csms.smart_charging import safety
from csms.smart_charging.service import SmartChargingService
from csms.smart_charging.work import Work
from evfleet.events import Event, EventType
from evfleet.keys import tx_ref
from evfleet.store.memory import InMemoryStateStore
from tests.loop.test_service_unit import SITE, T0, FixedClock, Stations, _session
from tests.loop.test_share_changes import _new_session

SESSIONS = 20


Site = tuple[InMemoryStateStore, Stations, SmartChargingService, list[int]]


def _silent_site(limit_kw: float, **settings: Any) -> Site:
    """`SESSIONS` sessions at 0 W (interim shares) on a silent fallback site; the whole-site reads
    are counted (the returned list's one item)."""
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": repr(limit_kw)}
    for i in range(SESSIONS):
        _session(store, f"CP-{i:02d}", 0.0, kind="interim")
        store.evses[(f"CP-{i:02d}", 1)]["rate_unit"] = "A"  # 0.1 A steps: 69 W on three phases
    stations = Stations(clock, limit_kw * 1000.0)
    stations.limits_w = {f"CP-{i:02d}": 0.0 for i in range(SESSIONS)}
    cfg = CsmsSettings(default_site=SITE, replan_threshold_kw=0.0, **settings)
    svc = SmartChargingService(store, clock, cfg, "node-a", stations)  # type: ignore[arg-type]
    svc._fallback.add(SITE)
    svc._late_since[SITE] = time.monotonic() - 3600  # the optimizer is silent: every session shares
    reads = [0]
    site_evses = svc.site_evses

    async def counted(site_id: str) -> Any:
        reads[0] += 1
        return await site_evses(site_id)

    svc.site_evses = counted  # type: ignore[method-assign]
    return store, stations, svc, reads


async def _event(svc: SmartChargingService, etype: EventType, sid: str) -> None:
    """The session event through the site's handler, then the re-share it asks for (`Work.RESHARE`)."""
    svc.pacing.reshare_queued.add(SITE)  # run here, not by the service's timer
    event = Event(type=etype, station_id=sid, evse_id=1, transaction_id=f"tx-{sid}",
                  tx_ref=tx_ref(sid, f"tx-{sid}"), site_id=SITE, ts=T0)
    await svc._handle(SITE, etype.value, event)
    await svc._handle(SITE, Work.RESHARE, None)


async def test_a_start_on_a_site_whose_shares_allow_nothing_reads_only_its_evse() -> None:
    """1 kW among 20 sessions: 50 W each, nothing sendable. A full pass sends nothing; then three
    sessions start: no whole-site read, nothing sent (fails if each start re-reads the site)."""
    store, stations, svc, reads = _silent_site(1.0)
    assert await safety.share_fairly(svc, SITE) == 0 and stations.sent == [] and reads[0] == 1
    for n in range(3):
        _new_session(store, f"NEW-{n}")  # its 0 W default confirmed: counts 0 W
        store.evses[(f"NEW-{n}", 1)]["rate_unit"] = "A"
        await _event(svc, EventType.TX_STARTED, f"NEW-{n}")
    assert reads[0] == 1 and stations.sent == []
    assert len(svc.quiet[SITE].sharers) == SESSIONS + 3


async def test_ends_that_raise_the_shares_to_a_sendable_limit_run_the_full_pass_within_the_limit() -> None:
    """1.2 kW among 20 sessions: 60 W each, below 0.1 A (69 W). A start lowers the level, an end
    brings it back to what was proven to send nothing: both read only their EVSE. Further ends
    raise it: the full pass runs, and once 1.2 kW / n reaches 69 W every sharer gets 0.1 A at once,
    the stations' sum within the limit after every answer (fails if a skip hid a rise)."""
    store, stations, svc, reads = _silent_site(1.2)
    assert await safety.share_fairly(svc, SITE) == 0 and stations.sent == []
    _new_session(store, "NEW-0")
    store.evses[("NEW-0", 1)]["rate_unit"] = "A"
    await _event(svc, EventType.TX_STARTED, "NEW-0")  # 21 sharers: the level falls
    sharers = [f"CP-{i:02d}" for i in range(SESSIONS)] + ["NEW-0"]
    for n, sid in enumerate(sharers[:11]):
        store.evses[(sid, 1)].pop("tx_ref")
        store.evses[(sid, 1)].pop("transaction_id")
        await _event(svc, EventType.TX_ENDED, sid)
        if n == 0:  # 20 sharers again: 60 W, the level of the full pass
            assert reads[0] == 1 and stations.sent == []
        left = sharers[n + 1:]
        if 1_200.0 / len(left) >= 69.0:  # 0.1 A fits: every sharer holds it now
            assert all(stations.limits_w[s] == pytest.approx(69.0) for s in left), n
        else:
            assert not stations.sent
    assert reads[0] >= 2 and len(stations.sent) == 17
    assert stations.worst_sum_w <= 1_200.0 + 1.0


async def test_a_start_that_counts_more_than_its_share_and_a_higher_budget_run_the_full_pass() -> None:
    """A new session whose default is still out (it counts its 22 kW maximum) ends the skipping:
    the full pass reads the site. So does a higher site limit, which hands out the new headroom."""
    store, stations, svc, reads = _silent_site(1.0)
    assert await safety.share_fairly(svc, SITE) == 0
    _new_session(store, "NEW-0", default_w=None)
    store.evses[("NEW-0", 1)]["rate_unit"] = "A"
    await _event(svc, EventType.TX_STARTED, "NEW-0")
    assert reads[0] == 2 and SITE not in svc.quiet
    assert [sid for sid, _ in stations.sent] == ["NEW-0"] and stations.limits_w["NEW-0"] == 0.0  # lowered
    store.evses[("NEW-0", 1)]["default_limit_w"] = "0.0"
    assert await safety.share_fairly(svc, SITE) == 0 and SITE in svc.quiet
    store.sites[SITE]["limit_kw"] = "42"  # 2 kW each now; no SITE_LIMIT event reached the site yet
    _new_session(store, "NEW-1")
    store.evses[("NEW-1", 1)]["rate_unit"] = "A"
    await _event(svc, EventType.TX_STARTED, "NEW-1")
    assert reads[0] == 4 and len(stations.sent) == 1 + SESSIONS + 2  # every sharer rises
    assert stations.worst_sum_w <= 42_000.0 + 1.0
