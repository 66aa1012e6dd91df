"""csms.loopwatch: event-loop lag and slow-callback reports (no sockets)."""

from __future__ import annotations

import asyncio
import time
from asyncio import events

from csms.loopwatch import LOOP_LAG_SECONDS, SLOW_CALLBACKS, SLOW_TURNS, LoopLag, SlowCallbacks


def _block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # stands in for CPU-bound work on the event loop


def test_slow_callback_is_reported_with_its_task_and_the_blocking_code() -> None:
    original = events.Handle._run
    watch = SlowCallbacks(threshold_s=0.05)
    before = SLOW_CALLBACKS._value.get()

    async def stalling_step() -> None:
        await asyncio.sleep(0)
        _block_the_loop_for(0.3)

    watch.install()
    try:
        watch.install()  # idempotent
        asyncio.run(_named(stalling_step()))
    finally:
        watch.uninstall()
    assert events.Handle._run is original
    hits = [(what, took, stack) for what, took, stack in watch.recent if "stall-me" in what]
    assert hits, watch.recent
    what, took, stack = hits[0]
    assert took >= 0.3
    assert "_block_the_loop_for" in stack and "stalling_step" in stack
    assert SLOW_CALLBACKS._value.get() >= before + 1


async def _named(coro: object) -> None:
    await asyncio.create_task(coro, name="stall-me")  # type: ignore[arg-type]


def test_callbacks_under_the_threshold_are_not_reported() -> None:
    watch = SlowCallbacks(threshold_s=30.0)

    async def brief() -> None:
        _block_the_loop_for(0.05)

    watch.install()
    try:
        asyncio.run(_named(brief()))
    finally:
        watch.uninstall()
    assert watch.recent == []


def test_loop_lag_sees_a_stall() -> None:
    lag = LoopLag(interval_s=0.01)
    count_before = sum(s.value for s in LOOP_LAG_SECONDS.collect()[0].samples if s.name.endswith("_count"))

    async def main() -> None:
        task = asyncio.create_task(lag.run())
        await asyncio.sleep(0.05)
        _block_the_loop_for(0.25)
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(main())
    assert lag.worst_s >= 0.2
    count = sum(s.value for s in LOOP_LAG_SECONDS.collect()[0].samples if s.name.endswith("_count"))
    assert count > count_before


def test_a_busy_turn_of_many_short_callbacks_is_reported_with_what_used_the_cpu() -> None:
    watch = SlowCallbacks(threshold_s=0.05)

    async def short_step() -> None:
        _spin(0.004)  # each well under the threshold

    async def main() -> None:
        watch.watch_turns(asyncio.get_running_loop())
        await asyncio.sleep(0.01)
        tasks = [asyncio.create_task(short_step()) for _ in range(40)]  # all ready in one turn: 160 ms
        await asyncio.gather(*tasks)
        await asyncio.sleep(0.01)

    before = SLOW_TURNS._value.get()
    watch.install()
    try:
        asyncio.run(main())
    finally:
        watch.uninstall()
    busy = [turn for turn in watch.recent_turns if turn[0] >= 0.15]
    assert busy, watch.recent_turns  # no callback used 50 ms of CPU, but one turn did
    took, cpu, callbacks, top = busy[0]
    assert callbacks >= 40 and cpu >= 0.15
    name, used, count = top[0]
    assert name.endswith("short_step") and count == 40 and used >= 0.15
    assert SLOW_TURNS._value.get() >= before + 1


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
