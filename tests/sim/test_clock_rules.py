"""One time source per deployment: a shared simulated clock has an owner and a heartbeat, a stale or
foreign clock is never joined, the optimizer follows its removal, and the simulator refuses a csms
that runs on another clock (issue 15's clock rules), against a real Redis and a real csms."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from csms.app import running_csms
from csms.settings import CsmsSettings
from evfleet.clock import (
    CLOCK_TTL_S,
    ClockConflict,
    ClockSpec,
    RealClock,
    ScaledClock,
    acquire_clock,
    publish_shared_clock,
    read_shared_clock,
)
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from optimizer.worker import OptimizerWorker, WorkerConfig
from tests.waiting import until

EVFLEET = str(Path(sys.executable).with_name("evfleet"))
KEY = Keys().clock()
START = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


async def test_a_speed_starts_a_clock_with_owner_and_ttl_and_others_join_or_refuse(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    try:
        clock, created = await acquire_clock(redis, KEY, None, "a")
        assert isinstance(clock, RealClock) and not created  # nothing shared: real time
        clock, created = await acquire_clock(redis, KEY, 240.0, "owner-a", START)
        assert isinstance(clock, ScaledClock) and created and clock.speed == 240.0
        shared = await read_shared_clock(redis, KEY)
        assert shared is not None and shared.live and shared.owner == "owner-a"
        assert 0 < await redis.ttl(KEY) <= CLOCK_TTL_S
        joined, created = await acquire_clock(redis, KEY, None, "b")  # no speed asked: join
        assert isinstance(joined, ScaledClock) and not created and joined.spec() == clock.spec()
        joined, _ = await acquire_clock(redis, KEY, 240.0, "c")  # the same speed: join
        assert joined.spec() == clock.spec()
        with pytest.raises(ClockConflict, match="240x simulated clock owned by owner-a") as err:
            await acquire_clock(redis, KEY, 60.0, "d")  # a foreign speed is refused
        assert err.value.live_speed == 240.0
        with pytest.raises(ClockConflict):
            await acquire_clock(redis, KEY, 1.0, "e")  # real time refuses a live simulated clock
    finally:
        await redis.aclose()


async def test_a_stale_clock_is_never_joined(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    try:  # a key without TTL: left by an older version or a crashed process that never expires
        await redis.hset(KEY, mapping={**ClockSpec(START.timestamp(), time.time(), 240.0).to_dict(),
                                       "owner": "gone"})
        shared = await read_shared_clock(redis, KEY)
        assert shared is not None and not shared.live
        clock, created = await acquire_clock(redis, KEY, None, "b")
        assert isinstance(clock, RealClock) and not created
        clock, created = await acquire_clock(redis, KEY, 60.0, "c", START)  # replaced by a new clock
        assert created and clock.speed == 60.0
        shared = await read_shared_clock(redis, KEY)
        assert shared is not None and shared.live and shared.owner == "c"
    finally:
        await redis.aclose()


async def test_the_optimizer_follows_the_clock_and_its_removal(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    try:
        worker = OptimizerWorker(redis, Keys(), WorkerConfig(consumer="w1"))
        await worker.refresh_clock()
        assert isinstance(worker.clock, RealClock)
        spec = ClockSpec(START.timestamp(), time.time(), 600.0)
        await publish_shared_clock(redis, KEY, spec, "csms:n1")
        await worker.refresh_clock()
        assert isinstance(worker.clock, ScaledClock) and worker.clock.spec() == spec
        await redis.delete(KEY)  # the last process on the clock stopped (or the key expired)
        await worker.refresh_clock()
        assert isinstance(worker.clock, RealClock)
        assert abs(worker.clock.timestamp() - time.time()) < 1
        await redis.hset(KEY, mapping=spec.to_dict())  # stale (no TTL): not followed
        await worker.refresh_clock()
        assert isinstance(worker.clock, RealClock)
    finally:
        await redis.aclose()


def _settings(redis_url: str, **extra: Any) -> CsmsSettings:
    return CsmsSettings(redis_url=redis_url, host="127.0.0.1", port=0, node_id="clock-node",
                        api_enabled=False, smart_charging=False, **extra)


async def _ttl_above(redis: Any, ms: int) -> bool:
    return int(await redis.pttl(KEY)) > ms


async def test_the_csms_refuses_a_foreign_clock_and_keeps_its_own_alive(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    try:
        await publish_shared_clock(redis, KEY, ClockSpec(START.timestamp(), time.time(), 240.0), "sim:x")
        with pytest.raises(ClockConflict):  # real time (the default) with a live simulated clock
            async with running_csms(_settings(redis_url), services=[]):
                pass
        await redis.delete(KEY)
        async with running_csms(_settings(redis_url, clock_speed=900.0), services=[]) as node:
            assert node.ctx.clock.speed == 900.0
            # would expire in 7 s: the node's heartbeat (every 5 s) renews it, seen as a TTL above 7 s
            # (without renewal the key expires); twice, so a periodic renewal, not the first write, is seen
            for _ in range(2):
                await redis.expire(KEY, 7)
                await until(lambda: _ttl_above(redis, 7000), 10, "the csms's heartbeat renewed the clock")
            shared = await read_shared_clock(redis, KEY)
            assert shared is not None and shared.live and shared.owner == "csms:clock-node"
    finally:
        await redis.aclose()


async def _sim(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        EVFLEET, "sim", "--scenario", "seed004", "--stations", "2", "--password", "clock-password-1",
        "--tick", "0.1", "--quiet", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return int(proc.returncode or 0), (out + err).decode()


async def test_the_sim_refuses_a_csms_on_another_clock(redis_url: str) -> None:
    async with running_csms(_settings(redis_url), services=[]) as node:  # real time
        code, output = await _sim("--csms", node.url, "--speed", "600", "--start", "now", "--duration", "6h",
                                  "--provision-redis", redis_url)
    assert code == 1, output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not on this simulation's clock" in lines[0], output
    assert "--clock-speed 600" in lines[0] and "Traceback" not in output


async def test_the_sim_refuses_a_foreign_speed_and_joins_the_csms_clock(redis_url: str) -> None:
    async with running_csms(_settings(redis_url, clock_speed=240.0), services=[]) as node:
        code, output = await _sim("--csms", node.url, "--speed", "60", "--clock-redis", redis_url,
                                  "--duration", "10m", "--provision-redis", redis_url)
        assert code == 1 and "--speed 60" in output and "240x" in output, output
        assert len([ln for ln in output.splitlines() if ln.strip()]) == 1, output
        code, output = await _sim("--csms", node.url, "--clock-redis", redis_url, "--duration", "20m",
                                  "--provision-redis", redis_url)
        assert code == 0, output  # no --speed: it joins the csms's 240x clock and runs 20 min in 5 s
