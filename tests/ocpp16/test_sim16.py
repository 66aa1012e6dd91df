"""Simulated OCPP 1.6J stations (`evse_sim`, `StationConfig.ocpp_version="1.6"`) against the csms,
alone and on a mixed 1.6J / 2.0.1 site with the optimizer (real Redis, real WebSockets)."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from csms.app import running_csms
from csms.commands import CommandClient
from csms.settings import CsmsSettings
from csms.store.provisioning import provision_station
from evfleet.clock import ScaledClock
from evfleet.events import EventType, event_fields
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evfleet.tasks import raise_if_cancelling
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.ocpp16_link import tx16
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from optimizer.worker import OptimizerWorker, WorkerConfig
from tests.waiting import stopped, until

K = Keys("evfleet")
PASSWORD = "sim16-password-1"


def sim(url: str, clock: ScaledClock, sid: str, version: str, seed: int = 1) -> SimStation:
    cfg = StationConfig(
        sid, (EvseSpec.ac(22.0),), tx_updated_interval_s=60, aligned_interval_s=0, ocpp_version=version
    )
    conn = ConnectionConfig(
        url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3, response_timeout_s=5
    )
    return SimStation(cfg, conn, clock, rng=random.Random(seed))


def ev(clock: ScaledClock, name: str, hours: float, token: str | None = "TAG-1") -> Ev:
    now = clock.now()
    return Ev(
        EvSpec(name, "ID.4", 77.0, 0.2, 0.9, 22.0, 135.0, now, now + timedelta(hours=hours), id_token=token)
    )


async def test_sim_16_station_transacts_obeys_a_translated_profile_and_stops(redis_url: str) -> None:
    clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=60.0)
    redis = connect_redis(redis_url)
    tasks: list[asyncio.Task[Any]] = []
    try:
        await provision_station(redis, K, "SIM16-1", PASSWORD, site_id="depot", iterations=1000)
        settings = CsmsSettings(
            redis_url=redis_url,
            host="127.0.0.1",
            port=0,
            node_id="sim16",
            api_enabled=False,
            heartbeat_interval_s=120,
            smart_charging=False,
            accept_all_tokens=True,
        )
        async with running_csms(settings, clock=clock, services=[]) as node:
            st = sim(node.url, clock, "SIM16-1", "1.6")
            tasks.append(asyncio.create_task(st.run(tick_s=0.5)))
            await until(lambda: st.online, what="1.6 station online")
            info = await redis.hgetall(K.station("SIM16-1"))
            assert info["ocpp_version"] == "1.6" and info["model"] == "SimStation"
            await until(lambda: redis.hget(K.station("SIM16-1"), "ocpp16_max_periods"), what="config read")
            sim_tx = st.plug_in(1, ev(clock, "EV-1", 6))
            ids = tx16(st)
            await until(lambda: sim_tx in ids.ids, what="StartTransaction answered")
            txid = str(ids.ids[sim_tx])
            tx = await until(
                lambda: redis.hgetall(K.transaction(f"SIM16-1:{txid}")), what="transaction stored"
            )
            assert tx["station_id"] == "SIM16-1" and tx["evse_id"] == "1" and tx["id_token"] == "TAG-1"
            await until(lambda: _power(redis, txid, lambda p: p > 21_000), what="meter values at 22 kW")
            commands = CommandClient(redis, K, clock, 10.0)
            now = clock.now().replace(microsecond=0)
            reply = await commands.call(
                "SIM16-1",
                "SetChargingProfile",
                {
                    "evseId": 1,
                    "chargingProfile": {
                        "id": 5,
                        "stackLevel": 1,
                        "chargingProfilePurpose": "TxProfile",
                        "chargingProfileKind": "Absolute",
                        "transactionId": txid,
                        "chargingSchedule": [
                            {
                                "id": 5,
                                "startSchedule": now.isoformat().replace("+00:00", "Z"),
                                "chargingRateUnit": "W",
                                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10_000.0}],
                            }
                        ],
                    },
                },
            )
            assert reply.ok and reply.payload == {"status": "Accepted"}, reply
            await until(lambda: st.evses[1].power_w <= 10_000 + 1, what="the station obeys 10 kW")
            await until(lambda: _power(redis, txid, lambda p: p <= 10_001), what="metered power follows")
            comp = await commands.call(
                "SIM16-1", "GetCompositeSchedule", {"evseId": 1, "duration": 600, "chargingRateUnit": "W"}
            )
            assert comp.ok and comp.payload is not None
            assert comp.payload["schedule"]["chargingSchedulePeriod"][0]["limit"] <= 10_000
            reply = await commands.call("SIM16-1", "RequestStopTransaction", {"transactionId": txid})
            assert reply.ok and reply.payload == {"status": "Accepted"}
            await until(lambda: _state(redis, txid, "Ended"), what="transaction ended")
            tx = await redis.hgetall(K.transaction(f"SIM16-1:{txid}"))
            assert tx["stopped_reason"] == "Remote" and float(tx["energy_wh"]) > 0
            await commands.aclose()
    finally:
        await stopped(*tasks)
        await redis.aclose()


async def _power(redis: Any, txid: str, ok: Any) -> bool:
    value = await redis.hget(K.transaction(f"SIM16-1:{txid}"), "power_w")
    return value is not None and ok(float(value))


async def _state(redis: Any, txid: str, state: str) -> bool:
    return bool(await redis.hget(K.transaction(f"SIM16-1:{txid}"), "state") == state)


async def test_mixed_sim_site_stays_under_its_limit_through_replans(redis_url: str) -> None:
    clock = ScaledClock(datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0), speed=60.0)
    redis = connect_redis(redis_url)
    limit_kw = 40.0
    await redis.hset(K.site("depot"), mapping={"limit_kw": str(limit_kw)})
    await redis.sadd(K.sites(), "depot")
    plan = [("MIX-16-A", "1.6"), ("MIX-201-B", "2.0.1"), ("MIX-201-C", "2.0.1")]
    for sid, _ in plan:
        await provision_station(redis, K, sid, PASSWORD, site_id="depot", iterations=1000)
    settings = CsmsSettings(
        redis_url=redis_url,
        host="127.0.0.1",
        port=0,
        node_id="mix16",
        api_enabled=False,
        heartbeat_interval_s=120,
        interim_profile_after_s=0.5,
        fallback_limit_kw=7.0,
        accept_all_tokens=True,
    )
    tasks: list[asyncio.Task[Any]] = []
    stations: list[SimStation] = []
    over: list[tuple[str, float, float]] = []
    samples = 0
    try:
        async with running_csms(settings, clock=clock, services=["csms.smart_charging.service:run"]) as node:
            worker = OptimizerWorker(
                connect_redis(redis_url), K, WorkerConfig(debounce_s=0.2, block_ms=100), clock=clock
            )
            tasks.append(asyncio.create_task(worker.run()))
            for i, (sid, version) in enumerate(plan):
                st = sim(node.url, clock, sid, version, seed=i)
                stations.append(st)
                tasks.append(asyncio.create_task(st.run(tick_s=0.5)))
            await until(lambda: all(s.online for s in stations), what="stations online")

            async def monitor() -> None:
                """What the stations draw, every 20 ms: over the limit for more than 1.5 s real is a breach
                (a plug-in and a lowered limit each take the csms a moment; it must catch up)."""
                nonlocal samples
                over_since: float | None = None
                while True:
                    limit_w = float(await redis.hget(K.site("depot"), "limit_kw") or 0) * 1000
                    raise_if_cancelling()  # redis-py can lose our cancellation (evfleet.tasks)
                    drawn = sum(s.evses[1].power_w for s in stations)
                    samples += 1
                    t = asyncio.get_running_loop().time()
                    over_since = (over_since or t) if drawn > limit_w + 1 else None
                    if over_since is not None and t - over_since > 1.5:
                        over.append((clock.now().isoformat(), drawn, limit_w))
                    await asyncio.sleep(0.02)

            tasks.append(asyncio.create_task(monitor()))
            for i, st in enumerate(stations):
                st.plug_in(1, ev(clock, f"EV-{i}", 3 + i, token=f"TAG-{i}"))
            for sid, _ in plan:
                await until(
                    lambda sid=sid: _plan_accepted(redis, sid), timeout_s=20, what=f"plan profile {sid}"
                )
            assert await redis.hget(K.station("MIX-16-A"), "ocpp_version") == "1.6"
            for new_kw in (25.0, 35.0, 18.0):  # re-plans: down, up, down
                await redis.hset(K.site("depot"), "limit_kw", str(new_kw))
                await redis.xadd(
                    K.events(),
                    event_fields(  # type: ignore[arg-type]
                        EventType.SITE_LIMIT, datetime.now(UTC), site_id="depot", data={"limit_kw": new_kw}
                    ),
                )

                async def replanned(kw: float = new_kw) -> bool:
                    doc = json.loads(await redis.get(K.site_plan("depot")) or "{}")
                    return bool(doc.get("limit_kw") == kw)

                await until(replanned, timeout_s=20, what=f"a plan for {new_kw} kW")
                await asyncio.sleep(2.0)
                assert sum(s.evses[1].power_w for s in stations) <= new_kw * 1000 + 1
            assert samples > 100
            assert over == [], over[:5]
            assert all(s.evses[1].power_w > 0 for s in stations)  # everyone charges, within the limit
    finally:
        for st in stations:
            st.stop()
        await stopped(*tasks)
        await redis.aclose()


async def _plan_accepted(redis: Any, sid: str) -> bool:
    raw = await redis.get(K.applied_profile(sid, 1))
    rec = json.loads(raw) if raw else {}
    return rec.get("kind") == "plan" and rec.get("status") == "Accepted"


async def test_every_16_call_of_the_command_protocol_reaches_a_sim_station(redis_url: str) -> None:
    """RemoteStart/Stop, Reset, ChangeAvailability, UnlockConnector, TriggerMessage, Get/ChangeConfiguration,
    ClearCache, SendLocalList/GetLocalListVersion, ReserveNow/CancelReservation, GetDiagnostics,
    UpdateFirmware: sent through Redis to the node, answered by a simulated 1.6J station."""
    clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=1.0)
    redis = connect_redis(redis_url)
    tasks: list[asyncio.Task[Any]] = []
    try:
        await provision_station(redis, K, "SIM16-C", PASSWORD, site_id="depot", iterations=1000)
        settings = CsmsSettings(
            redis_url=redis_url,
            host="127.0.0.1",
            port=0,
            node_id="sim16c",
            api_enabled=False,
            smart_charging=False,
            accept_all_tokens=True,
        )
        async with running_csms(settings, clock=clock, services=[]) as node:
            st = sim(node.url, clock, "SIM16-C", "1.6")
            tasks.append(asyncio.create_task(st.run(tick_s=0.2)))
            await until(lambda: st.online, what="1.6 station online")
            commands = CommandClient(redis, K, clock, 10.0)
            soon = (clock.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
            calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
                ("GetConfiguration", {"key": ["HeartbeatInterval"]}, {}),
                ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "120"}, {"status": "Accepted"}),
                ("ClearCache", {}, {"status": "Accepted"}),
                ("GetLocalListVersion", {}, {"listVersion": 0}),
                ("SendLocalList", {"listVersion": 1, "updateType": "Full"}, {"status": "NotSupported"}),
                (
                    "ReserveNow",
                    {"connectorId": 1, "expiryDate": soon, "idTag": "T", "reservationId": 1},
                    {"status": "Rejected"},
                ),
                ("CancelReservation", {"reservationId": 1}, {"status": "Rejected"}),
                ("GetDiagnostics", {"location": "ftp://127.0.0.1/diag"}, {}),
                ("UpdateFirmware", {"location": "https://127.0.0.1/fw.bin", "retrieveDate": soon}, {}),
                ("TriggerMessage", {"requestedMessage": "Heartbeat"}, {"status": "Accepted"}),
                ("UnlockConnector", {"connectorId": 1}, {"status": "Unlocked"}),
                ("RemoteStartTransaction", {"idTag": "REMOTE-1", "connectorId": 1}, {"status": "Accepted"}),
            ]
            for action, payload, expected in calls:
                reply = await commands.call("SIM16-C", action, payload)
                assert reply.ok, (action, reply)
                assert reply.payload is not None
                assert {k: reply.payload.get(k) for k in expected} == expected, (action, reply.payload)
            assert st.heartbeat_s == 120
            ids = tx16(st)
            # the remote start runs once the idTag is authorized: the csms assigns its transactionId
            sim_tx = await until(lambda: next(iter(ids.ids), None), what="remotely started transaction")
            txid = ids.ids[sim_tx]
            reply = await commands.call("SIM16-C", "RemoteStopTransaction", {"transactionId": txid})
            assert reply.ok and reply.payload == {"status": "Accepted"}
            reply = await commands.call(
                "SIM16-C", "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}
            )
            assert (
                reply.ok
                and reply.payload is not None
                and reply.payload["status"] in ("Accepted", "Scheduled")
            )
            reply = await commands.call("SIM16-C", "Reset", {"type": "Soft"})
            assert reply.ok and reply.payload == {"status": "Accepted"}
            await commands.aclose()
    finally:
        await stopped(*tasks)
        await redis.aclose()
