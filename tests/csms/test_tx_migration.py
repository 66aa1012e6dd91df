"""A transaction stored by a version before per-station keys (`tx:{transactionId}`) moves to its ref
when a csms node starts, and the station's next events continue it (real Redis, real WebSocket)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from redis.asyncio import Redis

from csms.app import running_csms
from csms.store.migrate import migrate_legacy_transactions
from evfleet.keys import Keys
from optimizer.site_reader import read_site
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation
from tests.csms.test_station_messages import tx_event


async def _seed_legacy(redis: Redis) -> None:
    """What the earlier version stored for a running transaction "7" of OLD-1 and an ended "6"."""
    started = tx_event("Started", 0, txid="7", energy_kwh=1.0)
    updated = tx_event("Updated", 1, txid="7", ts="2026-01-01T08:10:00Z", energy_kwh=2.0)
    await redis.hset("evfleet:tx:7", mapping={
        "transaction_id": "7", "station_id": "OLD-1", "evse_id": "1", "connector_id": "1", "state": "Updated",
        "started_at": "2026-01-01T08:00:00+00:00", "updated_at": "2026-01-01T08:10:00+00:00",
        "energy_wh": "2000.0", "last_seq_no": "1", "offline_events": "0"})
    await redis.sadd("evfleet:tx:7:seqnos", "0", "1")
    await redis.rpush("evfleet:tx:7:events", json.dumps(started), json.dumps(updated))
    await redis.rpush("evfleet:tx:7:meter",
                      json.dumps({"ts": "2026-01-01T08:10:00+00:00", "energy_wh": 2000.0}))
    await redis.hset("evfleet:tx:7:loop", "needs_received", "1")
    await redis.sadd("evfleet:tx:active", "7")
    await redis.zadd("evfleet:tx:by-start", {"7": 1767254400.0, "6": 1767250000.0})
    await redis.hset("evfleet:tx:6", mapping={"transaction_id": "6", "station_id": "OLD-1", "evse_id": "1",
                                              "state": "Ended", "last_seq_no": "3"})
    await redis.sadd("evfleet:tx:6:seqnos", "0", "3")  # payloads without seqNo (an OCPP 1.6 station)
    await redis.rpush("evfleet:tx:6:events", json.dumps({"meterStart": 0}), json.dumps({"meterStop": 9}))
    await redis.hset("evfleet:station:OLD-1:evse:1", mapping={
        "transaction_id": "7", "last_transaction_id": "6", "max_power_w": "11000"})
    await redis.set("evfleet:needs:OLD-1:1", json.dumps({"transaction_id": "7", "energy_amount_wh": 20000}))


async def test_legacy_transaction_moves_to_its_ref_and_continues(
        redis_url: str, redis: Redis, keys: Keys, provision: Callable[..., Awaitable[None]]) -> None:
    await provision("OLD-1", site_id="depot")
    await _seed_legacy(redis)
    async with running_csms(make_settings(redis_url), services=[]) as node:  # migrates at start-up
        assert await redis.exists("evfleet:tx:7", "evfleet:tx:7:seqnos", "evfleet:tx:7:events") == 0
        tx = await redis.hgetall("evfleet:tx:OLD-1:7")
        assert tx["energy_wh"] == "2000.0" and tx["tx_ref"] == "OLD-1:7" and tx["generation"] == "1"
        assert await redis.smembers("evfleet:tx:OLD-1:7:seqnos") == {"0:Started", "1:Updated"}
        assert await redis.llen("evfleet:tx:OLD-1:7:events") == 2
        assert await redis.llen("evfleet:tx:OLD-1:7:meter") == 1
        assert await redis.hget("evfleet:tx:OLD-1:7:loop", "needs_received") == "1"
        assert await redis.smembers("evfleet:tx:active") == {"OLD-1:7"}
        assert await redis.zscore("evfleet:tx:by-start", "OLD-1:7") == 1767254400.0
        assert await redis.smembers("evfleet:tx:OLD-1:6:seqnos") == {"0:Started", "3:Ended"}
        evse = await redis.hgetall("evfleet:station:OLD-1:evse:1")
        assert evse["tx_ref"] == "OLD-1:7" and evse["last_tx_ref"] == "OLD-1:6"
        assert json.loads(await redis.get("evfleet:needs:OLD-1:1"))["tx_ref"] == "OLD-1:7"
        # the station goes on with its transaction: a replay is a replay, the next event applies
        st = await RawStation.connect(node.url, "OLD-1", PASSWORD)
        await st.ok("TransactionEvent", tx_event("Updated", 1, txid="7", ts="2026-01-01T08:10:00Z",
                                                 energy_kwh=2.0))
        await st.ok("TransactionEvent", tx_event("Updated", 2, txid="7", ts="2026-01-01T08:20:00Z",
                                                 energy_kwh=3.5))
        await st.close()
        tx = await redis.hgetall("evfleet:tx:OLD-1:7")
        assert tx["energy_wh"] == "3500.0" and await redis.llen("evfleet:tx:OLD-1:7:events") == 3
        assert await redis.keys("evfleet:tx:OLD-1:7:2*") == []  # no second transaction
    site = await read_site(redis, keys, "depot", datetime(2026, 1, 1, 8, 30, tzinfo=UTC))
    assert [s.tx_ref for s in site.sessions] == ["OLD-1:7"]  # one session, with its needs
    assert site.sessions[0].needs is not None
    assert await migrate_legacy_transactions(redis, keys) == 0  # idempotent
