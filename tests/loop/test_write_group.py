"""The sends' store writes of one event-loop turn go out together (`csms.smart_charging.writes`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from csms.commands import CommandReply
from csms.smart_charging import safety
from csms.smart_charging.writes import WriteGroup
from evfleet.events import EventType
from evfleet.store.memory import InMemoryStateStore
from evfleet.store.port import StoreWrite
from tests.loop.test_service_unit import SITE, FixedClock, Stations, _service, _session


class CountingStore(InMemoryStateStore):
    """Takes a loop turn per write (`writes` counts them); with `fail` every write raises."""

    fail = False

    async def write(self, batch: StoreWrite) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("store down")
        await super().write(batch)


async def test_writes_of_one_turn_are_one_store_write_and_each_returns_once_applied() -> None:
    store = CountingStore()
    group = WriteGroup(store)
    writes = [StoreWrite(evse_fields={(f"CP-{i}", 1): {"applied_limit_w": "1.0"}}) for i in range(50)]
    await asyncio.gather(*(group.write(w) for w in writes))
    assert store.writes == 1 and group.flushes == 1
    assert all(store.evses[(f"CP-{i}", 1)]["applied_limit_w"] == "1.0" for i in range(50))


async def test_a_write_to_a_key_of_the_pending_group_goes_after_it() -> None:
    """Two writes of one key in one turn: applied in the order they were handed in."""
    store = CountingStore()
    group = WriteGroup(store)
    first = StoreWrite(evse_fields={("CP-1", 1): {"x": "1"}})
    second = StoreWrite(evse_deleted={("CP-1", 1): ["x"]})
    third = StoreWrite(evse_fields={("CP-1", 1): {"x": "3"}})
    await asyncio.gather(group.write(first), group.write(second), group.write(third))
    assert store.writes == 3
    assert store.evses[("CP-1", 1)] == {"x": "3"}  # merged, the HDEL would have run after the HSET


async def test_a_failed_group_write_raises_in_every_caller() -> None:
    store = CountingStore()
    store.fail = True
    group = WriteGroup(store)
    results = await asyncio.gather(*(group.write(StoreWrite(events=[{"type": "x"}])) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_re_share_writes_in_groups_and_every_call_follows_its_sent_event() -> None:
    """A fallback re-share of 300 sessions: far fewer store writes than two per profile (fails when
    each send writes on its own), every profile's `profile.sent` event is stored before its call
    reaches the station, and the limit holds at every answer."""
    clock, store = FixedClock(), CountingStore()
    n = 300
    store.sites[SITE] = {"limit_kw": "150"}
    sids = [f"CP-{i}" for i in range(n)]
    for sid in sids:
        _session(store, sid, 0.0)
        del store.profiles[(sid, 1)]  # a new session: no profile yet, counted at its 0 W default
    order: list[str] = []

    class Watching(Stations):
        async def call(self, station_id: str, action: str, payload: dict[str, Any],
                       timeout_s: float | None = None) -> CommandReply:
            sent = [e.station_id for e in store.typed_events() if e.type == EventType.PROFILE_SENT]
            assert station_id in sent  # its sent event is stored before the call
            order.append(station_id)
            return await super().call(station_id, action, payload, timeout_s)

    stations = Watching(clock, 150_000.0)
    store.writes = 0
    svc = _service(store, stations, clock)
    svc.store = store
    svc.writes = WriteGroup(store)
    svc._fallback.add(SITE)
    accepted = await safety.share_fairly(svc, SITE)
    assert accepted == n and sorted(order) == sorted(sids)
    answered = [e for e in store.typed_events() if e.type == EventType.PROFILE_ANSWERED]
    assert len(answered) == n
    assert store.writes < n // 4 and svc.writes.flushes < n // 4  # 2 x 300 writes without grouping
    assert stations.worst_sum_w <= 150_000.0 + 1.0
    assert all(store.profiles[(sid, 1)]["kind"] == "interim" for sid in sids)


@pytest.mark.parametrize("cancel_first", [True, False])
async def test_a_cancelled_caller_leaves_the_group_write_to_the_others(cancel_first: bool) -> None:
    store = CountingStore()
    group = WriteGroup(store)
    a = asyncio.ensure_future(group.write(StoreWrite(evse_fields={("CP-1", 1): {"x": "1"}})))
    b = asyncio.ensure_future(group.write(StoreWrite(evse_fields={("CP-2", 1): {"x": "2"}})))
    await asyncio.sleep(0)
    (a if cancel_first else b).cancel()
    await asyncio.gather(a, b, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert store.evses[("CP-1", 1)] == {"x": "1"} and store.evses[("CP-2", 1)] == {"x": "2"}
