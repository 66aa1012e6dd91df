"""How far each reader of the event stream (`evfleet:events`) is behind: Prometheus gauges (issue 14).

Every continuous reader keeps a `StreamLag` (`track(consumer)`): the csms node's smart-charging
service (`smart_charging`), MQTT bridge (`mqtt_bridge`) and dashboard live feed (`live_feed`), and
the optimizer worker (`optimizer`). Its read loop says when a read starts (`reading`) and what the
read returned (`answered`: the stream ids it holds anyway), so the figure costs no Redis round trip;
the collector computes it when /metrics is scraped, so a consumer stuck between two reads shows
its lag growing.

- `evfleet_stream_lag_seconds{consumer}`: now minus the id time (the ms part of the stream id)
  of the oldest entry the consumer has not finished with:
  - after a read, while it handles the entries (and until its next read starts): the first entry
    of that read; after an empty read, the time the read was answered (it had seen everything);
  - during a read that follows a full one (more entries were waiting): the last entry it read;
  - during a read that follows a partial one: 0 (it is at the stream's end, waiting).
  Stream ids are the Redis server's clock, now is this host's clock (`time.time`): skew between
  the two adds to the figure. Several trackers of one name in a process (tests): the largest.
- `evfleet_stream_entries_read_total{consumer}`: entries read (the consumer's throughput; compare
  with the stream's write rate).
- `evfleet_stream_group_lag_entries{stream,group}` and `evfleet_stream_group_pending_entries{stream,group}`:
  XINFO GROUPS of each event stream (the optimizer's consumer group): entries not yet delivered to
  the group (`lag`; absent when Redis cannot tell, e.g. after XDEL in that range) and delivered but
  not acknowledged (`pending`). Read by `GroupLagPoll.poll`, at most once per `GROUP_POLL_S`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

GROUP_POLL_S = 5.0
"""Shortest time between two XINFO GROUPS reads of one process (`GroupLagPoll`)."""

STREAM_ENTRIES = Counter("evfleet_stream_entries_read_total", "Event stream entries read, by consumer",
                         ["consumer"])


def entry_ms(entry_id: Any) -> int | None:
    """The millisecond part of a stream entry id ("1700000000000-0"); None if it has none."""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    head = raw.split("-", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass(eq=False)
class StreamLag:
    """One consumer's position in the event stream, from the ids its reads return (module doc)."""

    consumer: str
    wall: Callable[[], float] = time.time
    """This host's clock in seconds (stream ids are ms since the epoch)."""
    _reading: bool = False
    _oldest_s: float | None = None
    """Id time of the oldest entry read and not finished (None: none read yet)."""
    _resume_s: float | None = None
    """After a full read: id time of its last entry (more were waiting); None after a partial one."""
    _entries: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._entries = STREAM_ENTRIES.labels(consumer=self.consumer)

    def reading(self) -> None:
        """A read of the stream starts (the entries of the previous one are finished)."""
        self._reading = True

    def answered(self, first_ms: int | None, resume_ms: int | None, entries: int) -> None:
        """A read returned `entries` entries, the first stamped `first_ms` (None: none); `resume_ms`:
        the last entry's id time if the read was full (more are waiting), else None."""
        self._reading = False
        self._oldest_s = first_ms / 1000 if first_ms is not None else self.wall()
        self._resume_s = resume_ms / 1000 if resume_ms is not None else None
        if entries:
            self._entries.inc(entries)

    def at_end(self) -> None:
        """The consumer skipped to the stream's end (nothing to handle until its next read)."""
        self._reading, self._resume_s = True, None

    def lag_s(self, now_s: float | None = None) -> float:
        """Seconds behind the stream at `now_s` (default: now; module doc)."""
        now_s = self.wall() if now_s is None else now_s
        if self._reading:
            return 0.0 if self._resume_s is None else max(0.0, now_s - self._resume_s)
        if self._oldest_s is None:
            return 0.0
        return max(0.0, now_s - self._oldest_s)

    def close(self) -> None:
        """The consumer stopped: its lag is no longer exposed."""
        COLLECTOR.remove(self)


def track(consumer: str, wall: Callable[[], float] = time.time) -> StreamLag:
    """A new `StreamLag` for `consumer`, exposed until `close()` (or until it is garbage)."""
    lag = StreamLag(consumer, wall)
    COLLECTOR.add(lag)
    return lag


def read_span(entries_by_stream: Sequence[Sequence[Any]], count: int) -> tuple[int | None, int | None, int]:
    """(first id ms, resume id ms, entries) of one read for `StreamLag.answered`: `entries_by_stream`
    holds each stream's entry ids in order; a stream that returned `count` entries is full, and the
    oldest of the full streams' last ids is where its consumer resumes (None: none full)."""
    first: int | None = None
    resume: int | None = None
    total = 0
    for ids in entries_by_stream:
        if not ids:
            continue
        total += len(ids)
        head = entry_ms(ids[0])
        if head is not None and (first is None or head < first):
            first = head
        tail = entry_ms(ids[-1])
        if len(ids) >= count and tail is not None and (resume is None or tail < resume):
            resume = tail
    return first, resume, total


@dataclass
class GroupLagPoll:
    """XINFO GROUPS of the event streams, at most once per `min_interval_s` (module doc)."""

    min_interval_s: float = GROUP_POLL_S
    _polled_at: float = -float("inf")

    async def poll(self, redis: Any, streams: Sequence[str]) -> bool:
        """Read each stream's groups into the collector unless polled less than `min_interval_s`
        ago; whether it read. A stream that does not exist (yet) has no groups."""
        if time.monotonic() - self._polled_at < self.min_interval_s:
            return False
        self._polled_at = time.monotonic()
        found: dict[tuple[str, str], tuple[int | None, int]] = {}
        for stream in streams:
            try:
                groups = await redis.xinfo_groups(stream)
            except Exception as err:  # no such key (no event yet): nothing to expose; others logged
                if "no such key" not in str(err).lower():
                    log.warning("stream lag: XINFO GROUPS %s failed: %s", stream, err)
                continue
            for g in groups:
                name = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
                lag = g.get("lag")
                found[(stream, name)] = (int(lag) if lag is not None else None, int(g.get("pending") or 0))
        COLLECTOR.groups = found
        return True


class StreamLagCollector(Collector):
    """Exposes the registered trackers' lag (computed now) and the last XINFO GROUPS read."""

    def __init__(self) -> None:
        self.trackers: weakref.WeakSet[StreamLag] = weakref.WeakSet()
        self.groups: dict[tuple[str, str], tuple[int | None, int]] = {}
        self._lock = threading.Lock()  # collect() may run in prometheus_client's server thread

    def add(self, lag: StreamLag) -> None:
        """Expose `lag`."""
        with self._lock:
            self.trackers.add(lag)

    def remove(self, lag: StreamLag) -> None:
        """Stop exposing `lag`."""
        with self._lock:
            self.trackers.discard(lag)

    def collect(self) -> Iterator[Metric]:
        """Gauge families for every tracked consumer and every polled group."""
        lag = GaugeMetricFamily("evfleet_stream_lag_seconds",
                                "Seconds between now and the stream id time of the oldest event stream entry "
                                "the consumer has not finished (0 while it waits at the stream's end)",
                                labels=["consumer"])
        worst: dict[str, float] = {}
        with self._lock:
            trackers = list(self.trackers)
        for t in trackers:
            worst[t.consumer] = max(worst.get(t.consumer, 0.0), t.lag_s())
        for consumer in sorted(worst):
            lag.add_metric([consumer], worst[consumer])
        yield lag
        group_lag = GaugeMetricFamily(
            "evfleet_stream_group_lag_entries",
            "Event stream entries not yet delivered to the consumer group (XINFO GROUPS lag)",
            labels=["stream", "group"])
        pending = GaugeMetricFamily(
            "evfleet_stream_group_pending_entries",
            "Event stream entries delivered to the consumer group and not acknowledged",
            labels=["stream", "group"])
        for (stream, group), (entries, unacked) in sorted(self.groups.items()):
            if entries is not None:
                group_lag.add_metric([stream, group], float(entries))
            pending.add_metric([stream, group], float(unacked))
        yield group_lag
        yield pending


COLLECTOR = StreamLagCollector()
REGISTRY.register(COLLECTOR)
