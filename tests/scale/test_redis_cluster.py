"""The csms and the optimizer on a local 3-master Redis Cluster (issue 14), in the sharded key layout
(`evfleet.keys`): stations boot, transactions are stored exactly once, the worker plans the site and
the csms steers it within the limit; and `evfleet redis migrate-keys` moves an unsharded
deployment's data into the cluster."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis as sync_redis
from typer.testing import CliRunner

from csms.api.app import build_deps, create_app
from csms.core.metering import MeterSample
from csms.core.transactions import TxEvent, TxState
from csms.store.provisioning import provision_station, set_site_limit
from csms.store.reshard import MigrationRefused, migrate_keys, sharded_name
from csms.store.state import StateStore
from evfleet.app.cli import app
from evfleet.clock import RealClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evfleet.store.layout import LayoutMismatch, resolve_keys
from evfleet.store.shards import active_refs, refs_by_start
from tests.loop.harness import SITE, closed_loop, later
from tests.scale.redis_cluster import REDIS_SERVER, redis_cluster

pytestmark = pytest.mark.skipif(not REDIS_SERVER, reason="redis-server not installed")
SHARDS = 4
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster_ports() -> Iterator[list[int]]:
    with redis_cluster(3) as ports:
        yield ports


@pytest.fixture
def cluster_url(cluster_ports: list[int]) -> str:
    """The cluster, emptied before each test."""
    for port in cluster_ports:
        client = sync_redis.Redis(port=port)
        client.flushall()
        client.close()
    return f"redis+cluster://127.0.0.1:{cluster_ports[0]}"


def _ids_on_distinct_shards(keys: Keys, n: int) -> list[str]:
    out, shards = [], set()
    for i in range(1, 200):
        sid = f"CP-{i}"
        if keys.shard_of_station(sid) not in shards:
            out.append(sid)
            shards.add(keys.shard_of_station(sid))
        if len(out) == n:
            return out
    raise AssertionError("no station ids on distinct shards")


async def test_closed_loop_on_a_3_master_cluster(cluster_url: str) -> None:
    """Boot, transactions, a plan and its profiles, with every MULTI and script in one slot."""
    async with closed_loop(cluster_url, limit_kw=20.0, redis_shards=SHARDS) as lp:
        keys = lp.keys
        assert keys.shards == SHARDS and lp.node.ctx.keys == keys
        ids = _ids_on_distinct_shards(keys, 3)
        cps = [await lp.add_station(sid) for sid in ids]
        for i, cp in enumerate(cps, start=1):
            await cp.start_tx("1", token=f"T{i}")
            lp.active[cp.id] = True
            assert await cp.needs(later(4), 10_000 * i) == "Processing"
            await cp.meter("1", 3_000.0)

        async def planned() -> bool:
            recs = [json.loads(await lp.redis.get(keys.applied_profile(cp.id, 1)) or "{}") for cp in cps]
            return all(r.get("kind") == "plan" and r.get("status") == "Accepted" for r in recs)

        await lp.wait_for(planned, timeout=20.0, what="plan profiles at all three stations")
        await cps[0].end_tx("1")
        lp.active[cps[0].id] = False

        # the station, its transaction and their indexes live in the station's shard
        refs = [f"{sid}:1" for sid in ids]
        for sid, ref in zip(ids, refs, strict=True):
            tag = f"{{s{keys.shard_of_station(sid)}}}"
            assert tag in keys.station(sid) and tag in keys.transaction(ref)
            station = await lp.redis.hgetall(keys.station(sid))
            assert station["online"] == "1" and station["vendor"] == "Test"
            assert await lp.redis.scard(keys.transaction_seqnos(ref)) >= 2
        tx0 = await lp.redis.hgetall(keys.transaction(refs[0]))
        assert tx0["state"] == "Ended" and await lp.redis.llen(keys.transaction_events(refs[0])) == 3
        assert sorted(await active_refs(lp.redis, keys)) == sorted(refs[1:])
        assert sorted(ref for ref, _ in await refs_by_start(lp.redis, keys)) == sorted(refs)
        # every event is in its own station's (or site's) shard stream, and only there
        for sid in ids:
            mine = [f for _, f in await lp.redis.xrange(keys.station_events(sid)) if f["station_id"] == sid]
            assert {"station.booted", "tx.started"} <= {f["type"] for f in mine}
            for other in keys.event_streams():
                if other != keys.station_events(sid):
                    assert not [f for _, f in await lp.redis.xrange(other) if f["station_id"] == sid]
        plan = json.loads(await lp.redis.get(keys.site_plan(SITE)))
        assert set(plan["transactions"].values()) <= set(refs) and len(plan["transactions"]) >= 2
        planned_events = [f for _, f in await lp.redis.xrange(keys.site_events(SITE))
                          if f["type"] == "schedule.planned"]
        assert planned_events
        # the data is spread over the masters, not held by one
        cluster: Any = lp.redis
        holders = {cluster.get_node_from_key(keys.station(sid)).name for sid in ids}
        assert len(holders) >= 2
        assert lp.violations == [], lp.violations[:3]
        await _api_reads_the_shards(lp.redis, keys, ids, refs)


async def _api_reads_the_shards(redis: Any, keys: Keys, ids: list[str], refs: list[str]) -> None:
    """The operator API on the cluster: lists merge every shard's indexes and streams."""
    deps = build_deps(redis, keys, RealClock(), auth=False, default_limit_kw=100.0, tick_s=0.2)
    transport = httpx.ASGITransport(app=create_app(deps))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            txs = (await c.get("/api/v1/transactions")).json()["items"]
            assert sorted(t["tx_ref"] for t in txs) == sorted(refs)
            assert [t["live"] for t in txs if t["tx_ref"] == refs[0]] == [False]
            live = (await c.get("/api/v1/sessions", params={"state": "live"})).json()["items"]
            assert sorted(f"{x['station_id']}:{x['transaction_id']}" for x in live) == sorted(refs[1:])
            events, after = [], "0-0"
            while True:  # paged forward by cursor across the shard streams: none missed, none twice
                page = (await c.get("/api/v1/events", params={"limit": 7, "after": after})).json()
                events += page["items"]
                if not page["items"]:
                    break
                after = page["next"]
            ids_seen = [e["id"] for e in events]  # positions `ms-seq.shard`: shard streams' ids can coincide
            assert len(ids_seen) == len(set(ids_seen)) and all("." in i for i in ids_seen)
            stored = sum([len(await redis.xrange(stream)) for stream in keys.event_streams()])
            assert len(events) == stored
            assert {e["station_id"] for e in events if e["type"] == "tx.started"} == set(ids)
            mine = (await c.get("/api/v1/events", params={"station_id": ids[1], "limit": 999})).json()
            mine = mine["items"]
            assert mine and {e["station_id"] for e in mine} == {ids[1]}
    finally:
        await deps.hub.stop()


async def test_concurrent_replays_on_the_cluster_are_stored_once(cluster_url: str) -> None:
    """The TransactionEvent read-decide-write scripts (one slot each) under racing replays."""
    client = connect_redis(cluster_url)
    try:
        keys = await resolve_keys(client, "evfleet", SHARDS)
        stores = [StateStore(client, keys, RealClock(), f"node-{i}") for i in range(3)]
        n = 20
        events = [TxEvent(transaction_id="race", event_type=TxState.STARTED if seq == 0 else
                          TxState.ENDED if seq == n - 1 else TxState.UPDATED, seq_no=seq,
                          timestamp=T0 + timedelta(seconds=seq), evse_id=1, connector_id=1,
                          sample=MeterSample(ts="t", energy_wh=float(seq * 10))) for seq in range(n)]
        work = [(e, s) for e in events for s in stores]
        random.Random(7).shuffle(work)
        decisions = await asyncio.gather(*(s.transaction_event("CP-1", SITE, e, {"seqNo": e.seq_no})
                                           for e, s in work))
        assert sum(1 for d in decisions if not d.replay) == n
        tx = await client.hgetall(keys.transaction("CP-1:race"))
        assert tx["state"] == "Ended" and tx["energy_wh"] == repr(float((n - 1) * 10))
        assert await client.llen(keys.transaction_events("CP-1:race")) == n
        assert await active_refs(client, keys) == []
        types = [f["type"] for _, f in await client.xrange(keys.station_events("CP-1"))]
        assert types.count("tx.started") == 1 and types.count("tx.ended") == 1
    finally:
        await client.aclose()


async def _legacy_deployment(url: str) -> tuple[Any, Keys, list[str]]:
    """An unsharded deployment with stations, a site limit, transactions and a consumer group."""
    client = connect_redis(url)
    keys = Keys()
    await set_site_limit(client, keys, SITE, 30.0)
    ids = [f"CP-{i}" for i in range(1, 7)]
    store = StateStore(client, keys, RealClock(), "old-node")
    for sid in ids:
        await provision_station(client, keys, sid, "station-secret-123456", site_id=SITE, iterations=1000)
        await store.boot(sid, SITE, {"vendor": "Old"}, "PowerUp", 60)
        await store.transaction_event(sid, SITE, TxEvent(
            transaction_id="7", event_type=TxState.STARTED, seq_no=0, timestamp=T0, evse_id=1,
            connector_id=1), {"seqNo": 0})
    await store.transaction_event(ids[0], SITE, TxEvent(
        transaction_id="7", event_type=TxState.ENDED, seq_no=1, timestamp=T0 + timedelta(minutes=5),
        evse_id=1, connector_id=1), {"seqNo": 1})
    await client.xgroup_create(keys.events(), "optimizer", id="$")
    await store.boot(ids[1], SITE, {"vendor": "Old"}, "PowerUp", 60)  # one entry after the group
    return client, keys, ids


async def _check_migrated(client: Any, keys: Keys, ids: list[str], old_events: list[Any]) -> None:
    assert keys.shards == SHARDS
    for sid in ids:
        assert (await client.hgetall(keys.station(sid)))["vendor"] == "Old"
        assert await client.hget(keys.station_credentials(sid), "scheme")
        assert (await client.hgetall(keys.transaction(f"{sid}:7")))["state"] in ("Started", "Ended")
        assert sid in await client.smembers(keys.site_stations(SITE))
    assert sorted(await active_refs(client, keys)) == sorted(f"{sid}:7" for sid in ids[1:])
    assert len(await refs_by_start(client, keys)) == len(ids)
    assert await client.hget(keys.site(SITE), "limit_kw") == "30.0"
    assert set(await client.smembers(keys.stations())) == set(ids)
    moved = []
    for stream in keys.event_streams():
        moved += [(entry_id, f["type"]) for entry_id, f in await client.xrange(stream)]
    moved.sort()
    assert moved == sorted((entry_id, f["type"]) for entry_id, f in old_events)  # same ids, none lost
    # the optimizer's group continues where it was: only the entry written after it is new
    pending = 0
    for stream in keys.event_streams():
        reply = await client.xreadgroup("optimizer", "w1", {stream: ">"})
        pending += sum(len(entries) for _, entries in reply or [])
    assert pending == 1


async def test_migrate_keys_in_place_and_into_the_cluster(redis_url: str, cluster_url: str) -> None:
    source, old, ids = await _legacy_deployment(redis_url)
    target = connect_redis(cluster_url)
    try:
        old_events = await source.xrange(old.events())
        await source.set(old.node("old-node"), "{}", ex=15)
        with pytest.raises(MigrationRefused, match="live"):
            await migrate_keys(source, target, "evfleet", SHARDS)
        await source.delete(old.node("old-node"))
        with pytest.raises(LayoutMismatch, match="migrate-keys"):
            await resolve_keys(source, "evfleet", SHARDS)  # a node would not start on the old keys
        listing = ["stations", "list", "--redis-url", redis_url]  # a management command: one line
        refused = await asyncio.to_thread(CliRunner().invoke, app, listing,
                                          env={"EVFLEET_REDIS_SHARDS": str(SHARDS)})
        assert refused.exit_code == 1 and "run `evfleet redis migrate-keys" in refused.output
        report = await migrate_keys(source, target, "evfleet", SHARDS)  # into the cluster (--to)
        assert report.events == len(old_events) and report.active == len(ids) - 1
        await _check_migrated(target, await resolve_keys(target, "evfleet"), ids, old_events)
        assert await source.exists(old.station(ids[0]))  # --to leaves the source as it was
        args = ["redis", "migrate-keys", "--shards", str(SHARDS), "--redis-url", redis_url]  # in place
        out = await asyncio.to_thread(CliRunner().invoke, app, args)
        assert out.exit_code == 0, out.output
        assert f"{len(old_events)} events" in out.output
        await _check_migrated(source, await resolve_keys(source, "evfleet"), ids, old_events)
        assert not await source.exists(old.station(ids[0])) and not await source.exists(old.events())
    finally:
        await source.aclose()
        await target.aclose()


def test_every_key_kind_has_its_sharded_name() -> None:
    """`sharded_name` maps the unsharded name of every key `Keys` builds to its sharded name."""
    old, new = Keys(), Keys(shards=SHARDS)
    samples: dict[str, tuple[Any, ...]] = {
        "station": ("CP-1",), "station_credentials": ("CP-1",), "station_connectors": ("CP-1",),
        "station_evse": ("CP-1", 2), "station_tx_counter": ("CP-1",), "station_tx_start": ("CP-1", "ab"),
        "station_quota": ("CP-1", 5), "station_violations": ("CP-1",), "station_site_lock": ("CP-1",),
        "station_active": ("CP-1",),
        "transaction": ("CP-1:7:2",),
        "transaction_seqnos": ("CP-1:7",), "transaction_events": ("CP-1:7",),
        "transaction_meter": ("CP-1:7",),
        "transaction_generations": ("CP-1",), "charging_needs": ("CP-1", 1), "ev_schedule": ("CP-1", 1),
        "planned_schedule": ("CP-1", 1), "applied_profile": ("CP-1", 1), "id_token": ("T1",),
        "id_tokens": (), "sites": (), "site": ("depot",), "site_stations": ("depot",),
        "site_prices": ("depot",), "site_plan": ("depot",), "site_power": ("depot",), "api_token": ("ab",),
        "api_tokens": (), "stations": (), "session_loop": ("CP-1:7",),
    }
    for name, args in samples.items():
        before, after = getattr(old, name)(*args), getattr(new, name)(*args)
        assert before != after and sharded_name(before, new) == after, name
    for name, args in {"site_defaults": (), "node": ("n1",), "node_alive": ("n1",), "node_commands": ("n1",),
                       "clock": (),
                       "command_reply": ("r",), "energy_history": ("T1",), "optimizer_lease": ("depot",),
                       "service_lease": ("mqtt",), "smart_charging_lease": ("depot",),
                       "smart_charging_nodes": ()}.items():
        key = getattr(old, name)(*args)
        assert getattr(new, name)(*args) == key and sharded_name(key, new) is None, name
    built = {n for n in dir(Keys) if not n.startswith("_") and callable(getattr(Keys, n))}
    helpers = {"shard_of_station", "shard_of_site", "shard_prefix", "shard_ids", "transactions_active",
               "transactions_by_start", "active_for", "by_start_for", "shard_keys", "events", "event_streams",
               "station_events", "site_events", "shard_of_event", "optimizer_alive", "optimizer_rescue"}
    covered = set(samples) | helpers | {"site_defaults", "node", "node_alive", "node_commands", "clock",
                                        "command_reply",
                                        "energy_history", "optimizer_lease", "service_lease",
                                        "smart_charging_lease", "smart_charging_nodes"}
    assert built <= covered, f"a key kind without a migration check: {built - covered}"
