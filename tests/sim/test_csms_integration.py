"""Simulated stations against this repo's csms over real WebSockets and a real (private) Redis."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from csms.app import running_csms
from csms.commands import CommandClient
from csms.settings import CsmsSettings
from csms.store.embedded import free_port
from csms.store.provisioning import provision_station
from evfleet.clock import ScaledClock
from evfleet.keys import Keys, tx_ref
from evfleet.store.client import connect_redis
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.hlc import BasicHlc
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.waiting import stopped, until

PASSWORD = "sim-password-1"
KEYS = Keys("evfleet")
START = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


def settings(redis_url: str, port: int = 0) -> CsmsSettings:
    """A test csms node without side services."""
    fields: dict[str, Any] = dict(
        redis_url=redis_url,
        host="127.0.0.1",
        port=port,
        node_id="sim-test-node",
        api_enabled=False,
        heartbeat_interval_s=120,
        smart_charging=False,
    )
    return CsmsSettings(**fields)


def station_for(url: str, clock: ScaledClock, sid: str = "SIM-1") -> SimStation:
    cfg = StationConfig(sid, (EvseSpec.ac(22.0),), tx_updated_interval_s=60, aligned_interval_s=0)
    conn = ConnectionConfig(
        url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3, response_timeout_s=5
    )
    return SimStation(cfg, conn, clock, hlc=BasicHlc(), rng=random.Random(11))


def ev_for(clock: ScaledClock, hours: float, hlc: bool = True) -> Ev:
    now = clock.now()
    return Ev(
        EvSpec("EV-A", "VW ID.4", 77.0, 0.2, 0.9, 22.0, 135.0, now, now + timedelta(hours=hours), hlc=hlc)
    )


async def tx_events(redis: Redis, tx_id: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in await redis.lrange(KEYS.transaction_events(tx_id), 0, -1)]


async def test_boot_session_meter_values_and_obeyed_profile(redis_url: str) -> None:
    clock = ScaledClock(START, speed=60.0)  # 60 s simulated per real second
    redis = connect_redis(redis_url)
    try:
        await provision_station(redis, KEYS, "SIM-1", PASSWORD, site_id="depot", iterations=1000)
        async with running_csms(settings(redis_url), clock=clock, services=[]) as node:
            station = station_for(node.url, clock)
            runner = asyncio.create_task(station.run(tick_s=5.0))
            try:
                await until(lambda: station.online)
                info = await redis.hgetall(KEYS.station("SIM-1"))
                assert info["online"] == "1" and info["vendor"] == "evfleet" and info["model"] == "SimStation"
                status = await until(lambda: redis.hget(KEYS.station_connectors("SIM-1"), "1/1"))
                assert json.loads(status)["status"] == "Available"

                tx_id = station.plug_in(1, ev_for(clock, hours=6))
                ref = tx_ref("SIM-1", tx_id)
                assert await until(lambda: redis.sismember(KEYS.transactions_active(), ref))
                needs = json.loads(await until(lambda: redis.get(KEYS.charging_needs("SIM-1", 1))))
                assert needs["transaction_id"] == tx_id and needs["energy_amount_wh"] > 40_000
                # meter values flow: at least two periodic samples at the full 22 kW
                await until(lambda: redis.llen(KEYS.transaction_meter(ref)), timeout_s=5)
                await until(lambda: _last_power(redis, ref, lambda p: p > 21_000), timeout_s=5)

                # the csms sends a 10 kW TxProfile through the Redis command protocol
                commands = CommandClient(redis, KEYS, clock, 10.0)
                profile = {
                    "id": 42,
                    "stackLevel": 1,
                    "chargingProfilePurpose": "TxProfile",
                    "chargingProfileKind": "Absolute",
                    "transactionId": tx_id,
                    "chargingSchedule": [
                        {
                            "id": 1,
                            "chargingRateUnit": "W",
                            "startSchedule": clock.now().isoformat(),
                            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10_000}],
                        }
                    ],
                }
                reply = await commands.call(
                    "SIM-1", "SetChargingProfile", {"evseId": 1, "chargingProfile": profile}
                )
                assert reply.ok and reply.payload == {"status": "Accepted"}, reply
                answered = asyncio.get_running_loop().time()
                # power follows the limit within one meter interval (60 s simulated = 1 s real)
                await until(lambda: _last_power(redis, ref, lambda p: p <= 10_000 + 1), timeout_s=1.0)
                assert asyncio.get_running_loop().time() - answered <= 1.0
                comp = await commands.call(
                    "SIM-1", "GetCompositeSchedule", {"duration": 600, "evseId": 1, "chargingRateUnit": "W"}
                )
                assert comp.ok and comp.payload is not None
                assert comp.payload["schedule"]["chargingSchedulePeriod"][0]["limit"] == 10_000
                rejected = await commands.call(
                    "SIM-1", "SetChargingProfile", {"evseId": 0, "chargingProfile": profile}
                )
                assert (
                    rejected.ok and rejected.payload is not None and rejected.payload["status"] == "Rejected"
                )

                station.unplug(1)
                await until(lambda: _hget(redis, KEYS.transaction(ref), "state", "Ended"))
                events = await tx_events(redis, ref)
                assert [e["seqNo"] for e in events] == list(range(len(events)))
                assert events[0]["triggerReason"] == "CablePluggedIn"
                assert events[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
                assert not any(e.get("offline") for e in events)
            finally:
                station.stop()
                await asyncio.wait_for(runner, 10)
    finally:
        await redis.aclose()


async def test_reconnect_replays_offline_queue_without_loss_or_duplication(redis_url: str) -> None:
    clock = ScaledClock(START, speed=240.0)  # a simulated hour in 15 s
    port = free_port()
    redis = connect_redis(redis_url)
    try:
        await provision_station(redis, KEYS, "SIM-2", PASSWORD, iterations=1000)
        async with running_csms(settings(redis_url, port), clock=clock, services=[]) as node:
            url = node.url
            station = station_for(url, clock, "SIM-2")
            runner = asyncio.create_task(station.run(tick_s=5.0))
            await until(lambda: station.online)
            tx_id = station.plug_in(1, ev_for(clock, hours=0.3, hlc=False))
            ref = tx_ref("SIM-2", tx_id)
            await until(lambda: redis.llen(KEYS.transaction_events(ref)))
            # a 7 kW TxDefaultProfile that the station must keep enforcing while offline
            default = {
                "id": 3,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": [
                    {
                        "id": 1,
                        "chargingRateUnit": "W",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7_000}],
                    }
                ],
            }
            reply = await CommandClient(redis, KEYS, clock, 10.0).call(
                "SIM-2", "SetChargingProfile", {"evseId": 0, "chargingProfile": default}
            )
            assert reply.ok and reply.payload == {"status": "Accepted"}
        # the csms is gone: the station keeps charging, queues events offline, the EV leaves
        try:
            await until(lambda: not station.online)
            await until(lambda: station.evses[1].ev is None, timeout_s=10)
            queued = station.queued_transaction_events
            assert queued >= 3
            stored_before = await redis.llen(KEYS.transaction_events(ref))
            async with running_csms(settings(redis_url, port), clock=clock, services=[]):
                await until(lambda: station.online and station.queued_transaction_events == 0, timeout_s=10)
                await until(lambda: _hget(redis, KEYS.transaction(ref), "state", "Ended"))
                events = await tx_events(redis, ref)
                seqs = [e["seqNo"] for e in events]
                assert seqs == list(range(len(seqs))), "every seqNo once, in order"
                # one queued event may already have been stored when the link dropped (its answer lost)
                assert len(events) >= stored_before + queued - 1
                assert events[-1]["eventType"] == "Ended"
                offline = [e for e in events if e.get("offline")]
                assert len(offline) >= queued - 1
                tx = await redis.hgetall(KEYS.transaction(ref))
                assert int(tx["offline_events"]) == len(offline)
                # kept charging offline, at the 7 kW limit of its last profile, not at 22 kW
                assert 7_000 * 0.2 < float(tx["energy_wh"]) < 7_000 * 0.3 + 100
                powers = [_power(e) for e in offline if _power(e) is not None]
                assert powers and max(p for p in powers if p is not None) <= 7_000 + 1
                assert not await redis.sismember(KEYS.transactions_active(), ref)
        finally:
            station.stop()
            await asyncio.wait_for(runner, 10)
    finally:
        await redis.aclose()


async def _last_power(redis: Redis, tx_id: str, ok: Callable[[float], bool]) -> bool:
    raw = await redis.lindex(KEYS.transaction_meter(tx_id), -1)
    if raw is None:
        return False
    power = json.loads(raw).get("power_w")
    return power is not None and ok(float(power))


async def _hget(redis: Redis, key: str, field: str, want: str) -> bool:
    return bool(await redis.hget(key, field) == want)


def _power(event: dict[str, Any]) -> float | None:
    for mv in event.get("meterValue") or []:
        for sv in mv["sampledValue"]:
            if sv.get("measurand") == "Power.Active.Import":
                return float(sv["value"])
    return None


async def test_quirky_charger_not_steerable_and_double_ended(redis_url: str) -> None:
    clock = ScaledClock(START, speed=60.0)
    redis = connect_redis(redis_url)
    try:
        await provision_station(redis, KEYS, "SIM-Q", PASSWORD, iterations=1000)
        async with running_csms(settings(redis_url), clock=clock, services=[]) as node:
            cfg = StationConfig(
                "SIM-Q", (EvseSpec.ac(11.0),), quirks=frozenset({"no_smart_charging", "duplicate_ended"})
            )
            conn = ConnectionConfig(node.url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3)
            station = SimStation(cfg, conn, clock, rng=random.Random(5))
            runner = asyncio.create_task(station.run(tick_s=5.0))
            try:
                await until(lambda: station.online)
                tx_id = station.plug_in(1, ev_for(clock, hours=4, hlc=False))
                ref = tx_ref("SIM-Q", tx_id)
                await until(lambda: redis.sismember(KEYS.transactions_active(), ref))
                reply = await CommandClient(redis, KEYS, clock, 10.0).call(
                    "SIM-Q", "GetCompositeSchedule", {"duration": 60, "evseId": 1}
                )
                assert reply.outcome == "call_error" and reply.error is not None
                assert reply.error["code"] == "NotImplemented"
                station.unplug(1)
                await until(lambda: _hget(redis, KEYS.transaction(ref), "state", "Ended"))
                await until(lambda: station.queued == 0)
                events = await tx_events(redis, ref)
                assert [e["eventType"] for e in events[-2:]] == ["Ended", "Ended"]
                assert station.stats.errors == 0, station.stats.last_error  # the csms accepted both
            finally:
                station.stop()
                await asyncio.wait_for(runner, 10)
    finally:
        await redis.aclose()


async def test_authorize_before_charging(redis_url: str) -> None:
    from csms.store.provisioning import add_id_token

    clock = ScaledClock(START, speed=60.0)
    redis = connect_redis(redis_url)
    try:
        await provision_station(redis, KEYS, "SIM-A", PASSWORD, iterations=1000)
        await add_id_token(redis, KEYS, "GOOD-TAG")
        async with running_csms(settings(redis_url), clock=clock, services=[]) as node:
            cfg = StationConfig("SIM-A", (EvseSpec.ac(11.0), EvseSpec.ac(11.0)), authorize=True)
            conn = ConnectionConfig(node.url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3)
            station = SimStation(cfg, conn, clock, rng=random.Random(9))
            runner = asyncio.create_task(station.run(tick_s=5.0))
            try:
                await until(lambda: station.online)
                now = clock.now()
                good = Ev(
                    EvSpec(
                        "EV-G",
                        "m",
                        50.0,
                        0.2,
                        0.9,
                        11.0,
                        50.0,
                        now,
                        now + timedelta(hours=5),
                        id_token="GOOD-TAG",
                    )
                )
                bad = Ev(
                    EvSpec(
                        "EV-B",
                        "m",
                        50.0,
                        0.2,
                        0.9,
                        11.0,
                        50.0,
                        now,
                        now + timedelta(hours=5),
                        id_token="STOLEN-TAG",
                    )
                )
                good_tx = station.plug_in(1, good)
                bad_tx = station.plug_in(2, bad)
                bad_ref = tx_ref("SIM-A", bad_tx)
                await until(lambda: _hget(redis, KEYS.transaction(bad_ref), "state", "Ended"))
                bad_events = await tx_events(redis, bad_ref)
                assert bad_events[-1]["transactionInfo"]["stoppedReason"] == "DeAuthorized"
                good_events = await until(lambda: _events_with(redis, tx_ref("SIM-A", good_tx), "Authorized"))
                assert good_events[0]["triggerReason"] == "CablePluggedIn" and "idToken" not in good_events[0]
                await until(lambda: station.evses[1].power_w > 10_000)
                assert bad.delivered_wh == 0.0 and station.evses[2].power_w == 0.0
            finally:
                station.stop()
                await asyncio.wait_for(runner, 10)
    finally:
        await redis.aclose()


async def _events_with(redis: Redis, tx_id: str, trigger: str) -> list[dict[str, Any]] | None:
    events = await tx_events(redis, tx_id)
    return events if any(e["triggerReason"] == trigger and e.get("idToken") for e in events) else None


async def test_cancelling_a_station_ends_its_sender_with_its_connection(redis_url: str) -> None:
    """run() cancelled mid-session (a test's or the fleet's stop) leaves no sender task behind
    sending on a closed connection (it outlived the session before)."""
    clock = ScaledClock(START, speed=60.0)
    redis = connect_redis(redis_url)
    try:
        await provision_station(redis, KEYS, "SIM-1", PASSWORD, site_id="depot", iterations=1000)
        async with running_csms(settings(redis_url), clock=clock, services=[]) as node:
            station = station_for(node.url, clock)
            runner = asyncio.create_task(station.run(tick_s=5.0))
            await until(lambda: station.online, what="station online")
            await stopped(runner)
            senders = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "SimStation._drain"]
            assert [t for t in senders if not t.done()] == []
    finally:
        await redis.aclose()
