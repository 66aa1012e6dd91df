"""Live feed for the dashboard: one Redis stream reader, aggregated per tick, fanned out.

One `LiveHub` per API process reads `{prefix}:events` with plain XREAD from `$`, collects
which stations and sessions changed, and once per tick loads each changed document once
and sends every subscriber one `delta` message (stations, sessions, a capped events feed,
and every few ticks all sites). The cost per tick depends on what changed, not on the
number of subscribers or events; a slow subscriber loses old messages and is told to resync.

With no subscriber the hub does not read the stream: once per tick it only notes the stream's
tail id (one XREVRANGE, nothing parsed), so a client that subscribes gets every event from at
most one tick before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from csms.api.reader import StateReader, read_new_events
from csms.api.views import session_summary
from evfleet.events import Event
from evfleet.store.lag import StreamLag, track
from evfleet.store.stream import stream_tail_id
from evfleet.tasks import raise_if_cancelling, stop_tasks

log = logging.getLogger(__name__)

FEED_SKIP = {"meter.values", "tx.updated"}  # too frequent for a human-readable feed
MAX_DOCS_PER_TICK = 500


def event_summary(entry_id: str, event: Event) -> dict[str, Any]:
    """A feed line for the dashboard."""
    return {"id": entry_id, "type": event.type.value, "station_id": event.station_id or None,
            "evse_id": event.evse_id, "transaction_id": event.transaction_id or None,
            "tx_ref": event.tx_ref or None,
            "site_id": event.site_id or None, "ts": event.ts.isoformat(), "data": event.data}


@dataclass(eq=False)
class Subscriber:
    """One live client: a bounded queue of messages."""

    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(maxsize=32))
    dropped: int = 0

    def offer(self, message: dict[str, Any]) -> None:
        """Enqueue; when full drop the oldest message and flag a resync."""
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.dropped += 1
            message = {**message, "resync": True}
        self.queue.put_nowait(message)


@dataclass
class Pending:
    """What changed since the last tick."""

    stations: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    feed: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    events: int = 0

    def add(self, entry_id: str, event: Event) -> None:
        """Record one stream event."""
        self.events += 1
        if event.station_id:
            self.stations.add(event.station_id)
        if event.tx_ref:
            self.sessions.add(event.tx_ref)
        if event.type.value not in FEED_SKIP:
            self.feed.append(event_summary(entry_id, event))


class LiveHub:
    """Stream reader + per-tick aggregation + fan-out to SSE subscribers."""

    def __init__(self, reader: StateReader, tick_s: float = 1.0, sites_every: int = 2) -> None:
        self.reader = reader
        self.tick_s = tick_s
        self.sites_every = max(1, sites_every)
        self.subscribers: set[Subscriber] = set()
        self.last_id = "$"
        self.events_seen = 0
        self._pending = Pending()
        self._task: asyncio.Task[None] | None = None
        self._ticks = 0
        self.lag = StreamLag("live_feed")
        """How far the reader is behind the stream (exposed while `run` runs: `evfleet.store.lag`)."""

    def ensure_started(self) -> None:
        """Start the reader task if it is not running (lazy start for embedded use)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="live-hub")

    async def stop(self) -> None:
        """Stop the reader task and end every subscriber's stream."""
        if self._task is not None:  # bounded: a Redis command can lose a cancellation (evfleet.tasks)
            await stop_tasks([self._task], what="live feed reader")
            self._task = None
        for sub in list(self.subscribers):
            sub.offer({"type": "close"})

    def subscribe(self) -> Subscriber:
        """Register a live client."""
        self.ensure_started()
        sub = Subscriber()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a live client."""
        self.subscribers.discard(sub)

    async def run(self) -> None:
        """Read the stream forever; flush once per tick."""
        self.lag = track("live_feed")  # evfleet_stream_lag_seconds (evfleet.store.lag)
        try:
            await self._run()
        finally:
            self.lag.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            raise_if_cancelling()  # redis-py sends with wait_for: evfleet.tasks
            try:
                if not self.subscribers:
                    await self._idle(max(0.0, next_tick - loop.time()))
                    next_tick = loop.time() + self.tick_s
                    continue
                block_ms = max(1, int((next_tick - loop.time()) * 1000))
                await self._read(block_ms)
                if loop.time() >= next_tick:
                    next_tick = loop.time() + self.tick_s
                    await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the feed alive across Redis hiccups, but say so
                log.exception("live feed: reading or flushing failed; retrying")
                await asyncio.sleep(min(self.tick_s, 1.0))

    async def _idle(self, wait_s: float) -> None:
        """A tick without subscribers: note the stream's tail (nothing read or parsed)."""
        await asyncio.sleep(wait_s)
        tail = await stream_tail_id(self.reader.redis, self.reader.keys.event_streams())
        if not self.subscribers:  # one may have come during the sleep: then read from the old tail
            self.last_id = tail
            self._pending = Pending()
            self.lag.at_end()

    async def _read(self, block_ms: int) -> None:
        self.last_id, events = await read_new_events(self.reader.redis, self.reader.keys.event_streams(),
                                                     self.last_id, block_ms, lag=self.lag)
        self.events_seen += len(events)
        for entry_id, event in events:
            self._pending.add(entry_id, event)

    async def flush(self) -> None:
        """Build one delta from what changed and send it to every subscriber."""
        self._ticks += 1
        pending, self._pending = self._pending, Pending()
        with_sites = self._ticks % self.sites_every == 1 or self.sites_every == 1
        if not self.subscribers:
            return
        sites = await self.reader.sites() if with_sites else None
        station_ids = sorted(pending.stations)
        if len(station_ids) > MAX_DOCS_PER_TICK:  # defer the rest to the next tick
            self._pending.stations.update(station_ids[MAX_DOCS_PER_TICK:])
            station_ids = station_ids[:MAX_DOCS_PER_TICK]
        tx_ids = sorted(pending.sessions)
        if len(tx_ids) > MAX_DOCS_PER_TICK:
            self._pending.sessions.update(tx_ids[MAX_DOCS_PER_TICK:])
            tx_ids = tx_ids[:MAX_DOCS_PER_TICK]
        stations = await self.reader.stations(station_ids) if station_ids else []
        now_ts = self.reader.clock.timestamp()
        sessions = [session_summary(d, now_ts) for d in await self.reader.sessions(tx_ids)] if tx_ids else []
        if not (stations or sessions or pending.feed or sites is not None):
            return
        message: dict[str, Any] = {"type": "delta", "ts": self.reader.clock.now().isoformat(),
                                   "stations": stations, "sessions": sessions,
                                   "events": list(pending.feed), "event_count": pending.events}
        if sites is not None:
            message["sites"] = sites
        for sub in list(self.subscribers):
            sub.offer(message)
