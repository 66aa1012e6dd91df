"""The smart-charging service reads the event stream in batches (`pacing.read_pause_s`): while the
stream keeps up, two reads start at least `stream_read_interval_s` apart (not one XREAD per event);
a read that returned a full batch, skipped entries included, is followed at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime

from csms.settings import CsmsSettings
from csms.smart_charging import pacing
from csms.smart_charging.service import STREAM_READ_COUNT, SmartChargingService
from evfleet.clock import RealClock
from evfleet.events import Event, EventType, event_fields
from evfleet.store.lag import StreamLag
from evfleet.store.memory import InMemoryStateStore

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


class RecordingStore(InMemoryStateStore):
    """The in-memory store, noting when each read of the stream started and what it returned."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[float, int]] = []

    async def read_events(self, last_id: str, count: int, block_ms: int,
                          skip: Callable[[Mapping[str, str]], bool] | None = None,
                          lag: StreamLag | None = None) -> tuple[str, list[Event]]:
        started = time.monotonic()
        await asyncio.sleep(0)  # a real read yields to the loop
        last_id, events = await super().read_events(last_id, count, block_ms, skip, lag)
        self.reads.append((started, len(events)))
        return last_id, events


class NoCalls:
    """No station is called in these tests."""

    async def call(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("no call expected")


def _service(store: RecordingStore, interval_s: float) -> SmartChargingService:
    svc = SmartChargingService(store, RealClock(), CsmsSettings(), "node-a", NoCalls())  # type: ignore[arg-type]
    svc.stream_read_interval_s = interval_s
    return svc


@contextlib.asynccontextmanager
async def _running(svc: SmartChargingService, store: RecordingStore) -> AsyncIterator[None]:
    """Run the service until the block ends, from its first read of the stream on."""
    task = asyncio.create_task(svc.run())
    try:
        async with asyncio.timeout(5):
            while not store.reads:  # the service reads from the tail on: events after its first read
                await asyncio.sleep(0.01)
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_read_pause_fills_the_interval_only_after_a_partial_read() -> None:
    assert abs(pacing.read_pause_s(10.0, 10.01, got=3, count=100, interval_s=0.05) - 0.04) < 1e-9
    assert pacing.read_pause_s(10.0, 10.01, got=0, count=100, interval_s=0.05) > 0
    assert pacing.read_pause_s(10.0, 10.01, got=100, count=100, interval_s=0.05) == 0.0  # behind
    assert pacing.read_pause_s(10.0, 11.0, got=1, count=100, interval_s=0.05) == 0.0  # it waited already


async def test_partial_reads_start_at_least_the_interval_apart() -> None:
    """Fails if the service reads again at once after a read that kept up (one XREAD per event)."""
    store = RecordingStore()
    svc = _service(store, interval_s=0.1)
    async with _running(svc, store):
        for i in range(6):  # events keep arriving, a few at a time
            store.events.append(event_fields(EventType.STATION_CONNECTED, T0, station_id=f"CP-{i}"))
            await asyncio.sleep(0.1)
        async with asyncio.timeout(5):
            while sum(n for _, n in store.reads) < 6:  # every event is read
                await asyncio.sleep(0.01)
    starts = [t for t, _ in store.reads]
    assert 3 <= len(starts) <= 10, starts
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.09, gaps


async def test_a_full_read_of_skipped_entries_is_followed_at_once() -> None:
    """100 meter events of a site another node holds are skipped unparsed; the read was still full,
    so the next one follows without the pause (fails if only parsed events counted: 30 s wait)."""
    store = RecordingStore()
    svc = _service(store, interval_s=0.05)
    async with _running(svc, store):
        for i in range(STREAM_READ_COUNT):
            store.events.append(event_fields(EventType.METER_VALUES, T0, station_id=f"CP-{i}", evse_id=1,
                                             ref=f"CP-{i}:tx:1", site_id="held-elsewhere",
                                             data={"power_w": 7000.0}))
        store.events.append(event_fields(EventType.STATION_CONNECTED, T0, station_id="CP-last"))
        svc.stream_read_interval_s = 30.0
        first = len(store.reads)
        async with asyncio.timeout(5):
            while sum(n for _, n in store.reads) < 1:
                await asyncio.sleep(0.01)
    reads = store.reads[first:]
    assert [n for _, n in reads] == [0, 1]  # the full read (every entry skipped), then the last event
