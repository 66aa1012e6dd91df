"""An independent OCPP 1.6J charge point: the npm package `ocpp-rpc` in strict ocpp1.6 mode (every
request and response validated against the OCPP 1.6 schemas on the station's side) against a real
csms node, Redis and optimizer worker: boot, configuration read, authorize, a transaction with meter
values, a TxProfile from a plan, remote stop. The station is tests/thirdparty/ocpp-rpc/station16.js
(`scripts/setup.sh --dev` installs ocpp-rpc with `npm ci`)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

from csms.protocol.v16.smart_charging import Facts16, profile_16
from csms.store.provisioning import add_id_token, provision_station
from tests.loop.harness import PASSWORD, SITE, closed_loop
from tests.thirdparty.test_ocpp_rpc_station import STATION_DIR, StationProcess, node_binary  # noqa: F401
from tests.waiting import until

STATION_ID = "RPC16-1"


async def test_ocpp_rpc_strict_16_station_transacts_gets_a_plan_profile_and_stops(
        redis_url: str, node_binary: str) -> None:  # noqa: F811
    async with closed_loop(redis_url, limit_kw=20.0) as lp:
        k = lp.keys
        await add_id_token(lp.redis, k, "RPC-TAG")
        await provision_station(lp.redis, k, STATION_ID, PASSWORD, site_id=SITE, iterations=1000)
        await lp.redis.hset(k.station_evse(STATION_ID, 1), mapping={
            "max_power_w": "11040", "phases": "3", "voltage_v": "230"})
        proc = subprocess.Popen([node_binary, "station16.js", lp.node.url.rstrip("/"), STATION_ID, PASSWORD],
                                cwd=str(STATION_DIR), stdout=subprocess.PIPE, text=True)
        station = StationProcess(proc)
        try:
            booted = await station.wait("booted", 20)
            assert booted == {"event": "booted", "status": "Accepted", "protocol": "ocpp1.6"}
            started = await station.wait("started", 20)
            assert started["authorize"] == "Accepted" and started["start"] == "Accepted"
            txid = int(started["transactionId"])
            tx = await lp.redis.hgetall(k.transaction(f"{STATION_ID}:{txid}"))
            assert tx["station_id"] == STATION_ID and float(tx["energy_wh"]) == 2500.0
            assert float(tx["power_w"]) == 11000.0

            # the plan's TxProfile reaches the station translated with the 1.6 rules (A, at most the
            # 5 periods it allows, integer transactionId) and passes its strict schema validation
            async def plan_accepted() -> dict[str, Any]:
                rec = json.loads(await lp.redis.get(k.applied_profile(STATION_ID, 1)) or "{}")
                return rec if rec.get("status") == "Accepted" and rec.get("kind") == "plan" else {}

            rec = await lp.wait_for(plan_accepted, timeout=20, what="a plan profile accepted by the station")
            expected = profile_16(rec["profile"], Facts16(allowed_units=("A",), max_periods=5))
            got = await until(lambda: [e for e in station.events("profile")
                                       if e["profile"] == expected["csChargingProfiles"]],
                              20, what="the plan profile at the station")
            prof = got[0]["profile"]
            assert got[0]["connectorId"] == 1 and prof["transactionId"] == txid
            assert prof["chargingProfilePurpose"] == "TxProfile"
            assert prof["chargingSchedule"]["chargingRateUnit"] == "A"
            assert 1 <= len(prof["chargingSchedule"]["chargingSchedulePeriod"]) <= 5

            reply = await lp.node.commands.call(STATION_ID, "RemoteStopTransaction", {"transactionId": txid})
            assert reply.ok and reply.payload == {"status": "Accepted"}
            assert (await station.wait("stopped", 20))["transactionId"] == txid
            await until(lambda: proc.poll() is not None, 10, what="the station exits")
            assert proc.returncode == 0 and station.events("error") == [], station.lines[-5:]
            tx = await lp.redis.hgetall(k.transaction(f"{STATION_ID}:{txid}"))
            assert tx["state"] == "Ended" and tx["stopped_reason"] == "Remote"
            assert float(tx["energy_wh"]) == 4200.0
        finally:
            if proc.poll() is None:
                proc.kill()
            await asyncio.to_thread(proc.wait)
