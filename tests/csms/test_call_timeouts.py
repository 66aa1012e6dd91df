"""A call a station leaves unanswered is logged at WARNING by the node holding the station, with the
station, the OCPP message id, the node and how long it waited (and how long it queued before it
was sent); an answer that comes after the timeout is logged as late, with its delay, not as an
answer to nothing. Issue 14: 157 SetChargingProfile timeouts a minute in the production-topology
run were counted, and nothing said which calls, where, or why."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from csms.app import running_csms
from csms.commands import CommandRequest, Outcome
from csms.protocol import commands as executor_module
from csms.protocol import station as station_module
from csms.protocol.commands import CommandExecutor
from csms.protocol.env import NodeEnv
from csms.protocol.registry import Registry
from csms.settings import CsmsSettings
from csms.store.state import StateStore
from evfleet.clock import RealClock
from evfleet.keys import Keys
from evfleet.logs import LineBudget
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation

BOOT = {"reason": "PowerUp", "chargingStation": {"model": "M1", "vendorName": "V1"}}


def _warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == logging.WARNING]


async def test_unanswered_call_is_logged_with_station_message_id_node_and_wait(
        redis_url: str, redis: Redis, provision: Callable[..., Awaitable[None]],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with running_csms(make_settings(redis_url, node_id="node-7"), services=[]) as node:
        await provision("CP-1", site_id="depot")
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        await st.ok("BootNotification", BOOT)
        payload = {"requestId": 1, "reportBase": "FullInventory"}
        # through Redis, as another node's call would come (the executor's own WARNING)
        call = asyncio.create_task(node.commands.call("CP-1", "GetBaseReport", payload, timeout_s=0.5))
        asked = await asyncio.wait_for(st.incoming_calls.get(), 2)  # seen, never answered in time
        reply = await call
        assert reply.outcome is Outcome.TIMEOUT
        [line] = _warnings(caplog, executor_module.__name__)
        assert line.startswith(f"GetBaseReport {asked[1]} (request {reply.request_id}, from another process "
                               "through Redis) to station CP-1 on node node-7: no answer within 0.5 s")
        assert "in the station's queue before it was sent" in line and "s in Redis" in line
        # the answer comes late: one WARNING with its delay, not "answers no outstanding CALL"
        await st.send_raw(json.dumps([3, asked[1], {"status": "Accepted"}]))
        await asyncio.sleep(0.2)
        [late] = _warnings(caplog, station_module.__name__)
        assert late.startswith(f"answer to GetBaseReport {asked[1]} from station CP-1 on node node-7 came ")
        assert "after its 0.5 s timeout; ignored" in late
        await st.close()


def test_a_wave_of_lines_is_bounded_per_window() -> None:
    budget = LineBudget(per_window=3, window_s=1.0)
    assert [budget.take(10.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert budget.take(10.5) is None
    assert budget.take(11.0) == 3  # the next window's first line says how many were passed over
    assert budget.take(11.1) == 0


async def test_a_burst_of_requests_is_taken_in_a_few_round_trips(redis_url: str, redis: Redis) -> None:
    """The node takes a burst from its command list with one BRPOP and one RPOP of up to
    `INTAKE_BATCH`, not one BRPOP (and one event-loop turn) per request, in their order."""
    keys, clock = Keys(f"intake-{uuid.uuid4().hex[:8]}"), RealClock()
    env = NodeEnv(settings=CsmsSettings(), clock=clock, keys=keys, store=StateStore(redis, keys, clock, "n"),
                  node_id="n")
    executor = CommandExecutor(env, Registry(), redis)
    requests = [CommandRequest(request_id=f"r{i}", station_id="CP-AWAY", action="GetBaseReport",
                               payload={"requestId": i, "reportBase": "FullInventory"}, timeout_s=5,
                               reply_to=keys.command_reply(f"r{i}")) for i in range(60)]
    await redis.lpush(keys.node_commands("n"), *(r.model_dump_json() for r in requests))
    brpops = 0
    brpop = redis.brpop

    async def counted(keys_: list[str], *args: Any, **kwargs: Any) -> Any:
        nonlocal brpops
        brpops += keys_ == [keys.node_commands("n")]
        return await brpop(keys_, *args, **kwargs)

    redis.brpop = counted  # type: ignore[method-assign]
    run = asyncio.create_task(executor.run())
    try:
        for r in requests:  # every one answered (offline: the station is not connected here)
            got = await redis.brpop([r.reply_to], timeout=5)
            assert got is not None and json.loads(got[1])["outcome"] == "offline"
        assert brpops <= 2
        events = await redis.xrange(keys.station_events("CP-AWAY"))
        assert [json.loads(f["data"])["request_id"] for _, f in events] == [r.request_id for r in requests]
    finally:
        executor.stopping = True
        await asyncio.wait_for(run, 5)
