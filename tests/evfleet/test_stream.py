"""evfleet.store.stream against a real Redis: the cursor has no gap, with one stream or several shard
streams, for an entry written between taking the start and the first read, during a blocking read,
or between two reads (checked while looking for the CI hangs of 2026-12-06: the cursor was not one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from evfleet.events import Event, EventType
from evfleet.store.stream import read_new_events, stream_tail_id

ONE = ["t:events"]
SHARDS = ["t:events:{s0}", "t:events:{s1}", "t:events:{s2}"]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def _add(redis: Redis, stream: str, station: str) -> str:
    event = Event(type=EventType.CONNECTOR_STATUS, station_id=station, ts=datetime.now(UTC))
    return str(await redis.xadd(stream, event.to_fields()))


@pytest.mark.parametrize("streams", [ONE, SHARDS], ids=["one stream", "three shards"])
async def test_an_entry_written_between_the_start_and_the_first_read_is_read(
        redis: Redis, streams: list[str]) -> None:
    await _add(redis, streams[0], "OLD")  # before the start: not read
    start = await stream_tail_id(redis, streams)
    for i, stream in enumerate(streams):
        await _add(redis, stream, f"CS-{i}")
    cursor, events = await read_new_events(redis, streams, start, block_ms=1)
    assert sorted(e.station_id for _id, e in events) == [f"CS-{i}" for i in range(len(streams))]
    assert [entry_id for entry_id, _e in events] == sorted((i for i, _e in events),
                                                           key=lambda i: tuple(map(int, i.split("-"))))
    assert cursor.count(",") == len(streams) - 1
    # between two reads: the next read starts where the last one ended
    await _add(redis, streams[-1], "NEXT")
    cursor, events = await read_new_events(redis, streams, cursor, block_ms=1)
    assert [e.station_id for _id, e in events] == ["NEXT"]
    _, events = await read_new_events(redis, streams, cursor, block_ms=1)
    assert events == []


@pytest.mark.parametrize("streams", [ONE, SHARDS], ids=["one stream", "three shards"])
async def test_an_entry_written_during_a_blocking_read_ends_it(redis: Redis, streams: list[str]) -> None:
    start = await stream_tail_id(redis, streams)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reading = asyncio.create_task(read_new_events(redis, streams, start, block_ms=5000))
    await asyncio.sleep(0.2)
    await _add(redis, streams[-1], "LATE")
    _, events = await asyncio.wait_for(reading, 5)
    assert [e.station_id for _id, e in events] == ["LATE"]
    assert loop.time() - t0 < 4  # woken by the entry, not by the 5 s block


async def test_from_now_on_starts_at_the_tail_of_the_first_call(redis: Redis) -> None:
    """"$" is resolved once, by the call that gets it: an entry written after that call is read by
    the next one. A reader that must not miss an entry written before its first read takes its
    start with stream_tail_id before the writer can write."""
    await _add(redis, SHARDS[1], "OLD")
    cursor, events = await read_new_events(redis, SHARDS, "$", block_ms=1)
    assert events == []
    await _add(redis, SHARDS[1], "NEW")
    _, events = await read_new_events(redis, SHARDS, cursor, block_ms=1)
    assert [e.station_id for _id, e in events] == ["NEW"]
