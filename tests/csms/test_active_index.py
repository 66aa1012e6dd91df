"""The per-station sets of active transaction refs (`evfleet.store.active_index`): after any sequence
of concurrent TransactionEvents (start, update, end, a reused id, a start superseding an EVSE's
unended transaction) and index checks, each station's set equals its members of `tx:active`, read
from the raw sets; a site's read returns exactly its stations' active transactions; a Redis written
before the sets (or by an older node) is repaired by the check."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csms.api.reader import StateReader
from csms.core.transactions import TxEvent, TxState
from csms.store.migrate import migrate_legacy_transactions
from csms.store.state import StateStore
from evfleet.clock import RealClock
from evfleet.keys import Keys, ref_station
from evfleet.store import active_index
from evfleet.store.active_index import check_active_index, site_active_refs
from evfleet.store.client import connect_redis

K = Keys("evfleet")
STATIONS = ["CP-1", "CP-2", "CP-3"]
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
KINDS = {"start": TxState.STARTED, "update": TxState.UPDATED, "end": TxState.ENDED}

OP = st.tuples(st.sampled_from(["start", "start", "update", "end", "end", "check"]),
               st.sampled_from(STATIONS), st.sampled_from([1, 2]), st.sampled_from(["a", "b", "c"]))
"""A TransactionEvent of a station's EVSE and transactionId, or now and then an index check."""
Op = tuple[str, str, int, str]


async def apply(stores: list[StateStore], redis: Any, keys: Keys, op: Op, seq: itertools.count[int]) -> None:
    """One TransactionEvent through a node's store (the nodes take turns), or an index check."""
    kind, sid, evse_id, txid = op
    if kind == "check":
        await check_active_index(redis, keys)
        return
    n = next(seq)
    ev = TxEvent(transaction_id=txid, event_type=KINDS[kind], seq_no=n, timestamp=T0 + timedelta(seconds=n),
                 evse_id=evse_id, connector_id=1)
    await stores[n % len(stores)].transaction_event(sid, "depot", ev, {"seqNo": n})


async def assert_sets_match(redis: Any, keys: Keys) -> None:
    """Each station's raw set equals the members of its `tx:active` that name it (no reader ran)."""
    for sid in STATIONS:
        truth = {r for r in await redis.smembers(keys.active_for(sid)) if ref_station(r) == sid}
        indexed = set(await redis.smembers(keys.station_active(sid)))
        assert indexed == truth, f"{sid}: missing {truth - indexed}, stale {indexed - truth}"


async def run_ops(url: str, keys: Keys, batches: list[list[Op]]) -> None:
    """Each batch runs concurrently on three nodes' stores; the sets are compared after each batch,
    then a site's read of two stations is compared with `tx:active`."""
    redis = connect_redis(url)
    try:
        await redis.flushall()
        active_index._checked.pop(redis, None)
        stores = [StateStore(redis, keys, RealClock(), f"node-{i}") for i in range(3)]
        seq = itertools.count()
        for batch in batches:
            await asyncio.gather(*(apply(stores, redis, keys, op, seq) for op in batch))
            await assert_sets_match(redis, keys)
        fleet = {r for sid in STATIONS for r in await redis.smembers(keys.active_for(sid))}
        assert await site_active_refs(redis, keys, STATIONS[:2]) == sorted(
            r for r in fleet if ref_station(r) in STATIONS[:2])
    finally:
        await redis.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(OP, min_size=1, max_size=6), min_size=1, max_size=8))
def test_after_any_concurrent_transactions_each_station_set_matches_tx_active(
        redis_url: str, batches: list[list[Op]]) -> None:
    """Property on one server: fails if any write of a station's set (a start's SADD, an end's
    SREM, a superseded transaction's SREM) is dropped from the TransactionEvent script."""
    asyncio.run(run_ops(redis_url, K, batches))


async def test_a_start_that_supersedes_and_a_reused_id_keep_the_sets(redis_url: str) -> None:
    """The cases the property may draw rarely, spelled out: a start on an EVSE whose transaction
    never ended (superseded), an Ended, and the same id started again (its next generation)."""
    ops: list[Op] = [("start", "CP-1", 1, "a"), ("start", "CP-1", 1, "b"), ("end", "CP-1", 1, "b"),
                     ("start", "CP-1", 1, "b"), ("start", "CP-2", 2, "a")]
    await run_ops(redis_url, K, [[op] for op in ops])
    redis = connect_redis(redis_url)
    try:
        assert set(await redis.smembers(K.station_active("CP-1"))) == {"CP-1:b:2"}
        assert set(await redis.smembers(K.station_active("CP-2"))) == {"CP-2:a"}
    finally:
        await redis.aclose()


async def test_the_check_rebuilds_the_sets_of_a_redis_written_before_them(redis_url: str) -> None:
    """`tx:active` only (an older version's writes): the first site read builds the sets, finds the
    site's sessions and only them; a member `tx:active` lost (an older node's end) is dropped."""
    redis = connect_redis(redis_url)
    try:
        active_index._checked.pop(redis, None)
        await redis.sadd(K.stations(), *STATIONS)
        await redis.sadd(K.transactions_active(), "CP-1:a", "CP-1:b", "CP-2:a", "CP-3:a", "GONE-1:x")
        await redis.sadd(K.station_active("CP-3"), "CP-3:old")  # ended by an older node
        assert await site_active_refs(redis, K, ["CP-1", "CP-3"]) == ["CP-1:a", "CP-1:b", "CP-3:a"]
        assert set(await redis.smembers(K.station_active("CP-2"))) == {"CP-2:a"}
        assert set(await redis.smembers(K.station_active("GONE-1"))) == {"GONE-1:x"}
        await redis.sadd(K.transactions_active(), "CP-2:b")  # an older node's start, after the check
        fixed = await check_active_index(redis, K)
        assert fixed == {K.transactions_active(): ["CP-2"]}
        assert await check_active_index(redis, K) == {}
    finally:
        await redis.aclose()


async def test_the_first_reads_wait_for_one_check(redis_url: str, monkeypatch: Any) -> None:
    """Concurrent first reads of a client run one check and all wait for it (none reads before the
    sets are built); the next read within `INDEX_CHECK_S` runs none."""
    redis = connect_redis(redis_url)
    calls: list[int] = []
    real = active_index.check_active_index

    async def counted(client: Any, keys: Keys) -> dict[str, list[str]]:
        calls.append(1)
        await asyncio.sleep(0.05)
        return await real(client, keys)

    monkeypatch.setattr(active_index, "check_active_index", counted)
    try:
        active_index._checked.pop(redis, None)
        await redis.sadd(K.transactions_active(), "CP-1:a")
        reads = await asyncio.gather(*(site_active_refs(redis, K, ["CP-1"]) for _ in range(5)))
        assert reads == [["CP-1:a"]] * 5 and len(calls) == 1
        assert await site_active_refs(redis, K, ["CP-1"]) == ["CP-1:a"] and len(calls) == 1
    finally:
        await redis.aclose()


async def test_a_legacy_transaction_moved_to_its_ref_joins_its_stations_set(redis_url: str) -> None:
    """`migrate_legacy_transactions` (ids from before refs) moves the `tx:active` member and the
    station's set with it, in its one script (no check runs here)."""
    redis = connect_redis(redis_url)
    try:
        await redis.hset("evfleet:tx:7", mapping={"transaction_id": "7", "station_id": "OLD-1",
                                                  "evse_id": "1", "state": "Updated"})
        await redis.sadd(K.transactions_active(), "7")
        assert await migrate_legacy_transactions(redis, K) == 1
        assert await redis.smembers(K.transactions_active()) == {"OLD-1:7"}
        assert await redis.smembers(K.station_active("OLD-1")) == {"OLD-1:7"}
    finally:
        await redis.aclose()


async def test_a_few_sites_documents_match_the_fleet_scan(redis_url: str) -> None:
    """`StateReader.sites([site])` reads the site's own index and active sets: the same stations,
    live sessions and power as the whole-fleet documents give for it."""
    redis = connect_redis(redis_url)
    try:
        store = StateStore(redis, K, RealClock(), "node-1")
        await redis.sadd(K.sites(), "north", "south")
        for i, sid in enumerate(["CP-1", "CP-2", "CP-3", "CP-4", "CP-5"]):
            site = "north" if i < 3 else "south"
            await redis.sadd(K.stations(), sid)
            await redis.sadd(K.site_stations(site), sid)
            await redis.hset(K.station(sid), mapping={"site_id": site, "online": "1"})
            if i != 1:
                ev = TxEvent(transaction_id="a", event_type=TxState.STARTED, seq_no=0, timestamp=T0,
                             evse_id=1, connector_id=1)
                await store.transaction_event(sid, site, ev, {"seqNo": 0})
                await redis.hset(K.transaction(f"{sid}:a"), "power_w", str(1000.0 * (i + 1)))
        reader = StateReader(redis, K, RealClock())
        fleet = {d["site_id"]: d for d in await reader.sites()}
        for site in ("north", "south"):
            [own] = await reader.sites([site])
            assert own == fleet[site]
        assert (fleet["north"]["stations"], fleet["north"]["active_sessions"]) == (3, 2)
        assert fleet["north"]["power_kw"] == 4.0 and fleet["south"]["power_kw"] == 9.0
    finally:
        await redis.aclose()
