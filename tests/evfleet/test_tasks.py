"""evfleet.tasks: a swallowed cancellation is raised again; stopping is bounded and says where tasks wait."""

from __future__ import annotations

import asyncio
import logging

import pytest

from evfleet.tasks import describe, raise_if_cancelling, stop_tasks


async def _swallow_once_then_loop(loops: list[int], check: bool) -> None:
    """A loop around a call that loses one cancellation, as 3.11's wait_for does in a race."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        pass  # swallowed: no uncancel(), so cancelling() stays 1
    while True:
        loops.append(1)
        if check:
            raise_if_cancelling()
        await asyncio.sleep(0.01)


async def test_a_swallowed_cancellation_is_raised_again_at_the_next_check() -> None:
    loops: list[int] = []
    task = asyncio.create_task(_swallow_once_then_loop(loops, check=True))
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled() and len(loops) == 1


async def test_stop_tasks_cancels_again_and_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    loops: list[int] = []
    swallower = asyncio.create_task(_swallow_once_then_loop(loops, check=False), name="swallower")
    released = asyncio.Event()

    async def deaf() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

    stubborn = asyncio.create_task(deaf(), name="stubborn")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with caplog.at_level(logging.ERROR, logger="evfleet.tasks"):
        pending = await stop_tasks([swallower, stubborn], timeout_s=1.0, what="test tasks", grace_s=0.1)
    assert 0.9 <= loop.time() - t0 < 2.0
    assert swallower.cancelled()  # the second cancel ended it
    assert pending == {stubborn}
    assert "test tasks still running 1 s after being cancelled: stubborn at deaf (" in caplog.text
    released.set()
    stubborn.cancel()
    await asyncio.wait({stubborn}, timeout=1)


async def test_describe_names_the_whole_await_chain() -> None:
    gate = asyncio.Event()

    async def inner() -> None:
        await gate.wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer(), name="chain")
    await asyncio.sleep(0)
    text = describe(task)
    assert text.startswith("chain at outer (test_tasks.py:") and "-> inner (test_tasks.py:" in text
    assert "-> wait (locks.py:" in text
    gate.set()
    await task
