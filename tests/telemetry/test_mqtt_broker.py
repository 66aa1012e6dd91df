"""The MQTT bridge against a real Mosquitto broker: telemetry out, site inputs in, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import pytest
from redis.asyncio import Redis

from csms.api.reader import StateReader
from csms.api.site_inputs import SiteInputWriter
from csms.telemetry.bridge import MqttBridge
from evfleet.clock import RealClock
from evfleet.events import Event, EventType
from evfleet.keys import Keys
from optimizer.site_reader import read_site
from optimizer.snapshot import SnapshotConfig, build_instance
from tests.api.harness import live_csms
from tests.conftest import MqttBroker
from tests.waiting import stopped, until

KEYS = Keys("evfleet")


@dataclass
class Watcher:
    """A test MQTT client that records everything under a prefix."""

    messages: dict[str, list[str]] = field(default_factory=dict)
    client: aiomqtt.Client | None = None

    def last(self, topic: str) -> str | None:
        """Latest payload on a topic."""
        got = self.messages.get(topic)
        return got[-1] if got else None


@contextlib.asynccontextmanager
async def watch(broker_port: int, pattern: str) -> AsyncIterator[Watcher]:
    """Subscribe to `pattern` and record payloads in the background."""
    watcher = Watcher()
    async with aiomqtt.Client("127.0.0.1", broker_port, identifier=f"watch-{uuid.uuid4().hex[:8]}") as client:
        watcher.client = client
        await client.subscribe(pattern, qos=1)

        async def record() -> None:
            async for m in client.messages:
                payload = m.payload.decode() if isinstance(m.payload, bytes) else str(m.payload)
                watcher.messages.setdefault(m.topic.value, []).append(payload)

        task = asyncio.create_task(record())
        try:
            yield watcher
        finally:
            await stopped(task)


def _prefix() -> str:
    return "t" + uuid.uuid4().hex[:8]


async def test_telemetry_from_a_running_csms_and_a_limit_from_mqtt_reach_redis(
        redis_url: str, mqtt_broker: MqttBroker) -> None:
    prefix = _prefix()
    async with watch(mqtt_broker.port, f"{prefix}/#") as w, live_csms(
            redis_url, ["CS-1"], services=["csms.telemetry.service:run"], mqtt_url=mqtt_broker.url,
            mqtt_topic_prefix=prefix) as live:
        await until(lambda: w.last(f"{prefix}/status") == "online", 10)
        tx_id = live.stations[0].plug_in(1, live.ev(hours=4))

        def charging() -> bool:
            doc = w.last(f"{prefix}/sessions/CS-1/{tx_id}")
            return bool(doc) and (json.loads(doc or "{}").get("power_kw") or 0) > 1

        await until(charging, 15)
        await until(lambda: w.last(f"{prefix}/stations/CS-1/state") == "Charging", 10)
        station = json.loads(w.last(f"{prefix}/stations/CS-1/status") or "{}")
        assert station["online"] is True and station["evses"][0]["transaction_id"] == tx_id
        await until(lambda: float(w.last(f"{prefix}/sessions/CS-1/{tx_id}/power_kw") or 0) > 1, 5)
        await until(lambda: float(w.last(f"{prefix}/sites/depot/power_kw") or 0) > 1, 15)
        site = json.loads(w.last(f"{prefix}/sites/depot/power") or "{}")
        assert site["limit_kw"] == 60.0 and site["active_sessions"] == 1
        assert w.last(f"{prefix}/events/tx/started") is not None

        # a grid operator lowers the limit over MQTT: it lands in the optimizer's input
        assert w.client is not None
        last_id = (await live.redis.xrevrange(KEYS.events(), count=1))[0][0]
        await w.client.publish(f"{prefix}/sites/depot/limit/set", json.dumps({"limit_kw": 42.5}),
                               qos=1)
        await until(lambda: _limit_is(live.redis, "depot", 42.5), 10)
        entries = await live.redis.xrange(KEYS.events(), min=f"({last_id}")
        events = [Event.from_fields(f) for _, f in entries]
        limits = [e for e in events if e.type is EventType.SITE_LIMIT]
        assert limits and limits[0].site_id == "depot"
        assert limits[0].data == {"limit_kw": 42.5, "source": "mqtt"}
        await until(lambda: w.last(f"{prefix}/sites/depot/limit/state") is not None, 10)
        await until(lambda: w.last(f"{prefix}/sites/depot/limit_kw") == "42.5", 15)
        # what the optimizer worker reads when the site.limit event wakes it up
        site_state = await read_site(live.redis, KEYS, "depot", live.clock.now())
        assert site_state.limit_kw == 42.5
        snap = build_instance(site_state, live.clock.now(), SnapshotConfig(horizon_steps=16))
        assert snap.instance.site.import_limit_kw == 42.5

        # a bad payload: error topic, no state change, no event
        before = await live.redis.xlen(KEYS.events())
        await w.client.publish(f"{prefix}/sites/depot/limit/set", b"{oops", qos=1)
        await until(lambda: w.last(f"{prefix}/sites/depot/limit/error") is not None, 10)
        assert "not JSON" in json.loads(w.last(f"{prefix}/sites/depot/limit/error") or "{}")["error"]
        assert float(await live.redis.hget(KEYS.site("depot"), "limit_kw") or 0) == 42.5
        entries = await live.redis.xrange(KEYS.events(), count=10_000)
        new = [Event.from_fields(f) for _, f in entries][before:]
        assert not any(e.type is EventType.SITE_LIMIT for e in new)


async def test_clean_shutdown_leaves_offline_retained_and_every_error_is_published(
        redis_url: str, mqtt_broker: MqttBroker) -> None:
    prefix = _prefix()
    async with watch(mqtt_broker.port, f"{prefix}/#") as w:
        async with live_csms(redis_url, ["CS-1"], services=["csms.telemetry.service:run"],
                             mqtt_url=mqtt_broker.url, mqtt_topic_prefix=prefix):
            await until(lambda: w.last(f"{prefix}/status") == "online", 10)
            assert w.client is not None
            for bad in (b"{oops", b"-5", b'{"limit_kw": "x"}'):  # three refusals in a row
                await w.client.publish(f"{prefix}/sites/depot/limit/set", bad, qos=1)
            await until(lambda: len(w.messages.get(f"{prefix}/sites/depot/limit/error", [])) == 3, 10)
        await until(lambda: w.last(f"{prefix}/status") == "offline", 10)
    # a client that connects later reads the retained status: offline, not a stale online
    async with watch(mqtt_broker.port, f"{prefix}/status") as late:
        await until(lambda: late.last(f"{prefix}/status") == "offline", 10)


async def _limit_is(redis: Redis, site: str, value: float) -> bool:
    raw = await redis.hget(KEYS.site(site), "limit_kw")
    return raw is not None and float(raw) == value


async def test_prices_over_mqtt_land_in_redis(redis_url: str, mqtt_broker: MqttBroker) -> None:
    prefix = _prefix()
    redis = Redis.from_url(redis_url, decode_responses=True)
    clock = RealClock()
    bridge = MqttBridge(StateReader(redis, KEYS, clock), SiteInputWriter(redis, KEYS, clock), mqtt_broker.url,
                        prefix=prefix, client_id="bridge-prices")
    task = asyncio.create_task(bridge.run())
    try:
        async with watch(mqtt_broker.port, f"{prefix}/#") as w:
            # event waits (they end as soon as it happens): 10 s ran out once at load 12
            await until(lambda: bridge.connected, 30, "bridge connected")
            assert w.client is not None
            body = {"start": "2026-01-01T00:00:00Z", "step_minutes": 60, "import_price": [0.3, 0.1]}
            await w.client.publish(f"{prefix}/sites/yard/prices/set", json.dumps(body), qos=1)
            stored = await until(lambda: redis.get(KEYS.site_prices("yard")), 30, "prices stored")
            assert json.loads(stored)["import_price"] == [0.3, 0.1]
            [(_, fields)] = await redis.xrange(KEYS.events())
            assert Event.from_fields(fields).type is EventType.SITE_PRICES
    finally:
        await stopped(task)  # the bridge stops within its bound, or this names where it waits
        await redis.aclose()


async def test_broker_loss_buffers_bounded_and_reconnects(redis_url: str) -> None:
    broker = MqttBroker().start()
    redis = Redis.from_url(redis_url, decode_responses=True)
    clock = RealClock()
    prefix = _prefix()
    bridge = MqttBridge(StateReader(redis, KEYS, clock), SiteInputWriter(redis, KEYS, clock), broker.url,
                        prefix=prefix, client_id="bridge-reconnect", tick_s=0.1, max_messages=5,
                        backoff_max_s=0.5)
    task = asyncio.create_task(bridge.run())
    try:
        await until(lambda: bridge.connected, 10)
        broker.stop()
        await until(lambda: not bridge.connected, 10)
        # telemetry keeps being produced while the broker is gone: bounded, oldest dropped
        for i in range(20):
            await redis.xadd(KEYS.events(), Event(type=EventType.SECURITY_EVENT, station_id=f"CS-{i}",
                                                  ts=datetime.now(UTC), data={"i": i}).to_fields())
            await redis.xadd(KEYS.events(), Event(type=EventType.FIRMWARE_STATUS, station_id=f"CS-{i}",
                                                  ts=datetime.now(UTC), data={"i": i}).to_fields())
        await until(lambda: bridge.outbox.dropped > 0, 10)
        assert len(bridge.outbox) <= 5
        restarted = MqttBroker()
        restarted.port = broker.port  # same address: the bridge must find it again
        restarted.start()
        try:
            async with watch(restarted.port, f"{prefix}/#") as w:
                await until(lambda: bridge.connected and bridge.connections >= 2, 15)
                error = Event(type=EventType.PROTOCOL_ERROR, station_id="CS-X", ts=datetime.now(UTC),
                              data={"code": "FormationViolation"})
                await redis.xadd(KEYS.events(), error.to_fields())
                await until(lambda: w.last(f"{prefix}/events/protocol/error") is not None, 10)
        finally:
            restarted.stop()
    finally:
        await stopped(task)  # the bridge stops within its bound, or this names where it waits
        await redis.aclose()
        with contextlib.suppress(Exception):
            broker.stop()


@pytest.mark.parametrize("url", ["mqtt://127.0.0.1:1"])
async def test_unreachable_broker_does_not_block_the_event_reader(redis_url: str, url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    clock = RealClock()
    bridge = MqttBridge(StateReader(redis, KEYS, clock), SiteInputWriter(redis, KEYS, clock), url,
                        prefix="x", tick_s=0.1, backoff_max_s=0.2)
    task = asyncio.create_task(bridge.run())
    try:
        await asyncio.sleep(0.3)
        await redis.xadd(KEYS.events(), Event(type=EventType.SECURITY_EVENT, station_id="CS-1",
                                              ts=datetime.now(UTC)).to_fields())
        await until(lambda: len(bridge.outbox) >= 1, 5)
        assert not bridge.connected
    finally:
        await stopped(task)  # the bridge stops within its bound, or this names where it waits
        await redis.aclose()


async def test_ocpp_traffic_flows_while_the_broker_is_down(redis_url: str) -> None:
    """A csms whose broker is unreachable still stores transactions at once; telemetry waits, bounded."""
    async with live_csms(redis_url, ["CS-D"], services=["csms.telemetry.service:run"],
                         mqtt_url="mqtt://127.0.0.1:1", mqtt_topic_prefix=_prefix()) as live:
        t0 = asyncio.get_running_loop().time()
        tx_id = live.stations[0].plug_in(1, live.ev(hours=2))
        await until(lambda: live.redis.sismember(KEYS.transactions_active(), f"CS-D:{tx_id}"), 5)
        assert asyncio.get_running_loop().time() - t0 < 5
        bridge = live.node.ctx.extras["mqtt_bridge"]
        await until(lambda: len(bridge.outbox) > 0, 10)
        assert not bridge.connected and len(bridge.outbox) <= bridge.outbox.max_messages


async def test_one_bridge_per_deployment_and_another_node_takes_over(
        redis_url: str, mqtt_broker: MqttBroker) -> None:
    """Two nodes configured with the same broker and prefix run one bridge between them (a lease)."""
    from csms.app import running_csms
    from tests.csms.conftest import make_settings

    prefix = _prefix()
    lease = KEYS.service_lease(f"mqtt-bridge:{prefix}")

    def settings(node_id: str) -> Any:
        return make_settings(redis_url, node_id=node_id, mqtt_url=mqtt_broker.url, mqtt_topic_prefix=prefix,
                             service_lease_ttl_s=1.5)

    redis = Redis.from_url(redis_url, decode_responses=True)
    service = ["csms.telemetry.service:run"]
    async with watch(mqtt_broker.port, f"{prefix}/status") as w, \
            running_csms(settings("node-b"), services=service) as b:
        async with running_csms(settings("node-a"), services=service) as a:
            await until(lambda: redis.get(lease), 10, "a bridge took the lease")
            holder, standby = (a, b) if await redis.get(lease) == "node-a" else (b, a)
            await until(lambda: "mqtt_bridge" in holder.ctx.extras, 5)
            await asyncio.sleep(2)  # several renewal rounds: the other node stays on standby
            assert "mqtt_bridge" not in standby.ctx.extras
            await until(lambda: w.last(f"{prefix}/status") == "online", 10)
            # the lease is taken from the holder (as after a stall past its TTL): it stops bridging
            await redis.set(lease, "someone-else", px=3000)
            await until(lambda: "mqtt_bridge" not in holder.ctx.extras, 5, "the holder stops")
            await redis.delete(lease)
            await until(lambda: redis.get(lease), 5, "a node takes the free lease")
        # node-a stopped cleanly: if it held the lease, it released it and node-b took over
        await until(lambda: _is(redis.get(lease), "node-b"), 5, "node-b bridges")
        await until(lambda: "mqtt_bridge" in b.ctx.extras, 5)
    await redis.aclose()


async def _is(value: Any, expected: str) -> bool:
    return await value == expected
