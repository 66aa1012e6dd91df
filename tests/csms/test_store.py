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


async def test_meter_values_follow_the_evse_transaction_another_node_changed(redis: Redis,
                                                                             keys: Keys) -> None:
    """A node guesses the EVSE's transaction from what it last saw (one round trip); when another
    node has ended it and started another meanwhile, the reading still goes to the EVSE's
    transaction of now, never to the ended one, and `last_seen` and the event say so."""
    here = StateStore(redis, keys, RealClock(), "node-a")
    there = StateStore(redis, keys, RealClock(), "node-b")

    def event(txid: str, kind: TxState, seq: int) -> TxEvent:
        return TxEvent(transaction_id=txid, event_type=kind, seq_no=seq,
                       timestamp=T0 + timedelta(seconds=seq), evse_id=1, connector_id=1)

    await here.transaction_event("CP-1", "site", event("A", TxState.STARTED, 0), {})
    assert await here.meter_values("CP-1", "site", 1, MeterSample(ts="t1", energy_wh=100.0)) == "CP-1:A"
    await there.transaction_event("CP-1", "site", event("A", TxState.ENDED, 1), {})
    await there.transaction_event("CP-1", "site", event("B", TxState.STARTED, 0), {})
    ref = await here.meter_values("CP-1", "site", 1, MeterSample(ts="t2", energy_wh=200.0, voltage_v=231.0))
    assert ref == "CP-1:B"
    assert [json.loads(x)["ts"] for x in await redis.lrange("evfleet:tx:CP-1:A:meter", 0, -1)] == ["t1"]
    assert [json.loads(x)["ts"] for x in await redis.lrange("evfleet:tx:CP-1:B:meter", 0, -1)] == ["t2"]
    assert await redis.hget("evfleet:tx:CP-1:B", "energy_wh") == "200.0"
    assert await redis.hget("evfleet:station:CP-1:evse:1", "voltage_v") == "231.0"
    entries: Any = await redis.xrange("evfleet:events")
    meter = [f for _, f in entries if f["type"] == "meter.values"]
    assert [(f["tx_ref"], json.loads(f["data"])["energy_wh"]) for f in meter] == [("CP-1:A", 100.0),
                                                                                   ("CP-1:B", 200.0)]
    await there.transaction_event("CP-1", "site", event("B", TxState.ENDED, 1), {})
    assert await here.meter_values("CP-1", "site", 1, MeterSample(ts="t3", energy_wh=300.0)) == ""
    assert await redis.llen("evfleet:tx:CP-1:B:meter") == 1


def test_meter_sample_dict_is_the_dataclass_dict() -> None:
    """`MeterSample.to_dict` is written by hand (speed): it must keep every field asdict gives."""
    from dataclasses import asdict

    full = MeterSample(ts="t", energy_wh=1.0, power_w=2.0, current_a=3.0, voltage_v=4.0, soc=5.0, phases=3,
                       extra={"Frequency": 50.0})
    assert full.to_dict() == asdict(full)
    bare = MeterSample(ts="t")
    assert bare.to_dict() == {k: v for k, v in asdict(bare).items() if k != "extra"}
