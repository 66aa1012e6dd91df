"""The one reader of the event stream's tail (`evfleet:events`): XREAD after an id, without gaps.

Used by the smart-charging store adapter, the API's live feed and actions, and the MQTT bridge
(the optimizer reads the stream through its consumer group instead).

In the Redis Cluster layout (`evfleet.keys.Keys.event_streams`) there is one stream per shard.
Pass every stream: the cursor is then the shards' last ids joined by ``,`` (one stream: a plain
entry id, as before), each shard is read with its own XREAD (one slot each), and the entries
come back merged in id order. Order holds within a shard (so within a station and within a
site); across shards it is by entry id, i.e. by the masters' clocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evfleet.events import Event
from evfleet.store.lag import StreamLag, read_span

log = logging.getLogger(__name__)

POLL_S = 0.05
"""With several shard streams a blocking read polls them at this interval (XREAD BLOCK can wait on
one slot only)."""


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _keys(key: str | Sequence[str]) -> list[str]:
    return [key] if isinstance(key, str) else list(key)


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def stream_tail_id(redis: Any, key: str | Sequence[str]) -> str:
    """Id of the newest stream entry ("0-0" if empty): the start for XREAD without gaps.

    XREAD with "$" would skip entries written between two calls while no event was seen yet.
    For several streams: the cursor of all their tails.
    """
    ids = []
    for one in _keys(key):
        last = await redis.xrevrange(one, count=1)
        ids.append(_str(last[0][0]) if last else "0-0")
    return ",".join(ids)


async def read_new_events(redis: Any, key: str | Sequence[str], last_id: str, block_ms: int,
                          count: int = 2000, skip: Callable[[Mapping[Any, Any]], bool] | None = None,
                          lag: StreamLag | None = None) -> tuple[str, list[tuple[str, Event]]]:
    """Events after `last_id` ("$" = from now on, without gaps), blocking up to `block_ms`.

    Returns the new last id (cursor) and (entry id, event) pairs. Malformed entries are logged and
    skipped, and so are, unparsed, entries whose raw fields `skip` says to (the cursor moves past both).
    `lag` (the caller's `evfleet.store.lag.StreamLag`) is told when the read starts and which ids
    it returned (skipped and malformed entries included).
    """
    streams = _keys(key)
    if lag is not None:
        lag.reading()
    if last_id == "$":
        last_id = await stream_tail_id(redis, streams)
    if len(streams) == 1:
        reply = await redis.xread({streams[0]: last_id}, count=count, block=block_ms)
        return _parse(reply, {streams[0]: last_id}, skip, lag, count)
    cursor = dict(zip(streams, last_id.split(","), strict=True)) if last_id.count(",") == len(streams) - 1 \
        else dict.fromkeys(streams, last_id)
    deadline = time.monotonic() + block_ms / 1000
    while True:
        pipe = redis.pipeline(transaction=False)
        for stream, after in cursor.items():
            pipe.xread({stream: after}, count=count)
        replies = await pipe.execute()
        if any(replies) or block_ms <= 0 or time.monotonic() >= deadline:
            return _parse([item for reply in replies for item in reply or []], cursor, skip, lag, count)
        await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def _parse(reply: Any, cursor: dict[str, str], skip: Callable[[Mapping[Any, Any]], bool] | None,
           lag: StreamLag | None = None, count: int = 0) -> tuple[str, list[tuple[str, Event]]]:
    """(cursor after `reply`, parsed events in id order); `lag` told the ids read (`read_span`)."""
    cursor = dict(cursor)
    raw: list[tuple[str, Any, str]] = []
    for stream, entries in reply or []:
        for entry_id, fields in entries:
            cursor[_str(stream)] = _str(entry_id)
            raw.append((_str(entry_id), fields, _str(stream)))
    if lag is not None:
        lag.answered(*read_span([[entry_id for entry_id, _ in entries] for _, entries in reply or []], count))
    if len(cursor) > 1:
        raw.sort(key=lambda item: _id_order(item[0]))
    events: list[tuple[str, Event]] = []
    for entry_id, fields, stream in raw:
        if skip is not None and skip(fields):
            continue
        try:
            events.append((entry_id, Event.from_fields(fields)))
        except (ValueError, KeyError) as err:
            log.warning("skipping malformed event %s on %s: %s", entry_id, stream, err)
    return ",".join(cursor.values()), events
