"""The store port: the in-memory fake answers as the Redis adapter does (same setup, same reads).

The services' unit tests trust `InMemoryStateStore`; this test keeps it honest against
`RedisStateStore` on a real (private) Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from csms.smart_charging.decoding import DecodeMemo, decode_all
from csms.store.port_redis import RedisStateStore
from evfleet.events import EventType, event_fields
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evfleet.store.memory import InMemoryStateStore
from evfleet.store.port import StateStore, StoreWrite

K = Keys("evfleet")
SITE = "depot"
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    """The same site in either store: CP-1 (EVSEs 1, 2) on the site, CP-2 elsewhere."""
    if request.param == "memory":
        mem = InMemoryStateStore(sites={SITE: {"limit_kw": "30"}})
        mem.add_evse("CP-1", 1, site_id=SITE, max_power_w="11000", tx_ref="CP-1:tx-1")
        mem.add_evse("CP-1", 2, site_id=SITE)
        mem.add_evse("CP-2", 1, site_id="other")
        mem.needs[("CP-1", 1)] = {"tx_ref": "CP-1:tx-1", "ev_max_power_w": 7400}
        yield mem
        return
    redis = connect_redis(request.getfixturevalue("redis_url"))
    await redis.hset(K.site(SITE), "limit_kw", "30")
    await redis.sadd(K.sites(), SITE)
    for sid, site in (("CP-1", SITE), ("CP-2", "other")):
        await redis.sadd(K.stations(), sid)
        await redis.hset(K.station(sid), mapping={"online": "1", "site_id": site})
    await redis.hset(K.station_connectors("CP-1"), mapping={"1/1": "Occupied", "2/1": "Available"})
    await redis.hset(K.station_connectors("CP-2"), mapping={"1/1": "Available"})
    await redis.hset(K.station_evse("CP-1", 1), mapping={"max_power_w": "11000", "tx_ref": "CP-1:tx-1"})
    await redis.set(K.charging_needs("CP-1", 1), '{"tx_ref": "CP-1:tx-1", "ev_max_power_w": 7400}')
    try:
        yield RedisStateStore(redis, K)
    finally:
        await redis.aclose()


async def _reads(store: StateStore) -> dict[str, Any]:
    evses = await store.site_evses(SITE, "default")
    return {
        "evses": [(e.station_id, e.evse_id, e.station.get("online"), dict(e.evse), e.profile, e.needs)
                  for e in evses],
        "limit": await store.site_limit_kw(SITE),
        "site": await store.station_site("CP-2"),
        "sites": await store.site_ids(),
    }


async def test_the_fake_reads_what_redis_reads(store: StateStore) -> None:
    got = await _reads(store)
    assert got == {
        "evses": [("CP-1", 1, "1", {"max_power_w": "11000", "tx_ref": "CP-1:tx-1"}, None,
                   {"tx_ref": "CP-1:tx-1", "ev_max_power_w": 7400}),
                  ("CP-1", 2, "1", {}, None, None)],
        "limit": "30.0", "site": "other", "sites": {SITE},
    }


async def test_a_write_is_read_back_the_same_in_both(store: StateStore) -> None:
    record = {"tx_ref": "CP-1:tx-1", "kind": "plan", "applied_series_w": [[T0.timestamp(), 6000.0]]}
    w = StoreWrite(profiles={("CP-1", 1): record},
                   evse_fields={("CP-1", 1): {"applied_limit_w": "6000.0", "metered_max_w": "7000.0"}},
                   evse_deleted={("CP-1", 1): ["max_power_w"]},
                   session_fields={"CP-1:tx-1": {"last_plan_id": "p1"}},
                   ev_schedules={("CP-1", 1): {"within_limits": True}},
                   site_fields={SITE: {"over_limit": "0"}},
                   events=[event_fields(EventType.PROFILE_SENT, T0, "CP-1", 1, "CP-1:tx-1", SITE,
                                        {"kind": "plan"})])
    w.incr("CP-1:tx-1", "schedules_sent")
    w.incr("CP-1:tx-1", "schedules_sent")
    tail = await store.events_tail()
    await store.write(w)
    assert await store.applied_profile(("CP-1", 1)) == record
    assert await store.ev_schedule(("CP-1", 1)) == {"within_limits": True}
    fields = await store.session_fields("CP-1:tx-1", ["schedules_sent", "last_plan_id", "nope"])
    assert fields == ["2", "p1", None]
    [evse] = await store.evse_records([("CP-1", 1)])
    # the EVSE hash as the service reads it: the fields it decodes (not `applied_limit_w`)
    assert dict(evse.evse) == {"tx_ref": "CP-1:tx-1", "metered_max_w": "7000.0"}
    _, events = await store.read_events(tail, count=10, block_ms=10)
    assert [(e.type, e.station_id, e.tx_ref) for e in events] == [
        (EventType.PROFILE_SENT, "CP-1", "CP-1:tx-1")]


async def test_without_its_own_limit_a_site_reads_the_published_default(store: StateStore) -> None:
    assert await store.site_limit_kw("elsewhere") is None
    assert await store.site_margin_kw() is None
    if isinstance(store, InMemoryStateStore):
        store.site_defaults.update({"site_limit_kw": "40", "site_margin_kw": "11.0"})
    else:
        assert isinstance(store, RedisStateStore)
        await store.redis.hset(K.site_defaults(), mapping={"site_limit_kw": "40", "site_margin_kw": "11.0"})
    assert await store.site_limit_kw("elsewhere") == "40.0"
    assert await store.site_limit_kw(SITE) == "30.0"
    assert await store.site_margin_kw() == "11.0"


async def test_a_lease_is_held_by_one_node_and_released_by_it(store: StateStore) -> None:
    assert await store.hold_lease(SITE, "node-a", 5_000)
    assert await store.hold_lease(SITE, "node-a", 5_000)  # renewed
    assert not await store.hold_lease(SITE, "node-b", 5_000)
    await store.release_lease(SITE, "node-b")  # not its lease: nothing happens
    assert not await store.hold_lease(SITE, "node-b", 5_000)
    await store.release_lease(SITE, "node-a")
    assert await store.hold_lease(SITE, "node-b", 5_000)


@pytest.mark.parametrize("shards", [0, 3])
async def test_redis_reads_a_session_evse_without_connectors_and_only_the_sites_sessions(
        redis_url: str, shards: int) -> None:
    """An EVSE known only from an active transaction counts against its site (its draw must be
    budgeted); another site's transactions are not read into the site (both key layouts)."""
    k = Keys("evfleet", shards=shards)
    redis = connect_redis(redis_url)
    try:
        for sid, site in (("CP-1", SITE), ("CP-2", "other")):
            await redis.sadd(k.stations(), sid)
            online = "1" if sid == "CP-1" else "0"
            await redis.hset(k.station(sid), mapping={"online": online, "site_id": site})
            await redis.hset(k.transaction(f"{sid}:tx-9"), mapping={"station_id": sid, "evse_id": "3"})
            await redis.sadd(k.active_for(sid), f"{sid}:tx-9")
            await redis.sadd(k.station_active(sid), f"{sid}:tx-9")
        await redis.hset(k.station_connectors("CP-1"), mapping={"1/1": "Available"})
        await redis.hset(k.station_evse("CP-1", 3), mapping={"tx_ref": "CP-1:tx-9", "max_power_w": "22000"})
        await redis.set(k.applied_profile("CP-1", 3), '{"tx_ref": "CP-1:tx-9"}')
        store = RedisStateStore(redis, k)
        evses = await store.site_evses(SITE, "default")
        assert [(e.station_id, e.evse_id) for e in evses] == [("CP-1", 1), ("CP-1", 3)]
        assert evses[1].evse == {"tx_ref": "CP-1:tx-9", "max_power_w": "22000"}
        assert evses[1].profile == {"tx_ref": "CP-1:tx-9"} and evses[1].needs is None
        assert evses[0].evse == {} and evses[0].station == {"online": "1"}  # the field it decodes
        assert [(e.station_id, e.evse_id, e.station.get("online"), e.profile)
                for e in await store.evse_records([("CP-2", 3), ("CP-1", 3)])] == [
            ("CP-2", 3, "0", None), ("CP-1", 3, "1", {"tx_ref": "CP-1:tx-9"})]
    finally:
        await redis.aclose()


async def test_leases_are_renewed_in_one_batch_and_another_nodes_lease_stays_its(store: StateStore) -> None:
    assert await store.hold_lease("A", "node-a", 300)
    assert await store.hold_lease("B", "node-b", 5_000)
    assert await store.hold_leases(["A", "B", "C"], "node-a", 5_000) == {"A", "C"}  # C was free: taken
    assert not await store.hold_lease("B", "node-a", 5_000)
    assert not await store.hold_lease("C", "node-b", 5_000)
    if isinstance(store, RedisStateStore):  # A's lease now runs the new TTL, not the old 300 ms
        assert await store.redis.pttl(K.smart_charging_lease("A")) > 1_000
        assert await store.redis.get(K.smart_charging_lease("B")) == "node-b"
    assert await store.hold_leases([], "node-a", 5_000) == set()


async def test_redis_reparses_a_changed_document_and_shares_an_unchanged_one(redis_url: str) -> None:
    """`RedisStateStore._stored` reuses a record only for the same raw replies of the same EVSE;
    each read's `EvseInfo` is its own, with the unchanged documents themselves (read-only, not
    copied per pass: issue 14): a caller assigning its `EvseInfo.record` a new document (as
    `sending.send` does after an answer) does not change the next read's."""
    redis = connect_redis(redis_url)
    memo: DecodeMemo = {}
    try:
        await redis.sadd(K.stations(), "CP-1")
        await redis.hset(K.station("CP-1"), mapping={"online": "1", "site_id": SITE})
        await redis.hset(K.station_connectors("CP-1"), "1/1", "{}")
        await redis.set(K.applied_profile("CP-1", 1),
                        '{"limit_w": 6000.0, "applied_series_w": [[0, 6000.0]]}')
        store = RedisStateStore(redis, K)
        first = (await decode_all(await store.site_evses(SITE, "default"), memo))["CP-1/1"]
        assert first.record is not None and first.record["limit_w"] == 6000.0
        shared = first.record
        first.record = {**first.record, "limit_w": 1.0}
        again = (await decode_all(await store.evse_records([("CP-1", 1)]), memo))["CP-1/1"]
        assert again is not first and again.record is shared
        assert again.record == {"limit_w": 6000.0, "applied_series_w": [[0, 6000.0]]}
        await redis.set(K.applied_profile("CP-1", 1),
                        '{"limit_w": 11000.0, "applied_series_w": [[0, 11000.0]]}')
        [changed] = await store.site_evses(SITE, "default")
        assert changed.profile == {"limit_w": 11000.0, "applied_series_w": [[0, 11000.0]]}
        await redis.delete(K.applied_profile("CP-1", 1))
        [gone] = await store.site_evses(SITE, "default")
        assert gone.profile is None
    finally:
        await redis.aclose()


@pytest.mark.parametrize("shards", [0, 3])
async def test_redis_whole_site_read_in_many_callbacks_gives_each_evse_its_own_current_state(
        redis_url: str, shards: int) -> None:
    """A whole-site read builds each EVSE's record in the callback that received its replies
    (`RedisStateStore._read_each`, several round trips and slot groups here): every EVSE gets its
    own hash, profile and needs, in order, and a second read shows every change made in between
    (a changed, a new and a deleted document, a changed hash), never the first read's."""
    k = Keys("evfleet", shards=shards)
    redis = connect_redis(redis_url)
    n = 250  # > STORED_CHUNK and > READ_CHUNK / 3: several calls per slot group
    sids = [f"CP-{i:03d}" for i in range(n)]
    try:
        pipe = redis.pipeline(transaction=False)
        for i, sid in enumerate(sids):
            pipe.sadd(k.stations(), sid)
            pipe.hset(k.station(sid), mapping={"online": str(i % 2), "site_id": SITE})
            pipe.sadd(k.site_stations(SITE), sid)
            pipe.hset(k.station_connectors(sid), "1/1", "Occupied")
            pipe.hset(k.station_evse(sid, 1), mapping={"max_power_w": str(1000 + i)})
            pipe.set(k.applied_profile(sid, 1), f'{{"limit_w": {i}.0, "applied_series_w": [[0, {i}.0]]}}')
            if i % 3 == 0:
                pipe.set(k.charging_needs(sid, 1), f'{{"ev_max_power_w": {i}}}')
        await pipe.execute()
        store = RedisStateStore(redis, k)
        first = await store.site_evses(SITE, "default")
        assert [(e.station_id, e.evse_id) for e in first] == [(sid, 1) for sid in sids]
        for i, e in enumerate(first):
            assert e.station == {"online": str(i % 2)}  # the one field decoded
            assert e.evse == {"max_power_w": str(1000 + i)}
            assert e.profile == {"limit_w": float(i), "applied_series_w": [[0, float(i)]]}
            assert e.needs == ({"ev_max_power_w": i} if i % 3 == 0 else None)
        pipe = redis.pipeline(transaction=False)
        for i, sid in enumerate(sids):
            if i % 7 == 0:
                pipe.set(k.applied_profile(sid, 1), f'{{"limit_w": {-i}.0, "applied_series_w": []}}')
            if i % 3 == 0 and i % 2 == 0:
                pipe.delete(k.charging_needs(sid, 1))
            if i % 5 == 0:
                pipe.set(k.charging_needs(sid, 1), f'{{"ev_max_power_w": {-i}}}')
                pipe.hset(k.station_evse(sid, 1), "tx_ref", f"{sid}:tx")
        await pipe.execute()
        again = {(e.station_id, e.evse_id): e for e in await store.site_evses(SITE, "default")}
        by_record = {(e.station_id, e.evse_id): e
                     for e in await store.evse_records([(sid, 1) for sid in reversed(sids)])}
        for read in (again, by_record):
            for i, sid in enumerate(sids):
                e = read[(sid, 1)]
                assert e.profile == ({"limit_w": float(-i), "applied_series_w": []} if i % 7 == 0 else
                                     {"limit_w": float(i), "applied_series_w": [[0, float(i)]]})
                needs = ({"ev_max_power_w": -i} if i % 5 == 0 else None if i % 6 == 0 else
                         {"ev_max_power_w": i} if i % 3 == 0 else None)
                assert e.needs == needs
                assert e.evse == ({"max_power_w": str(1000 + i), "tx_ref": f"{sid}:tx"} if i % 5 == 0
                                  else {"max_power_w": str(1000 + i)})
    finally:
        await redis.aclose()
