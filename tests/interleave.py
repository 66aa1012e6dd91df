"""Run a coroutine beside a task that marks every turn of the event loop it gets: shared by the
tests that check a long pass yields to other work (tests/loop/test_pass_yields.py,
tests/perf/test_yielding_reads.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

TURN = "o"
"""What the other task appends to the log at each turn it gets."""


async def alongside(work: Awaitable[T], log: list[str]) -> T:
    """Await `work` while another task appends `TURN` to `log` at every turn of the loop it gets."""
    done = False

    async def other() -> None:
        while not done:
            log.append(TURN)
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    try:
        return await work
    finally:
        done = True
        await task


def breaks(log: list[str]) -> int:
    """How many times the other task got the loop right after a step of the work (an entry that is
    not `TURN`)."""
    return sum(1 for a, b in zip(log, log[1:], strict=False) if a != TURN and b == TURN)
