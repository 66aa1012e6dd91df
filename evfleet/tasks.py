"""Cancellation that always ends: for every long-running loop and every shutdown.

Python 3.11's `asyncio.wait_for` can swallow a cancellation: when the awaited future completes in
the same event-loop iteration as the cancel arrives, it returns the result and the CancelledError
is gone (3.12 rewrote wait_for on `asyncio.timeout`). Libraries we use call it on their hot paths:
redis-py sends every command through it (its default socket_timeout is 5 s), aiomqtt waits for
every publish's confirmation, subscribe and connect with it, the ocpp library for each answer. A
task cancelled at that moment carries on as if nothing happened: a loop around such a call runs
for ever, and whoever awaits the task after cancelling it (a TaskGroup, `gather`, a shutdown)
waits for ever, with the event loop idle. The task's `cancelling()` count still says that a
cancellation was asked for (only `uncancel()` lowers it, and only timeouts and TaskGroups call that).

Two defences, used together:

- `raise_if_cancelling()` right after such a library call inside a loop: raises the
  cancellation again.
- `stop_tasks()` at shutdown: cancel, wait bounded, cancel again while they linger, and log what
  stayed, so one stuck task never hangs its owner.

Our own code waits with `asyncio.timeout`, never `asyncio.wait_for`. A task that checks
`raise_if_cancelling` must not run a TaskGroup: in 3.11 a TaskGroup whose child fails while it
waits in `__aexit__` cancels its parent and never uncancels it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
RECANCEL_S = 0.5
"""`stop_tasks` cancels lingering tasks again at this interval."""


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to cancel and a library swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout_s: float = STOP_TIMEOUT_S,
                     what: str = "tasks", grace_s: float = RECANCEL_S) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait for them, at most `timeout_s`: after `grace_s` (their time to clean
    up), cancel those still running again every `RECANCEL_S` (a library that swallowed one
    cancellation must not hang the shutdown).

    Logs the tasks that failed, and (as an error, with their stacks) those still running at the
    end. Returns the tasks still running. Safe to call while the caller is itself being
    cancelled: the wait is not cut short, the caller's cancellation is raised afterwards.
    """
    loop = asyncio.get_running_loop()
    tasks = list(tasks)
    deadline = loop.time() + timeout_s
    pending = {t for t in tasks if not t.done()}
    cancelled_meanwhile = False
    wait_s = grace_s
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=min(wait_s, max(0.0, deadline - loop.time())))
            wait_s = RECANCEL_S
        except asyncio.CancelledError:  # our owner is stopping too: finish this first
            cancelled_meanwhile = True
            pending = {t for t in pending if not t.done()}
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())
    if pending:
        log.error("%s still running %.0f s after being cancelled: %s", what, timeout_s,
                  "; ".join(describe(t) for t in pending))
    if cancelled_meanwhile:
        raise asyncio.CancelledError
    return pending


def describe(task: asyncio.Task[Any]) -> str:
    """The task's name and where it waits: its whole await chain, outermost first."""
    parts = []
    obj: object = task.get_coro()
    while obj is not None:
        frame = _first_attr(obj, "cr_frame", "gi_frame", "ag_frame")
        if frame is None:
            break
        code = frame.f_code
        parts.append(f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        obj = _first_attr(obj, "cr_await", "gi_yieldfrom", "ag_await")
    return f"{task.get_name()} at {' -> '.join(parts) or '?'}"


def _first_attr(obj: object, *names: str) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None
