"""Repair checks run now and then: the first call for a Redis client runs the check (and waits for
it), later calls at most every `interval_s`; a call while a check runs waits for that one, and a
check that failed or was cancelled counts as not run. Used by the site index and the per-station
active sets (`evfleet.store.sites`, `evfleet.store.active_index`)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeAlias

Checks: TypeAlias = "weakref.WeakKeyDictionary[Any, dict[Hashable, tuple[float, asyncio.Future[Any]]]]"
"""Per client, per key: when the last check started and its future."""


def new_checks() -> Checks:
    """An empty record of checks (one per kind of check; clients are held weakly)."""
    return weakref.WeakKeyDictionary()


async def now_and_then(checks: Checks, client: Any, key: Hashable, interval_s: float,
                       check: Callable[[], Awaitable[Any]]) -> None:
    """Run `check()` for (`client`, `key`) unless one ran less than `interval_s` ago or is running
    (then wait for it). The check runs shielded: a cancelled caller does not cancel it."""
    per_client = checks.setdefault(client, {})
    now = time.monotonic()
    last = per_client.get(key)
    if last is not None:
        at, running = last
        if not running.done():
            await asyncio.shield(running)
            return
        if not running.cancelled() and running.exception() is None and now - at < interval_s:
            return  # a failed check is not a check: run it again
    future = asyncio.ensure_future(check())
    per_client[key] = (now, future)  # before the await: concurrent callers wait for this one
    await asyncio.shield(future)
