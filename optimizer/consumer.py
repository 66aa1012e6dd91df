"""The optimizer's side of the event stream: the `optimizer` consumer group (several workers share
the stream; each entry goes to one worker), read with XREADGROUP and acknowledged once handled.

`read_events` hands each new entry to a handler: one read (blocking up to `block_ms` if asked), then
more without blocking while reads come back full, up to `DRAIN_READS` reads, so a worker behind
catches up on the stream before its next solve. With one stream per shard (Redis Cluster layout)
one XREADGROUP per shard goes out in a pipeline, polled until `block_ms`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from evfleet.events import Event
from evfleet.store.lag import StreamLag, entry_ms, read_span
from evfleet.store.stream import POLL_S
from evfleet.tasks import raise_if_cancelling

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from evfleet.keys import Keys

log = logging.getLogger(__name__)

GROUP = "optimizer"
READ_COUNT = 500
"""Entries one XREADGROUP returns at most."""
DRAIN_READS = 20
"""Reads in a row without blocking while they come back full (`read_events`)."""

Handler = Callable[[Event, "int | None"], Awaitable[None]]
"""What `read_events` calls with each event and the ms of its stream id (None if it has none)."""


async def ensure_group(redis: Redis, keys: Keys) -> None:
    """Create the consumer group (from the stream's end) if it does not exist."""
    for stream in keys.event_streams():  # one per shard in the Redis Cluster layout
        try:
            await redis.xgroup_create(stream, GROUP, id="$", mkstream=True)
        except Exception as err:  # BUSYGROUP: another worker created it
            if "BUSYGROUP" not in str(err):
                raise


async def ack_stale(redis: Redis, keys: Keys, consumer: str, min_idle_ms: int = 60_000) -> int:
    """Acknowledge entries a dead worker left pending (start-up re-plans every site anyway)."""
    acked = 0
    for stream in keys.event_streams():
        start = "0-0"
        while True:
            resp: Any = await redis.xautoclaim(stream, GROUP, consumer, min_idle_time=min_idle_ms,
                                               start_id=start, count=1000)
            start, ids = str(resp[0]), [entry_id for entry_id, _ in resp[1]]
            if ids:
                await redis.xack(stream, GROUP, *ids)
                acked += len(ids)
            if start in ("0-0", "0"):
                break
    return acked


async def read_events(redis: Redis, keys: Keys, consumer: str, block_ms: int, handle: Handler,
                      block: bool = True, lag: StreamLag | None = None) -> None:
    """Handle the new entries: one read (blocking if `block`), then more without blocking while
    reads come back full, up to `DRAIN_READS` reads (a worker behind catches up on the stream
    before its next solve instead of reading `READ_COUNT` entries per solve). `lag` sees the ids
    of each read (`evfleet.store.lag`)."""
    for _ in range(DRAIN_READS):
        if await read_once(redis, keys, consumer, block_ms, handle, block, lag) < READ_COUNT:
            return
        block = False


async def read_once(redis: Redis, keys: Keys, consumer: str, block_ms: int, handle: Handler,
                    block: bool, lag: StreamLag | None = None) -> int:
    """One XREADGROUP's entries handled and acknowledged; returns the most entries of one stream."""
    if lag is not None:
        lag.reading()
    resp = await _xreadgroup(redis, keys, consumer, block_ms if block else None)
    raise_if_cancelling()  # redis-py can swallow a cancellation: evfleet.tasks
    if lag is not None:
        lag.answered(*read_span([[entry_id for entry_id, _ in entries] for _, entries in resp or []],
                                READ_COUNT))
    most = 0
    for stream, entries in resp or []:
        most = max(most, len(entries))
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            try:
                event = Event.from_fields(fields)
            except (ValueError, KeyError) as err:
                log.warning("skipping malformed event %s: %s", entry_id, err)
                continue
            await handle(event, entry_ms(entry_id))
        if ids:
            await redis.xack(str(stream), GROUP, *ids)
    return most


async def _xreadgroup(redis: Redis, keys: Keys, consumer: str, block_ms: int | None) -> Any:
    """New entries for `consumer`: one XREADGROUP on one stream (blocking up to `block_ms` unless
    None); with one stream per shard (Redis Cluster layout) one XREADGROUP per shard in a pipeline,
    polled until `block_ms` (a blocking read can wait on one slot only)."""
    streams = keys.event_streams()
    if len(streams) == 1:
        return await redis.xreadgroup(GROUP, consumer, {streams[0]: ">"}, count=READ_COUNT, block=block_ms)
    deadline = time.monotonic() + (block_ms / 1000 if block_ms is not None else 0.0)
    while True:
        pipe = redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xreadgroup(GROUP, consumer, {stream: ">"}, count=READ_COUNT)
        replies = await pipe.execute()
        if any(replies) or time.monotonic() >= deadline:
            return [item for reply in replies for item in reply or []]
        await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
