"""Two csms nodes behind a real HAProxy on one Redis (issue 14): calls are routed to the node that
holds a station, and a node's SIGKILL loses no TransactionEvent (its stations reconnect through
HAProxy to the other node and replay their queue)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from csms.store.provisioning import provision_station
from evfleet.events import Event
from evfleet.keys import Keys
from tests.csms.helpers import RawStation
from tests.scale.topology import HAPROXY, topology
from tests.waiting import until

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None and not Path(HAPROXY).exists(),
                                reason="haproxy not installed (scripts/setup.sh --dev installs it)")
PASSWORD = "ha-station-secret-1"
KEYS = Keys()


async def _connect(url: str, station_id: str, timeout_s: float = 20.0) -> RawStation:
    """Connect through HAProxy, retrying while a dead node is still being taken out of rotation."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await RawStation.connect(url, station_id, PASSWORD)
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _owner(redis: Redis, station_id: str) -> str:
    return str(await redis.hget(KEYS.station(station_id), "node") or "")


async def test_a_call_reaches_a_station_held_by_the_other_node(redis_url: str, tmp_path: Path) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    await provision_station(redis, KEYS, "HA-1", PASSWORD, iterations=1000)
    async with topology(redis_url, tmp_path) as topo:
        station = await _connect(topo.url, "HA-1")
        station.auto_answer["GetBaseReport"] = {"status": "Accepted"}
        await station.ok("BootNotification", {"chargingStation": {"model": "m", "vendorName": "v"},
                                              "reason": "PowerUp"})
        await until(lambda: _owner(redis, "HA-1"), 10)
        owner = await _owner(redis, "HA-1")
        other = next(n for n in topo.nodes if n.node_id != owner)
        station.auto_answer["TriggerMessage"] = {"status": "Accepted"}
        async with httpx.AsyncClient() as client:
            reply = await client.post(f"{other.api}/api/v1/stations/HA-1/trigger",
                                      json={"requested_message": "Heartbeat"}, timeout=15)
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "Accepted"
        await station.close()
    await redis.aclose()


def _tx_event(seq_no: int, event_type: str, energy_wh: float, offline: bool = False) -> dict[str, Any]:
    at = datetime(2026, 3, 2, 17, 0, tzinfo=UTC) + timedelta(minutes=seq_no)
    payload: dict[str, Any] = {
        "eventType": event_type, "timestamp": at.isoformat().replace("+00:00", "Z"), "seqNo": seq_no,
        "triggerReason": {"Started": "CablePluggedIn", "Ended": "EVCommunicationLost"}.get(event_type,
                                                                                           "MeterValuePeriodic"),
        "transactionInfo": {"transactionId": "HA-TX-1", "chargingState": "Charging"},
        "meterValue": [{"timestamp": at.isoformat().replace("+00:00", "Z"), "sampledValue": [
            {"value": energy_wh, "measurand": "Energy.Active.Import.Register",
             "unitOfMeasure": {"unit": "Wh"}}]}],
    }
    if event_type == "Started":
        payload["evse"] = {"id": 1, "connectorId": 1}
    if offline:
        payload["offline"] = True
    return payload


async def _stored_seq_nos(redis: Redis, station_id: str) -> list[int]:
    """seqNo of every TransactionEvent the csms stored for the station, from the event stream."""
    entries = await redis.xrange(KEYS.events(), count=100_000)
    events = [Event.from_fields(fields) for _, fields in entries]
    return sorted(int(e.data["seq_no"]) for e in events
                  if e.station_id == station_id and e.type.value.startswith("tx.") and "seq_no" in e.data)


async def test_sigkill_of_a_node_loses_no_transaction_event(redis_url: str, tmp_path: Path) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    await provision_station(redis, KEYS, "HA-2", PASSWORD, iterations=1000)
    async with topology(redis_url, tmp_path) as topo:
        station = await _connect(topo.url, "HA-2")
        station.auto_answer["GetBaseReport"] = {"status": "Accepted"}
        await station.ok("BootNotification", {"chargingStation": {"model": "m", "vendorName": "v"},
                                              "reason": "PowerUp"})
        await station.ok("TransactionEvent", _tx_event(0, "Started", 0))
        await station.ok("TransactionEvent", _tx_event(1, "Updated", 1000))
        owner = topo.node(await _owner(redis, "HA-2"))
        owner.kill()
        await until(lambda: station.ws.close_code is not None, 15, "HAProxy closes the dead node's stations")
        # queued while offline (seqNo 1's answer counts as lost: the station sends it again)
        queue = [_tx_event(1, "Updated", 1000), _tx_event(2, "Updated", 2000, offline=True),
                 _tx_event(3, "Updated", 3000, offline=True), _tx_event(4, "Ended", 4000, offline=True)]
        again = await _connect(topo.url, "HA-2")  # no BootNotification: the station did not reboot
        for payload in queue:
            await again.ok("TransactionEvent", payload)
        survivor = next(n for n in topo.nodes if n is not owner)
        assert await _owner(redis, "HA-2") == survivor.node_id
        assert await _stored_seq_nos(redis, "HA-2") == [0, 1, 2, 3, 4]  # each exactly once
        await again.close()
    await redis.aclose()
