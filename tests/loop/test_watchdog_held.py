"""The watchdog judges a reading against every TxProfile the station may have held when it took it
(`MeteredState.hold` / `held_at`), however many answers came between the reading and its judgement.

In the production topology of the load harness (5,000 stations, 50 a site, 30 s between readings),
a re-share lowered a session twice (or more) between two of its readings: 3.6 A read, then 2.8 A
and 2.8 A again answered. The record keeps only the series before the last (`previous_series_w`),
so the reading taken under 3.6 A was judged against 2.8 A and the station marked non-compliant
before its next reading (15-487 marks a run, each a site re-share).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from csms.smart_charging import budget, sending, watchdog
from csms.smart_charging.metered import HOLD_KEEP_S, READING_LAG_S, MeteredState
from csms.smart_charging.service import SmartChargingService
from evfleet.txprofile import EvLimits, build_tx_profile
from tests.loop.test_service_unit import SITE, T0, FixedClock, Stations, _service, _session
from tests.loop.test_watchdog_incremental import CountingStore, _reading

EVSE = ("CP-1", 1)


def test_held_at_counts_every_profile_in_force_since_the_reading() -> None:
    state, t0 = MeteredState(), T0.timestamp()
    state.hold(EVSE, "ref", t0 - 60, t0 - 59, [(t0 - 60, 3_600.0)])
    assert state.held_at(EVSE, "ref", t0) == 3_600.0
    state.hold(EVSE, "ref", t0 + 1, t0 + 1, [(t0 + 1, 2_900.0)])
    state.hold(EVSE, "ref", t0 + 9, t0 + 9, [(t0 + 9, 2_300.0)])
    assert state.held_at(EVSE, "ref", t0) == 3_600.0  # two answers since: the first still counts
    assert state.held_at(EVSE, "ref", t0 + 9 + READING_LAG_S / 2) == 2_900.0  # replaced at t0 + 9: lag
    assert state.held_at(EVSE, "ref", t0 + 9 + READING_LAG_S + 1) == 2_300.0
    assert state.held_at(EVSE, "ref", t0 - 100) is None  # before anything was sent: not known here
    state.hold(("CP-2", 1), "ref", t0, t0 + 1, [(t0, 2_553.0)])  # its first profile, answered at t0 + 1
    state.hold(("CP-2", 1), "ref", t0 + 3, t0 + 3, [(t0 + 3, 1_932.0)])
    assert state.held_at(("CP-2", 1), "ref", t0 + 0.5) == 2_553.0  # applied before its answer was recorded
    assert state.held_at(EVSE, "other", t0) is None  # another session's profiles never count
    state.hold(EVSE, "ref", t0 + 2 * HOLD_KEEP_S, t0 + 2 * HOLD_KEEP_S, [(t0, 1_000.0)])
    assert [h.answered_s for h in state.held[EVSE]] == [t0 + 9, t0 + 2 * HOLD_KEEP_S]
    state.drop(EVSE)
    assert EVSE not in state.held


async def _accept(svc: SmartChargingService, clock: FixedClock, sid: str, limit_w: float) -> None:
    """`sid` accepts a flat TxProfile of `limit_w` now (sent and recorded as a re-share does it)."""
    info = (await svc.evse_infos([(sid, 1)]))[f"{sid}/1"]
    payload = build_tx_profile(evse_id=1, transaction_id=f"tx-{sid}", start=clock.t, step_s=900,
                               limits_kw=[limit_w / 1000.0], evse=info.electrical, ev=EvLimits(),
                               profile_id=7)
    await sending.send(svc, SITE, info, payload, "plan-1", "plan")


async def test_a_reading_followed_by_two_lower_profiles_is_judged_against_the_one_it_was_under() -> None:
    """CP-1 and CP-2 accept 3,657 W; at T0 CP-1 meters 3,657 W (within it), CP-2 4,500 W (above it).
    Then both are lowered to 2,967 W (T0 + 1 s), 2,346 W (T0 + 10 s) and 2,346 W again (T0 + 16 s),
    and the watchdog judges the stored readings until T0 + 28 s, before the next ones. CP-1 is not
    marked (fails on the old code: judged against 2,346 W, the series before the last answer); CP-2,
    above every limit it held, is."""
    clock, store = FixedClock(), CountingStore()
    store.sites[SITE] = {"limit_kw": "1000"}
    refs = {sid: _session(store, sid, 3_657.0) for sid in ("CP-1", "CP-2")}
    svc = _service(store, Stations(clock, 1_000_000.0), clock)
    svc._noncompliant = budget.Persistence(0.2)
    clock.t = T0 - timedelta(seconds=60)
    for sid in refs:
        await _accept(svc, clock, sid, 3_657.0)
    clock.t = T0
    await svc.dispatch(_reading("CP-1", refs["CP-1"], 3_657.0))  # stored at T0
    await svc.dispatch(_reading("CP-2", refs["CP-2"], 4_500.0))
    await watchdog.tick(svc, SITE)
    for at_s, limit_w in ((1, 2_967.0), (10, 2_346.0), (16, 2_346.0)):
        clock.t = T0 + timedelta(seconds=at_s)
        for sid in refs:
            await _accept(svc, clock, sid, limit_w)
        for _ in range(2):
            await watchdog.tick(svc, SITE)
            await asyncio.sleep(0.15)
    clock.t = T0 + timedelta(seconds=28)
    await watchdog.tick(svc, SITE)
    assert "noncompliant_w" not in store.evses[("CP-1", 1)]
    assert store.evses[("CP-2", 1)].get("noncompliant_w") == "4500.0"
