"""Waiting helpers shared by the integration tests: every wait is bounded and says what it waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from evfleet.tasks import describe

STOP_TIMEOUT_S = 15.0
"""How long `stopped` waits for cancelled tasks: far below pytest's 300 s, far above a clean stop."""


async def until(pred: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    """Poll an (async) predicate every 50 ms until truthy; return its value, or fail after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or pred}")
        await asyncio.sleep(0.05)


async def stopped(*tasks: asyncio.Task[Any], timeout_s: float = STOP_TIMEOUT_S) -> list[BaseException]:
    """Cancel `tasks` once and wait for them; fail if any is still running after `timeout_s`.

    A task that ignores its cancellation (a loop around a library call that swallowed it) is a
    product bug: this names the task and where it waits, instead of hanging until pytest's timeout.
    Returns the exceptions the tasks ended with (other than their cancellation), like
    `gather(..., return_exceptions=True)`.
    """
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=timeout_s) if tasks else (set(), set())
    if pending:
        raise AssertionError(f"{len(pending)} task(s) still running {timeout_s} s after being cancelled "
                             f"(cancellation ignored?): " + "; ".join(describe(t) for t in pending))
    errors: list[BaseException] = []
    for task in tasks:
        if not task.cancelled() and (err := task.exception()) is not None:
            errors.append(err)
    return errors
