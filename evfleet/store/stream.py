"""The one reader of the event stream's tail (`evfleet:events`): XREAD after an id, without gaps.

Used by the smart-charging store adapter, the API's live feed and actions, and the MQTT bridge
(the optimizer reads the stream through its consumer group instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from evfleet.events import Event

log = logging.getLogger(__name__)


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def stream_tail_id(redis: Any, key: str) -> str:
    """Id of the newest stream entry ("0-0" if empty): the start for XREAD without gaps.

    XREAD with "$" would skip entries written between two calls while no event was seen yet.
    """
    last = await redis.xrevrange(key, count=1)
    return _str(last[0][0]) if last else "0-0"


async def read_new_events(redis: Any, key: str, last_id: str, block_ms: int, count: int = 2000,
                          skip: Callable[[Mapping[Any, Any]], bool] | None = None,
                          ) -> tuple[str, list[tuple[str, Event]]]:
    """Events after `last_id` ("$" = from now on, without gaps), blocking up to `block_ms`.

    Returns the new last id and (entry id, event) pairs. Malformed entries are logged and skipped,
    and so are, unparsed, entries whose raw fields `skip` says to (the last id moves past both).
    """
    if last_id == "$":
        last_id = await stream_tail_id(redis, key)
    reply = await redis.xread({key: last_id}, count=count, block=block_ms)
    events: list[tuple[str, Event]] = []
    for _stream, entries in reply or []:
        for entry_id, fields in entries:
            last_id = _str(entry_id)
            if skip is not None and skip(fields):
                continue
            try:
                events.append((last_id, Event.from_fields(fields)))
            except (ValueError, KeyError) as err:
                log.warning("skipping malformed event %s on %s: %s", last_id, key, err)
    return last_id, events
