"""The site's over-limit alarm judges the metered sum with each reading for what it shows: a reading
taken before the session's latest accepted profile counts at most at the limit that profile sets
until a fresh reading comes (`MeteredState.caps`).

After mass re-shares (decreases confirmed before increases) the lowered sessions' last readings,
taken before, stayed in the sum beside the raised sessions' new readings: false over-limit alarms
(32 in one loaded run). A station that really draws more shows it in its fresh readings, counted in
full: the alarm is raised as before.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from csms.smart_charging import watchdog
from csms.smart_charging.metered import READING_LAG_S, MeteredState
from csms.smart_charging.service import SmartChargingService
from csms.smart_charging.site_alarm import SiteAlarms
from tests.loop.test_service_unit import SITE, T0, FixedClock, Stations, _service, _session
from tests.loop.test_watchdog_held import _accept
from tests.loop.test_watchdog_incremental import CountingStore
from tests.loop.test_watchdog_takeover import _reading_at

LIMIT_W = 10_000.0


def test_a_reading_taken_before_the_latest_profile_counts_at_most_at_it() -> None:
    state, t0 = MeteredState(), T0.timestamp()
    a, b = ("A", 1), ("B", 1)
    state.hold(a, "ra", t0 - 60, t0 - 60, [(t0 - 60, 8_000.0)])
    state.note(a, SITE, "ra", 8_000.0, t0)
    state.note(b, SITE, "rb", 5_000.0, t0)
    assert state.total_w(SITE, t0) == 13_000.0  # taken under the profile in force: in full
    state.hold(a, "ra", t0 + 5, t0 + 5, [(t0 + 5, 5_000.0), (t0 + 100, 2_000.0)])
    assert state.total_w(SITE, t0 + 6) == 10_000.0  # before the decrease: at most its new limit
    assert state.total_w(SITE, t0 + 100) == 7_000.0  # the limit in force then
    state.untrusted.add(a)  # marked non-compliant: it has shown it does not obey
    assert state.total_w(SITE, t0 + 6) == 13_000.0
    state.untrusted.discard(a)
    state.note(a, SITE, "ra", 8_000.0, t0 + 5 + READING_LAG_S / 2)  # may still predate the answer
    assert state.total_w(SITE, t0 + 8) == 10_000.0
    state.note(a, SITE, "ra", 8_000.0, t0 + 5 + READING_LAG_S + 1)  # a fresh one: in full
    assert state.total_w(SITE, t0 + 9) == 13_000.0 and a not in state.caps


async def _reshared(sids: tuple[str, ...]) -> tuple[FixedClock, CountingStore, SmartChargingService,
                                                   dict[str, str]]:
    """A 10 kW site: CP-1 accepts 8 kW, CP-2 2 kW (T0 - 60 s), both meter that at T0; a re-share
    lowers CP-1 to 5 kW (answered T0 + 5 s) before it raises CP-2 to 5 kW (T0 + 6 s); CP-2 meters
    5 kW at T0 + 8 s. The alarm persists after 0.1 s (real time)."""
    clock, store = FixedClock(), CountingStore()
    store.sites[SITE] = {"limit_kw": str(LIMIT_W / 1000)}
    refs = {sid: _session(store, sid, w) for sid, w in zip(sids, (8_000.0, 2_000.0), strict=True)}
    svc = _service(store, Stations(clock, LIMIT_W), clock)
    svc.alarms = SiteAlarms(0.1)
    clock.t = T0 - timedelta(seconds=60)
    for sid, w in zip(sids, (8_000.0, 2_000.0), strict=True):
        await _accept(svc, clock, sid, w)
    clock.t = T0
    for sid, w in zip(sids, (8_000.0, 2_000.0), strict=True):
        await svc.dispatch(_reading_at(sid, refs[sid], w, clock))
    await watchdog.tick(svc, SITE)
    for at_s, sid in ((5, sids[0]), (6, sids[1])):
        clock.t = T0 + timedelta(seconds=at_s)
        await _accept(svc, clock, sid, 5_000.0)
    clock.t = T0 + timedelta(seconds=8)
    await svc.dispatch(_reading_at(sids[1], refs[sids[1]], 5_000.0, clock))
    return clock, store, svc, refs


async def _ticks(svc: SmartChargingService, n: int = 4) -> None:
    for _ in range(n):
        await watchdog.tick(svc, SITE)
        await asyncio.sleep(0.06)


async def test_stale_readings_after_a_reshare_raise_no_alarm() -> None:
    """CP-1's last reading (8 kW) was taken before its decrease: the site counts 5 + 5 kW, not
    8 + 5 kW, and raises no alarm (fails on the old code: 13 kW for longer than 0.1 s); once CP-1
    meters 5 kW the sum is the same."""
    clock, store, svc, refs = await _reshared(("CP-1", "CP-2"))
    await _ticks(svc)
    assert store.sites[SITE].get("over_limit") != "1"
    clock.t = T0 + timedelta(seconds=30)
    await svc.dispatch(_reading_at("CP-1", refs["CP-1"], 5_000.0, clock))
    await _ticks(svc)
    assert store.sites[SITE].get("over_limit") != "1"


async def test_a_real_overload_still_raises_the_alarm_promptly() -> None:
    """CP-1 ignores its decrease: its next reading (8 kW, taken after it) counts in full, and the
    alarm is raised within the persistence (0.1 s) of that reading, and not cleared by the lower
    limits its corrective pass sends (cleared on readings); likewise two stations metering above
    their limits."""
    clock, store, svc, refs = await _reshared(("CP-1", "CP-2"))
    await _ticks(svc, 2)
    assert store.sites[SITE].get("over_limit") != "1"
    clock.t = T0 + timedelta(seconds=30)
    await svc.dispatch(_reading_at("CP-1", refs["CP-1"], 8_000.0, clock))
    await _ticks(svc)
    assert store.sites[SITE].get("over_limit") == "1"
    clock.t = T0 + timedelta(seconds=32)
    await _ticks(svc)
    assert store.sites[SITE].get("over_limit") == "1"
    clock, store, svc, refs = await _reshared(("CP-3", "CP-4"))
    clock.t = T0 + timedelta(seconds=30)
    for sid in refs:
        await svc.dispatch(_reading_at(sid, refs[sid], 6_000.0, clock))
    await _ticks(svc)
    assert store.sites[SITE].get("over_limit") == "1"
    await _ticks(svc)
    assert store.sites[SITE].get("over_limit") == "1"
