"""The held profiles survive a lease move: they are stored in the EVSE's applied-profile record
(`metered.HELD_FIELD`, written with it), and a node that takes the site over merges them when it
first judges a reading of the EVSE (`MeteredState.adopt`).

In one loaded run of the production topology a node that took a site's lease over judged without
the profiles the previous node had sent: stations that obeyed were marked non-compliant (6 marks,
all on one site).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from csms.settings import CsmsSettings
from csms.smart_charging import budget, watchdog
from csms.smart_charging.metered import HELD_FIELD, MeteredState, decode_held, encode_held
from csms.smart_charging.service import SmartChargingService
from csms.store.port_redis import RedisStateStore
from evfleet.events import Event, EventType
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evfleet.store.memory import InMemoryStateStore
from evfleet.store.port import StateStore
from tests.loop.test_service_unit import SITE, T0, FixedClock, Stations, _session
from tests.loop.test_watchdog_held import _accept
from tests.loop.test_watchdog_incremental import CountingStore

EVSE = ("CP-1", 1)
K = Keys("evfleet")


def test_the_held_profiles_round_trip_through_the_record_and_merge() -> None:
    """What one node holds, encoded into the record and adopted by another, gives the same limits;
    the text it wrote itself is not merged again, a newer one is."""
    a, b, t0 = MeteredState(), MeteredState(), T0.timestamp()
    a.hold(EVSE, "ref", t0 - 60.123, t0 - 59.5, [(t0 - 60.123, 3_657.0), (t0 + 900.0, 1_000.0)])
    a.hold(EVSE, "ref", t0 + 1, t0 + 1.25, [(t0 + 1, 2_967.0)])
    record = {"tx_ref": "ref", HELD_FIELD: a.held_text(EVSE, "ref")}
    assert decode_held(record[HELD_FIELD], "ref") == a.held[EVSE]
    assert b.held_at(EVSE, "ref", t0) is None  # not known before it reads the record
    b.adopt(EVSE, record)
    assert b.held[EVSE] == a.held[EVSE] and b.held_at(EVSE, "ref", t0) == 3_657.0
    a.adopt(EVSE, record)  # its own text: nothing to merge
    assert len(a.held[EVSE]) == 2
    b.hold(EVSE, "ref", t0 + 10, t0 + 10, [(t0 + 10, 2_346.0)])
    a.adopt(EVSE, {"tx_ref": "ref", HELD_FIELD: b.held_text(EVSE, "ref")})
    assert [h.answered_s for h in a.held[EVSE]] == [t0 - 59.5, t0 + 1.25, t0 + 10]
    b.adopt(EVSE, {"tx_ref": "ref", HELD_FIELD: "garbage;1,2"})  # malformed: ignored, nothing lost
    assert len(b.held[EVSE]) == 3
    assert decode_held(encode_held([]), "ref") == []


def _reading_at(sid: str, ref: str, power_w: float, clock: FixedClock) -> Event:
    return Event(type=EventType.METER_VALUES, station_id=sid, evse_id=1, tx_ref=ref, site_id=SITE,
                 ts=clock.t, data={"power_w": power_w})


async def _redis_nodes(url: str) -> tuple[RedisStateStore, RedisStateStore, dict[str, str]]:
    """Two nodes' stores on one Redis with the sessions `_session` makes in the in-memory store."""
    refs = {}
    a, b = RedisStateStore(connect_redis(url), K), RedisStateStore(connect_redis(url), K)
    await a.redis.hset(K.site(SITE), "limit_kw", "1000")
    await a.redis.sadd(K.sites(), SITE)
    for sid in ("CP-1", "CP-2"):
        mem = InMemoryStateStore()
        refs[sid] = _session(mem, sid, 3_657.0)
        await a.redis.sadd(K.stations(), sid)
        await a.redis.hset(K.station(sid), mapping={"online": "1", "site_id": SITE})
        await a.redis.hset(K.station_connectors(sid), mapping={"1/1": "Occupied"})
        await a.redis.hset(K.station_evse(sid, 1), mapping=dict(mem.evses[(sid, 1)]))
        await a.redis.set(K.applied_profile(sid, 1), json.dumps(mem.profiles[(sid, 1)]))
    return a, b, refs


@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_a_node_that_takes_the_lease_over_judges_with_the_profiles_the_other_sent(
        where: str, request: pytest.FixtureRequest) -> None:
    """Node A sends CP-1 and CP-2 3,657 W (T0 - 60 s); the readings stored at T0 (CP-1 3,657 W,
    within it; CP-2 4,500 W, above it) reach node B, which took the site's lease over while A
    lowered both to 2,967 W (T0 + 1 s) and 2,346 W (T0 + 10 s). B judges them until T0 + 28 s:
    CP-1 is not marked (fails on the old code: B knew only the record's series before the last,
    2,967 W), CP-2, above every limit it held, is. Two services on one in-memory store, and two on
    one Redis (each with its own connection, the lease moved through Redis)."""
    clock, stations = FixedClock(), Stations(FixedClock(), 1_000_000.0)
    stations.clock = clock
    settings = CsmsSettings(default_site=SITE, replan_threshold_kw=0.5)
    if where == "memory":
        mem = CountingStore()
        mem.sites[SITE] = {"limit_kw": "1000"}
        refs = {sid: _session(mem, sid, 3_657.0) for sid in ("CP-1", "CP-2")}
        store_a: StateStore = mem
        store_b: StateStore = mem
    else:
        store_a, store_b, refs = await _redis_nodes(request.getfixturevalue("redis_url"))
    node_a = SmartChargingService(store_a, clock, settings, "node-a", stations)  # type: ignore[arg-type]
    node_b = SmartChargingService(store_b, clock, settings, "node-b", stations)  # type: ignore[arg-type]
    node_b._noncompliant = budget.Persistence(0.2)
    try:
        assert await store_a.hold_lease(SITE, "node-a", 60_000)
        clock.t = T0 - timedelta(seconds=60)
        for sid in refs:
            await _accept(node_a, clock, sid, 3_657.0)
        clock.t = T0
        await node_b.dispatch(_reading_at("CP-1", refs["CP-1"], 3_657.0, clock))
        await node_b.dispatch(_reading_at("CP-2", refs["CP-2"], 4_500.0, clock))
        for at_s, limit_w in ((1, 2_967.0), (10, 2_346.0)):
            clock.t = T0 + timedelta(seconds=at_s)
            for sid in refs:
                await _accept(node_a, clock, sid, limit_w)
        await store_a.release_lease(SITE, "node-a")  # A steps down (or dies): B takes the site
        assert await store_b.hold_lease(SITE, "node-b", 60_000)
        assert not node_b.metered.held  # B sent nothing: what it knows comes from the records
        for at_s in (12, 20, 28):
            clock.t = T0 + timedelta(seconds=at_s)
            for _ in range(2):
                await watchdog.tick(node_b, SITE)
                await asyncio.sleep(0.15)
        marks = {sid: info.noncompliant_w for sid, info in (await node_a.evse_infos(
            [("CP-1", 1), ("CP-2", 1)])).items()}
        assert marks == {"CP-1/1": None, "CP-2/1": 4_500.0}
        assert node_b.metered.held_at(("CP-1", 1), refs["CP-1"], T0.timestamp()) == 3_657.0
    finally:
        for store in {id(s): s for s in (store_a, store_b)}.values():
            if isinstance(store, RedisStateStore):
                await store.redis.aclose()
