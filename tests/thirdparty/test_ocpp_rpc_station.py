"""An independent OCPP 2.0.1 station: the npm package `ocpp-rpc` in strict mode (every message
in both directions validated against the OCPP 2.0.1 schemas) against a real csms node with the
operator API and smart charging, on a real Redis. The station script is
tests/thirdparty/ocpp-rpc/station.js; `scripts/setup.sh --dev` installs its dependencies
(`npm ci`). Anything the csms sends that strict ocpp-rpc rejects fails this test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from csms.api.tokens import TokenStore
from csms.app import CsmsNode, running_csms
from csms.settings import CsmsSettings
from csms.store.provisioning import add_id_token, provision_station, set_site_limit
from evfleet.clock import RealClock
from evfleet.keys import Keys, tx_ref
from evfleet.store.client import connect_redis
from tests.waiting import until

STATION_DIR = Path(__file__).parent / "ocpp-rpc"
STATION_ID = "RPC-1"
PASSWORD = "ocpp-rpc-secret-0123456789"
ID_TOKEN = "RPC-TAG-1"
TXID = "rpc-tx-0001"
KEYS = Keys("evfleet")


def _tx_key(station_id: str, txid: str) -> str:
    """Redis key of a station's transaction (its tx_ref: a transactionId is unique only per station)."""
    return KEYS.transaction(tx_ref(station_id, txid))


class StationProcess:
    """The node process running station.js; its JSON lines collected as they come (a reader
    thread: asyncio's child watcher can lose the exit status of a child here)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.strip()
            if line:
                self.lines.append(json.loads(line))

    def events(self, name: str) -> list[dict[str, Any]]:
        """Lines with `event` == name."""
        return [e for e in self.lines if e["event"] == name]

    def calls(self, method: str) -> list[dict[str, Any]]:
        """CALLs the csms sent, by action."""
        return [e for e in self.lines if e["event"] == "got_call" and e["method"] == method]

    async def wait(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """The first line `name` (fails early with the station's error output if it died)."""
        async def seen() -> bool:
            if self.events("error") or (self.proc.poll() is not None and not self.events(name)):
                raise AssertionError(f"station failed before {name!r}: {self.lines[-5:]}")
            return bool(self.events(name))
        await until(seen, timeout, what=f"station event {name}")
        return self.events(name)[0]


@contextlib.asynccontextmanager
async def csms_with_api(redis_url: str) -> AsyncIterator[tuple[CsmsNode, str]]:
    """A node with the API and smart charging (no optimizer: the interim profile path)."""
    fields: dict[str, Any] = dict(redis_url=redis_url, host="127.0.0.1", port=0, node_id="rpc-node",
                                  api_host="127.0.0.1", api_port=0, heartbeat_interval_s=300,
                                  interim_profile_after_s=1.0, call_timeout_s=10.0)
    settings = CsmsSettings(**fields)
    redis = connect_redis(redis_url)
    try:
        operator, _ = await TokenStore(redis, KEYS, RealClock()).create("operator", "operator")
        async with running_csms(settings, services=["csms.api.service:run",
                                                    "csms.smart_charging.service:run"]) as node:
            await until(lambda: _api_up(node), 20, what="operator API")
            yield node, operator
    finally:
        await redis.aclose()


async def _api_up(node: CsmsNode) -> bool:
    if not node.ctx.api_port:
        return False
    try:
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{node.ctx.api_port}/api/v1/whoami")
    except httpx.TransportError:
        return False
    return True


@pytest.fixture
def node_binary() -> str:
    node = shutil.which("node")
    if node is None or not (STATION_DIR / "node_modules" / "ocpp-rpc").is_dir():
        pytest.skip("node or tests/thirdparty/ocpp-rpc/node_modules missing (run scripts/setup.sh --dev)")
    return node


async def test_ocpp_rpc_strict_station_completes_its_script(redis_url: str, node_binary: str) -> None:
    redis = connect_redis(redis_url)
    await provision_station(redis, KEYS, STATION_ID, PASSWORD, site_id="depot")
    await set_site_limit(redis, KEYS, "depot", 40.0)
    await add_id_token(redis, KEYS, ID_TOKEN)
    async with csms_with_api(redis_url) as (node, operator):
        proc = subprocess.Popen([node_binary, "station.js", node.url.rstrip("/"), STATION_ID, PASSWORD,
                                 ID_TOKEN, TXID], cwd=str(STATION_DIR), stdout=subprocess.PIPE, text=True)
        station = StationProcess(proc)
        try:
            await _drive(node, operator, station, redis)
        finally:
            if proc.poll() is None:
                await asyncio.sleep(1.0)
                proc.kill()
            await asyncio.to_thread(proc.wait)
        assert proc.returncode == 0, station.lines[-5:]
        # nothing the csms sent or answered failed ocpp-rpc's strict OCPP 2.0.1 validation
        assert station.events("strict_failure") == [] and station.events("bad_message") == []
        assert [c for c in station.lines if c.get("unexpected")] == []
        await _assert_stored(redis)
    await redis.aclose()


async def _drive(node: CsmsNode, operator: str, station: StationProcess, redis: Redis) -> None:
    assert (await station.wait("strict_mode_on"))["refusedWith"]
    booted = await station.wait("booted")
    assert booted["status"] == "Accepted" and booted["interval"] == 300
    assert (await station.wait("authorized"))["status"] == "Accepted"
    assert (await station.wait("tx_started"))["idTokenStatus"] == "Accepted"
    await station.wait("offline_event_sent")
    assert (await station.wait("needs_sent"))["status"] == "Processing"
    # the csms's own smart-charging path (interim profile, no optimizer) sends the TxProfile
    await station.wait("profile_received", timeout=60)
    tx_profiles = [c["params"] for c in station.calls("SetChargingProfile")
                   if c["params"]["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"]
    assert tx_profiles[-1]["chargingProfile"]["transactionId"] == TXID
    assert tx_profiles[-1]["evseId"] == 1
    # GetCompositeSchedule through the command protocol
    reply = await node.commands.call(STATION_ID, "GetCompositeSchedule",
                                     {"duration": 3600, "evseId": 1, "chargingRateUnit": "W"})
    assert reply.ok, reply
    assert reply.payload is not None and reply.payload["status"] == "Accepted"
    assert reply.payload["schedule"]["chargingSchedulePeriod"]
    # RequestStopTransaction and Reset through the operator API
    api = f"http://127.0.0.1:{node.ctx.api_port}/api/v1"
    headers = {"Authorization": f"Bearer {operator}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        r = await client.post(f"{api}/stations/{STATION_ID}/remote-stop", json={"transaction_id": TXID})
        assert r.status_code == 200 and r.json()["accepted"] is True, r.text
        await station.wait("tx_ended")
        r = await client.post(f"{api}/stations/{STATION_ID}/reset", json={"type": "OnIdle"})
        assert r.status_code == 200 and r.json()["accepted"] is True, r.text
    assert (await station.wait("reset"))["type"] == "OnIdle"
    await station.wait("done")
    await until(lambda: _offline(redis), 10, what="station offline after its reset")


async def _offline(redis: Redis) -> bool:
    return await redis.hget(KEYS.station(STATION_ID), "online") == "0"


async def _assert_stored(redis: Redis) -> None:
    st = await redis.hgetall(KEYS.station(STATION_ID))
    assert (st["vendor"], st["model"], st["serial_number"], st["firmware_version"]) == \
        ("ocpp-rpc", "RPC-1", "SN-RPC-1", "2.2.1")
    evse = await redis.hgetall(KEYS.station_evse(STATION_ID, 1))
    assert float(evse["max_power_w"]) == 22000.0 and evse["phases"] == "3"  # from its NotifyReport
    assert evse.get("transaction_id", "") == ""
    connectors = await redis.hgetall(KEYS.station_connectors(STATION_ID))
    assert json.loads(connectors["1/1"])["status"] == "Available"
    tx = await redis.hgetall(_tx_key(STATION_ID, TXID))
    assert tx["station_id"] == STATION_ID and tx["state"] == "Ended" and tx["stopped_reason"] == "Remote"
    assert float(tx["energy_wh"]) == 2750.0  # 1000 Wh start + 3 x 500 + 250 at the end
    assert tx["offline_events"] == "1"
    assert tx["id_token"] == ID_TOKEN
    seqnos = await redis.smembers(f"{_tx_key(STATION_ID, TXID)}:seqnos")
    assert {m.split(":")[0] for m in seqnos} == {"0", "1", "2", "3"}  # members are seqNo:eventType
    assert {"0:Started", "3:Ended"} <= seqnos
    meter = [json.loads(m) for m in await redis.lrange(f"{_tx_key(STATION_ID, TXID)}:meter", 0, -1)]
    assert len(meter) >= 4 and max(m["energy_wh"] for m in meter) == 2750.0
    needs = json.loads(await redis.get(KEYS.charging_needs(STATION_ID, 1)) or "{}")
    assert needs and needs["transaction_id"] == TXID
    applied = json.loads(await redis.get(KEYS.applied_profile(STATION_ID, 1)) or "{}")
    assert applied["status"] == "Accepted" and applied["transaction_id"] == TXID
