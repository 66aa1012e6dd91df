"""Store writes of concurrent sends applied together (`WriteGroup`, used by `sending`).

A pass starts up to `sending.PASS_CHUNK` TxProfile sends in one event-loop turn, and each wrote
its `profile.sent` event in a MULTI/EXEC of its own, then its answer in another: two round trips
and two transactions packed in Python per profile, most of the smart-charging CPU of a node
handing interim shares to thousands of new sessions (issue 14: 12 % of the lease holder's samples
in `send` at 10,000 stations, half of it `RedisStateStore.write`). Writes handed to one
`WriteGroup` in the same turn go out as one `StateStore.write` on the next turn; each caller
returns once it is applied, as before, and gets its exception if it failed.

What stays the same: a caller's write is applied (atomically, with the others of its group:
in the Redis Cluster layout each station's parts stay in one MULTI/EXEC of its shard) before its
`write` returns, so a profile's call still starts after its `profile.sent` event is stored and
a send still returns only once its answer is recorded; writes that touch a key another write of
the pending group touches wait for that group and go in the next one, so writes of one key keep
their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from evfleet.store.port import StateStore, StoreWrite


def _keys(w: StoreWrite) -> Iterator[tuple[str, object]]:
    """Every key a write touches (an EVSE's records, a session's counters, a site hash)."""
    for ident in (*w.profiles, *w.evse_fields, *w.evse_deleted, *w.ev_schedules):
        yield "evse", ident
    for ref in (*w.session_incr, *w.session_fields):
        yield "session", ref
    for site in w.site_fields:
        yield "site", site


def merge_into(group: StoreWrite, w: StoreWrite) -> None:
    """Add `w` to `group` (no key in common: `WriteGroup` checks); events keep their order."""
    group.profiles.update(w.profiles)
    group.evse_fields.update(w.evse_fields)
    group.evse_deleted.update(w.evse_deleted)
    group.session_incr.update(w.session_incr)
    group.session_fields.update(w.session_fields)
    group.ev_schedules.update(w.ev_schedules)
    group.site_fields.update(w.site_fields)
    group.events.extend(w.events)


class WriteGroup:
    """Writes handed in during one event-loop turn, applied in one `StateStore.write` (module doc)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._pending: StoreWrite | None = None
        self._keys: set[tuple[str, object]] = set()
        self._done: asyncio.Future[None] | None = None
        self.flushes = 0
        """Store writes made (for tests and benchmarks)."""

    async def write(self, w: StoreWrite) -> None:
        """Apply `w` with the other writes of this turn; returns when it is applied (raises if not)."""
        if not w:
            return
        keys = set(_keys(w))
        while self._done is not None and not keys.isdisjoint(self._keys):
            await asyncio.shield(self._done)  # a key of the pending group: after it, in the next one
        if self._done is None:
            self._pending, self._keys = StoreWrite(), set()
            self._done = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush)
        assert self._pending is not None
        merge_into(self._pending, w)
        self._keys |= keys
        await asyncio.shield(self._done)  # a caller cancelled meanwhile leaves the others' write alone

    def _flush(self) -> None:
        group, done = self._pending, self._done
        self._pending, self._keys, self._done = None, set(), None
        assert group is not None and done is not None
        self.flushes += 1
        task = asyncio.ensure_future(self.store.write(group))

        def settle(t: asyncio.Task[None]) -> None:
            if t.cancelled():
                done.cancel()
            elif t.exception() is not None:
                done.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                done.set_result(None)
            if not done.cancelled():
                done.exception()  # retrieved: a group nobody awaits any more logs nothing

        task.add_done_callback(settle)
