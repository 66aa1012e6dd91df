"""The foundation pieces every component shares: the clock and the embedded Redis."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import redis

from csms.store.embedded import EmbeddedRedis
from evfleet.clock import ClockSpec, ScaledClock


def test_scaled_clock_runs_faster_than_real_time() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = ScaledClock(start, speed=100.0)
    t0 = clock.timestamp()
    time.sleep(0.05)
    elapsed = clock.timestamp() - t0
    assert 4.0 < elapsed < 50.0  # ~5 s of simulated time in 0.05 s real time


def test_clock_spec_round_trip_agrees_on_now() -> None:
    clock = ScaledClock(datetime(2026, 1, 1, tzinfo=UTC), speed=60.0)
    other = ScaledClock.from_spec(ClockSpec.from_dict(clock.spec().to_dict()))
    assert abs(other.timestamp() - clock.timestamp()) < 0.5


def test_scaled_clock_rejects_bad_speed_and_naive_start() -> None:
    with pytest.raises(ValueError):
        ScaledClock(speed=0)
    with pytest.raises(ValueError):
        ScaledClock(datetime(2026, 1, 1))


async def test_scaled_sleep_is_shortened() -> None:
    clock = ScaledClock(speed=1000.0)
    t0 = time.monotonic()
    await clock.sleep(10.0)
    assert time.monotonic() - t0 < 1.0


def test_embedded_redis_starts_answers_and_stops() -> None:
    server = EmbeddedRedis().start()
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    client.close()
    server.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()


def test_redis_fixture_is_private(redis_url: str) -> None:
    assert not redis_url.endswith(":6379/0")
    asyncio.run(asyncio.sleep(0))
