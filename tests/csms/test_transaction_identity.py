"""Transaction identity is (station, transactionId, generation), end to end: real WebSocket
stations -> csms -> real Redis -> the optimizer's snapshot and the API's reader.

OCPP makes a transactionId unique only within one station, and chargers that count ("1", "2")
reuse ids across stations and after a counter reset.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from csms.api.reader import StateReader
from csms.app import CsmsNode
from csms.core.transactions import TxEvent, TxState, belongs_to_earlier_generation, starts_new_generation
from evfleet.clock import RealClock
from evfleet.keys import Keys, parse_tx_ref, tx_ref
from optimizer.site_reader import read_site
from optimizer.snapshot import SnapshotConfig, build_instance
from tests.csms.conftest import PASSWORD
from tests.csms.helpers import RawStation, stream_events
from tests.csms.test_station_messages import NEEDS, tx_event

Provision = Callable[..., Awaitable[None]]


async def _booted(node: CsmsNode, provision: Provision, station_id: str) -> RawStation:
    await provision(station_id, site_id="depot")
    st = await RawStation.connect(node.url, station_id, PASSWORD)
    await st.ok("BootNotification", {"reason": "PowerUp",
                                     "chargingStation": {"model": "M", "vendorName": "V"}})
    await st.ok("StatusNotification", {"timestamp": "2026-01-01T08:00:00Z", "connectorStatus": "Occupied",
                                       "evseId": 1, "connectorId": 1})
    return st


async def _tx(st: RawStation, kind: str, seq: int, txid: str, hh_mm: str, kwh: float) -> None:
    """One TransactionEvent on 2026-01-01 at `hh_mm` (UTC) with an energy reading; must be answered."""
    assert await st.ok("TransactionEvent", tx_event(kind, seq, txid=txid, ts=f"2026-01-01T{hh_mm}:00Z",
                                                    energy_kwh=kwh)) == {}


@pytest.fixture
async def two(node: CsmsNode, provision: Provision) -> AsyncIterator[tuple[RawStation, RawStation]]:
    """Stations XA-1 and XB-1 on site `depot`, both booted."""
    a, b = await _booted(node, provision, "XA-1"), await _booted(node, provision, "XB-1")
    yield a, b
    await a.close()
    await b.close()


def test_tx_ref_is_unambiguous_and_round_trips() -> None:
    for sid, txid, gen in [("CP-1", "1", 1), ("CP-1", "a:b/c#+%", 3), ("x", "1:2", 1), ("x", "1", 2)]:
        ref = tx_ref(sid, txid, gen)
        assert parse_tx_ref(ref) == (sid, txid, gen)
    assert tx_ref("CP-1", "1") == "CP-1:1" and tx_ref("CP-1", "1", 2) == "CP-1:1:2"
    assert tx_ref("x", "1:2") != tx_ref("x", "1", 2)
    with pytest.raises(ValueError):
        parse_tx_ref("no-colon")


def _ev(kind: TxState, seq: int, hh_mm: str, evse_id: int | None = 1) -> TxEvent:
    h, m = map(int, hh_mm.split(":"))
    return TxEvent(transaction_id="1", event_type=kind, seq_no=seq,
                   timestamp=datetime(2026, 1, 1, h, m, tzinfo=UTC), evse_id=evse_id)


def test_counter_reset_rule() -> None:
    ended = {"state": "Ended", "started_at": "2026-01-01T08:00:00+00:00",
             "ended_at": "2026-01-01T08:30:00+00:00",
             "updated_at": "2026-01-01T08:30:00+00:00", "evse_id": "1"}
    assert starts_new_generation(ended, True, _ev(TxState.STARTED, 0, "09:00"))
    assert starts_new_generation(ended, True, _ev(TxState.STARTED, 0, "08:30"))  # plugged in at once
    assert not starts_new_generation(ended, True, _ev(TxState.STARTED, 0, "08:00"))  # replay of old Started
    assert not starts_new_generation(ended, False, _ev(TxState.STARTED, 0, "08:10"))  # late, offline-queued
    assert not starts_new_generation(ended, False, _ev(TxState.UPDATED, 5, "09:00"))
    assert not starts_new_generation(ended, False, _ev(TxState.ENDED, 5, "09:00"))  # sent Ended twice
    running = {**ended, "state": "Updated", "updated_at": "2026-01-01T08:20:00+00:00"}
    del running["ended_at"]
    # the Ended was lost (reboot) and the counter restarted: same (seqNo, Started), later than anything stored
    assert starts_new_generation(running, True, _ev(TxState.STARTED, 0, "09:00"))
    assert not starts_new_generation(running, False, _ev(TxState.STARTED, 0, "09:00"))  # Started not seen yet
    assert not starts_new_generation(running, True, _ev(TxState.STARTED, 0, "08:10"))
    assert not starts_new_generation(running, True, _ev(TxState.STARTED, 0, "09:00", evse_id=2))
    assert not starts_new_generation({}, False, _ev(TxState.STARTED, 0, "09:00"))
    second = {"state": "Started", "generation": "2", "started_at": "2026-01-01T09:00:00+00:00"}
    assert belongs_to_earlier_generation(second, _ev(TxState.ENDED, 2, "08:30"))
    assert not belongs_to_earlier_generation(second, _ev(TxState.UPDATED, 1, "09:05"))
    assert not belongs_to_earlier_generation({**second, "generation": "1"}, _ev(TxState.ENDED, 2, "08:30"))


async def test_two_stations_same_transaction_id_both_kept_and_planned(
        two: tuple[RawStation, RawStation], redis: Redis, keys: Keys) -> None:
    a, b = two
    for st, kwh in ((a, 1.0), (b, 2.0)):
        started = tx_event("Started", 0, txid="1", energy_kwh=kwh)
        assert await st.ok("TransactionEvent", started) == {}
        assert await st.ok("TransactionEvent", started) == {}  # its own replay: answered, not re-applied
    await a.ok("MeterValues", {"evseId": 1, "meterValue": [{"timestamp": "2026-01-01T08:05:00Z",
                                                            "sampledValue": [
        {"value": 3.0, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "kWh"}},
        {"value": 7000, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}}]}]})
    await b.ok("TransactionEvent", tx_event("Updated", 1, txid="1", ts="2026-01-01T08:05:00Z", energy_kwh=5.0,
                                            power_w=11000))
    assert (await a.ok("NotifyEVChargingNeeds", NEEDS))["status"] == "Processing"
    needs_b = json.loads(json.dumps(NEEDS))
    needs_b["chargingNeeds"]["acChargingParameters"]["energyAmount"] = 40000
    assert (await b.ok("NotifyEVChargingNeeds", needs_b))["status"] == "Processing"

    ta, tb = await redis.hgetall("evfleet:tx:XA-1:1"), await redis.hgetall("evfleet:tx:XB-1:1")
    assert ta["station_id"] == "XA-1" and tb["station_id"] == "XB-1"
    assert ta["transaction_id"] == tb["transaction_id"] == "1"
    assert ta["energy_wh"] == "3000.0" and ta["power_w"] == "7000.0"
    assert tb["energy_wh"] == "5000.0" and tb["power_w"] == "11000.0"
    assert [json.loads(m)["energy_wh"] for m in await redis.lrange("evfleet:tx:XA-1:1:meter", 0, -1)] == [
        1000.0, 3000.0]
    assert [json.loads(m)["energy_wh"] for m in await redis.lrange("evfleet:tx:XB-1:1:meter", 0, -1)] == [
        2000.0, 5000.0]
    assert await redis.smembers("evfleet:tx:active") == {"XA-1:1", "XB-1:1"}
    assert json.loads(await redis.get("evfleet:needs:XA-1:1"))["tx_ref"] == "XA-1:1"
    assert json.loads(await redis.get("evfleet:needs:XB-1:1"))["tx_ref"] == "XB-1:1"
    started = await stream_events(redis, {"tx.started"})
    assert sorted((e["station_id"], e["transaction_id"], e["tx_ref"]) for e in started) == [
        ("XA-1", "1", "XA-1:1"), ("XB-1", "1", "XB-1:1")]

    # the optimizer sees and plans both sessions, each with its own needs and energy
    site = await read_site(redis, keys, "depot", datetime(2026, 1, 1, 8, 10, tzinfo=UTC))
    sessions = {s.tx_ref: s for s in site.sessions}
    assert set(sessions) == {"XA-1:1", "XB-1:1"}
    assert sessions["XA-1:1"].energy_wh == 3000.0 and sessions["XB-1:1"].energy_wh == 5000.0
    assert sessions["XA-1:1"].needs["energy_amount_wh"] == 30000
    assert sessions["XB-1:1"].needs["energy_amount_wh"] == 40000
    snap = build_instance(site, datetime(2026, 1, 1, 8, 10, tzinfo=UTC), SnapshotConfig())
    assert snap.ev_evse == {"XA-1:1": "XA-1/1", "XB-1:1": "XB-1/1"}
    assert len(snap.instance.evs) == 2

    reader = StateReader(redis, keys, RealClock())
    docs = await reader.sessions(["XA-1:1", "XB-1:1"])
    assert [(d["station_id"], d["transaction_id"], d["energy_kwh"]) for d in docs] == [
        ("XA-1", "1", 3.0), ("XB-1", "1", 5.0)]
    assert docs[0]["charging_needs"]["energy_amount_wh"] == 30000
    assert docs[1]["charging_needs"]["energy_amount_wh"] == 40000


async def test_a_station_cannot_end_another_stations_transaction(
        two: tuple[RawStation, RawStation], redis: Redis) -> None:
    a, b = two
    await a.ok("TransactionEvent", tx_event("Started", 0, txid="T", energy_kwh=1.0))
    await _tx(a, "Updated", 1, "T", "08:05", 2.0)
    before = await redis.hgetall("evfleet:tx:XA-1:T")
    # XB-1 sends Ended for "T": it can only mean its own transaction "T" (stored under XB-1)
    forged = tx_event("Ended", 2, txid="T", ts="2026-01-01T08:06:00Z", energy_kwh=999_999.0,
                      transactionInfo={"transactionId": "T", "stoppedReason": "Remote"})
    assert await b.ok("TransactionEvent", forged) == {}
    assert await redis.hgetall("evfleet:tx:XA-1:T") == before
    assert await redis.llen("evfleet:tx:XA-1:T:events") == 2
    assert await redis.sismember("evfleet:tx:active", "XA-1:T")
    assert await redis.hget("evfleet:station:XA-1:evse:1", "tx_ref") == "XA-1:T"
    own = await redis.hgetall("evfleet:tx:XB-1:T")
    assert own["station_id"] == "XB-1" and own["state"] == "Ended" and own["energy_wh"] == "999999000.0"
    assert not await redis.sismember("evfleet:tx:active", "XB-1:T")
    # XA-1's own events keep applying to its transaction
    await _tx(a, "Updated", 2, "T", "08:10", 3.0)
    await _tx(a, "Ended", 3, "T", "08:20", 4.0)
    mine = await redis.hgetall("evfleet:tx:XA-1:T")
    assert mine["state"] == "Ended" and mine["energy_wh"] == "4000.0" and mine["station_id"] == "XA-1"
    ended = [(e["station_id"], e["tx_ref"]) for e in await stream_events(redis, {"tx.ended"})]
    assert ended == [("XB-1", "XB-1:T"), ("XA-1", "XA-1:T")]


async def test_counter_reset_starts_a_new_transaction_and_keeps_the_old(
        two: tuple[RawStation, RawStation], redis: Redis, keys: Keys) -> None:
    a, _ = two
    await a.ok("TransactionEvent", tx_event("Started", 0, txid="1", energy_kwh=1.0))
    await _tx(a, "Updated", 1, "1", "08:10", 4.0)
    await _tx(a, "Ended", 2, "1", "08:30", 9.0)
    # the charger restarts its counter: a new transaction "1"
    new_started = tx_event("Started", 0, txid="1", ts="2026-01-01T09:00:00Z", energy_kwh=0.5)
    assert await a.ok("TransactionEvent", new_started) == {}
    assert await a.ok("TransactionEvent", new_started) == {}  # its replay
    await _tx(a, "Updated", 1, "1", "09:10", 2.0)
    # a late replay of the old transaction's Ended goes to the old one, not the new one
    await _tx(a, "Ended", 2, "1", "08:30", 9.0)

    old, new = await redis.hgetall("evfleet:tx:XA-1:1"), await redis.hgetall("evfleet:tx:XA-1:1:2")
    assert old["state"] == "Ended" and old["energy_wh"] == "9000.0" and old["generation"] == "1"
    assert old["started_at"].startswith("2026-01-01T08:00") and old["ended_at"].startswith("2026-01-01T08:30")
    assert new["state"] == "Updated" and new["energy_wh"] == "2000.0" and new["generation"] == "2"
    assert new["started_at"].startswith("2026-01-01T09:00") and new["previous_tx_ref"] == "XA-1:1"
    assert new["transaction_id"] == "1" and new["station_id"] == "XA-1"
    assert await redis.llen("evfleet:tx:XA-1:1:events") == 3
    assert await redis.llen("evfleet:tx:XA-1:1:2:events") == 2
    assert await redis.hget("evfleet:station:XA-1:tx-generations", "1") == "2"
    assert await redis.smembers("evfleet:tx:active") == {"XA-1:1:2"}
    assert await redis.hget("evfleet:station:XA-1:evse:1", "tx_ref") == "XA-1:1:2"
    started = [e["tx_ref"] for e in await stream_events(redis, {"tx.started"})]
    assert started == ["XA-1:1", "XA-1:1:2"]

    reader = StateReader(redis, keys, RealClock())
    assert await reader.resolve_tx("XA-1", "1") == "XA-1:1:2"
    assert await reader.resolve_tx("XA-1", "1", 1) == "XA-1:1"
    assert await reader.resolve_tx("XA-1", "1", 3) is None
    assert await reader.resolve_tx("XB-1", "1") is None
    doc = await reader.transaction("XA-1:1:2")
    assert doc is not None and doc["generation"] == 2 and doc["generations"] == 2 and doc["live"]


async def test_counter_reset_after_a_lost_ended_supersedes_the_old_use(
        two: tuple[RawStation, RawStation], redis: Redis) -> None:
    a, _ = two
    await a.ok("TransactionEvent", tx_event("Started", 0, txid="7", energy_kwh=1.0))
    await _tx(a, "Updated", 1, "7", "08:10", 3.0)
    # power loss: no Ended; after the reboot the counter starts again at "7"
    await _tx(a, "Started", 0, "7", "10:00", 0.0)
    old, new = await redis.hgetall("evfleet:tx:XA-1:7"), await redis.hgetall("evfleet:tx:XA-1:7:2")
    assert old["state"] == "Ended" and old["stopped_reason"] == "Other" and old["energy_wh"] == "3000.0"
    assert old["superseded_by_ref"] == "XA-1:7:2"
    assert new["state"] == "Started" and new["started_at"].startswith("2026-01-01T10:00")
    assert await redis.smembers("evfleet:tx:active") == {"XA-1:7:2"}


async def test_replay_is_exact_on_seqno_and_event_type(two: tuple[RawStation, RawStation],
                                                       redis: Redis) -> None:
    a, _ = two
    await a.ok("TransactionEvent", tx_event("Started", 0, txid="9"))
    await _tx(a, "Updated", 1, "9", "08:05", 2.0)
    # a charger that numbers its Ended like the last Updated: not a replay, the Ended is applied
    await _tx(a, "Ended", 1, "9", "08:06", 2.5)
    tx: dict[str, Any] = await redis.hgetall("evfleet:tx:XA-1:9")
    assert tx["state"] == "Ended" and tx["energy_wh"] == "2500.0"
    assert await redis.smembers("evfleet:tx:XA-1:9:seqnos") == {"0:Started", "1:Updated", "1:Ended"}
