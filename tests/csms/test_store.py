"""The TransactionEvent write path under concurrency (replaced connections, replays racing)."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from csms.core.metering import MeterSample
from csms.core.transactions import TxEvent, TxState
from csms.store.state import StateStore
from evfleet.clock import RealClock
from evfleet.keys import Keys

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


async def test_concurrent_events_and_replays_are_applied_exactly_once(redis: Redis, keys: Keys) -> None:
    stores = [StateStore(redis, keys, RealClock(), f"node-{i}") for i in range(3)]
    n = 40
    events = []
    for seq in range(n):
        kind = TxState.STARTED if seq == 0 else TxState.ENDED if seq == n - 1 else TxState.UPDATED
        events.append(TxEvent(transaction_id="race", event_type=kind, seq_no=seq,
                              timestamp=T0 + timedelta(seconds=seq), evse_id=1, connector_id=1,
                              sample=MeterSample(ts="t", energy_wh=float(seq * 10))))
    work = [(e, s) for e in events for s in stores]  # every event delivered three times
    random.Random(7).shuffle(work)
    decisions = await asyncio.gather(*(s.transaction_event("CP-1", "site", e, {"seqNo": e.seq_no})
                                       for e, s in work))
    assert sum(1 for d in decisions if not d.replay) == n
    tx = await redis.hgetall("evfleet:tx:CP-1:race")
    assert tx["state"] == "Ended" and tx["last_seq_no"] == str(n - 1)
    assert tx["energy_wh"] == repr(float((n - 1) * 10))
    stored = [json.loads(x)["seqNo"] for x in await redis.lrange("evfleet:tx:CP-1:race:events", 0, -1)]
    assert sorted(stored) == list(range(n))
    assert await redis.scard("evfleet:tx:CP-1:race:seqnos") == n
    assert not await redis.sismember("evfleet:tx:active", "CP-1:race")
    entries: Any = await redis.xrange("evfleet:events")
    types = [f["type"] for _, f in entries]
    assert types.count("tx.started") == 1 and types.count("tx.ended") == 1
    assert await redis.hget("evfleet:station:CP-1:evse:1", "transaction_id") in (None, "")  # none active
