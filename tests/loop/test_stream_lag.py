"""The event stream lag gauges (`evfleet.store.lag`) against a real Redis: held back, a consumer's
`evfleet_stream_lag_seconds` grows with the age of the entries it has not finished; released, it
catches up and the gauge returns to about 0. Checked on the csms smart-charging service and the
optimizer worker (their own read loops, the gauge as /metrics exposes it), and XINFO GROUPS'
unread and pending entries."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY
from redis.asyncio import Redis

from csms.settings import CsmsSettings
from csms.smart_charging.service import SmartChargingService
from csms.store.port_redis import RedisStateStore
from evfleet.clock import RealClock
from evfleet.events import Event, EventType
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evfleet.store.lag import GroupLagPoll, StreamLag, read_span
from evfleet.store.stream import stream_tail_id
from optimizer.worker import OptimizerWorker, WorkerConfig

HELD_S = 1.0
"""How long the consumer is held back with entries waiting."""


def gauge(consumer: str) -> float | None:
    """`evfleet_stream_lag_seconds{consumer}` as /metrics exposes it now."""
    return REGISTRY.get_sample_value("evfleet_stream_lag_seconds", {"consumer": consumer})


async def _writer(redis: Redis, stream: str, stop: asyncio.Event) -> None:
    """An event every 20 ms until `stop`."""
    i = 0
    while not stop.is_set():
        event = Event(type=EventType.CONNECTOR_STATUS, station_id=f"CS-{i}", ts=datetime.now(UTC))
        await redis.xadd(stream, event.to_fields())
        i += 1
        await asyncio.sleep(0.02)


async def _wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


async def _held_then_released(redis: Redis, stream: str, consumer: str, gate: asyncio.Event,
                              entered: asyncio.Event) -> tuple[float, float]:
    """Write events, let the consumer stall on the first one for `HELD_S`, release it; (the gauge while
    held, the gauge once caught up)."""
    stop = asyncio.Event()
    writer = asyncio.create_task(_writer(redis, stream, stop))
    try:
        await asyncio.wait_for(entered.wait(), 5)  # the consumer holds its first event
        await asyncio.sleep(HELD_S)
        held = gauge(consumer)
        assert held is not None, "no gauge for the consumer"
        gate.set()
        await _wait_for(lambda: (gauge(consumer) or 0.0) < 0.2)
        await asyncio.sleep(0.3)  # events keep coming: it stays caught up
        caught_up = gauge(consumer)
        assert caught_up is not None
        return held, caught_up
    finally:
        stop.set()
        await writer


@contextlib.asynccontextmanager
async def _task(run: Awaitable[Any]) -> AsyncIterator[None]:
    task = asyncio.ensure_future(run)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class NoCalls:
    """No station is called here."""

    async def call(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("no call expected")


async def test_smart_charging_lag_grows_while_held_and_returns_to_zero(redis_url: str) -> None:
    """Fails if the service's read loop does not feed the gauge (absent or 0 while held), or if the
    gauge stays up once it has caught up."""
    redis = connect_redis(redis_url)
    keys = Keys("t-lag")
    gate, entered = asyncio.Event(), asyncio.Event()

    class Held(SmartChargingService):
        async def dispatch(self, event: Event, batch: Any = None) -> None:
            entered.set()
            await gate.wait()

    svc = Held(RedisStateStore(redis, keys), RealClock(), CsmsSettings(), "node-a",
               NoCalls())  # type: ignore[arg-type]
    try:
        async with _task(svc.run()):
            await _wait_for(lambda: gauge("smart_charging") is not None)
            held, caught_up = await _held_then_released(redis, keys.events(), "smart_charging", gate, entered)
    finally:
        await redis.aclose()
    assert held >= HELD_S * 0.9, held
    assert caught_up < 0.2, caught_up
    assert gauge("smart_charging") is None  # a stopped consumer is no longer exposed


async def test_optimizer_lag_grows_while_held_and_returns_to_zero(redis_url: str) -> None:
    """The same for the optimizer worker's XREADGROUP loop (solving left out)."""
    redis = connect_redis(redis_url)
    keys = Keys("t-lag-opt")
    gate, entered = asyncio.Event(), asyncio.Event()

    class Held(OptimizerWorker):
        async def handle(self, event: Event, stamp_ms: int | None = None) -> None:
            entered.set()
            await gate.wait()

        def _due(self) -> list[str]:
            return []  # nothing to solve: the loop reads, blocking up to block_ms

        async def _solve_due(self, limit: int | None = None) -> None:
            return None

    worker = Held(redis, keys, WorkerConfig(block_ms=50, consumer="w1"))
    try:
        async with _task(worker.run()):
            await _wait_for(lambda: gauge("optimizer") is not None)
            held, caught_up = await _held_then_released(redis, keys.events(), "optimizer", gate, entered)
    finally:
        await redis.aclose()
    assert held >= HELD_S * 0.9, held
    assert caught_up < 0.2, caught_up


async def test_group_poll_reads_unread_and_pending_entries(redis_url: str) -> None:
    """XINFO GROUPS `lag` (not yet delivered) and `pending` (delivered, not acknowledged) reach the
    gauges; a poll within the interval is skipped (no Redis round trip)."""
    redis = connect_redis(redis_url)
    stream = "t-lag-group:events"
    try:
        await redis.xgroup_create(stream, "optimizer", id="$", mkstream=True)
        for i in range(5):
            await redis.xadd(stream, {"n": str(i)})
        poll = GroupLagPoll(min_interval_s=0.0)
        assert await poll.poll(redis, [stream, "t-lag-group:absent"])
        labels = {"stream": stream, "group": "optimizer"}
        assert REGISTRY.get_sample_value("evfleet_stream_group_lag_entries", labels) == 5
        assert REGISTRY.get_sample_value("evfleet_stream_group_pending_entries", labels) == 0
        await redis.xreadgroup("optimizer", "w1", {stream: ">"}, count=2)
        assert await poll.poll(redis, [stream])
        assert REGISTRY.get_sample_value("evfleet_stream_group_lag_entries", labels) == 3
        assert REGISTRY.get_sample_value("evfleet_stream_group_pending_entries", labels) == 2
        slow = GroupLagPoll(min_interval_s=60.0)
        assert await slow.poll(redis, [stream])
        assert not await slow.poll(redis, [stream])
    finally:
        await redis.aclose()


def test_lag_states_from_the_ids_in_hand() -> None:
    """Handling a read: the age of its first entry; reading after a full read: the age of its last;
    reading after a partial read: 0 (at the stream's end)."""
    now = [1000.0]
    lag = StreamLag("unit", wall=lambda: now[0])
    lag.reading()
    assert lag.lag_s() == 0.0
    lag.answered(*read_span([["990000-0", "995000-1"]], count=2))  # full: more are waiting
    assert lag.lag_s() == 10.0
    lag.reading()
    assert lag.lag_s() == 5.0
    lag.answered(*read_span([["996000-0"]], count=2))  # partial: it reached the end
    now[0] = 1001.0
    assert lag.lag_s() == 5.0
    lag.reading()
    assert lag.lag_s() == 0.0
    lag.answered(*read_span([[]], count=2))  # empty: it had seen everything when answered
    now[0] = 1003.0
    assert lag.lag_s() == 2.0
    assert read_span([["5-0", "9-0"], ["3-0", "4-0", "8-0"]], count=3) == (3, 8, 5)


async def test_a_full_read_keeps_the_lag_up_until_the_reader_reaches_the_end(redis_url: str) -> None:
    """`read_new_events` feeds its tracker: after a full read of old entries the lag stays up while
    the next read starts; after the read that reaches the end it is 0."""
    from evfleet.store.stream import read_new_events

    redis = connect_redis(redis_url)
    stream = "t-lag-read:events"
    try:
        start = await stream_tail_id(redis, stream)
        old_ms = int(time.time() * 1000) - 30_000
        for i in range(3):  # entries stamped 30 s ago
            await redis.xadd(stream, {"type": "x"}, id=f"{old_ms}-{i + 1}")
        lag = StreamLag("read")
        cursor, _ = await read_new_events(redis, stream, start, block_ms=1, count=2, lag=lag)
        assert 29.0 < lag.lag_s() < 40.0
        lag.reading()
        assert 29.0 < lag.lag_s() < 40.0  # behind: the next read starts from there
        await read_new_events(redis, stream, cursor, block_ms=1, count=2, lag=lag)
        lag.reading()
        assert lag.lag_s() == 0.0
    finally:
        await redis.aclose()


def test_a_scrape_of_the_lag_alone_reads_nothing_from_redis() -> None:
    """`/metrics?name[]=evfleet_stream_lag_seconds` (the load harness's sampling) renders only that
    series and needs no refresh from Redis; a full scrape or a Redis-derived series does."""
    from csms.api import metrics

    lag = StreamLag("scrape")
    from evfleet.store.lag import COLLECTOR

    COLLECTOR.add(lag)
    try:
        text = metrics.render(names=["evfleet_stream_lag_seconds"]).decode()
    finally:
        lag.close()
    assert 'evfleet_stream_lag_seconds{consumer="scrape"} 0.0' in text
    assert "evfleet_site_power_kw" not in text and "evfleet_connected_stations" not in text
    assert not metrics.needs_refresh(["evfleet_stream_lag_seconds"])
    assert metrics.needs_refresh(None)
    assert metrics.needs_refresh(["evfleet_stream_lag_seconds", "evfleet_stream_group_lag_entries"])
    assert metrics.needs_refresh(["evfleet_site_power_kw"])
