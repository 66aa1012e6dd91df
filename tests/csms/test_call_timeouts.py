"""A call a station leaves unanswered is logged at WARNING by the node holding the station, with the
station, the OCPP message id, the node and how long it waited (and how long it queued before it
was sent); an answer that comes after the timeout is logged as late, with its delay, not as an
answer to nothing. Issue 14: 157 SetChargingProfile timeouts a minute in the production-topology
run were counted, and nothing said which calls, where, or why."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from csms.app import running_csms
from csms.commands import Outcome
from csms.protocol import commands as executor_module
from csms.protocol import station as station_module
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
