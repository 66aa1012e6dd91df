"""A call through Redis gets its station's answer however long the station takes within the call's
timeout, not only the answers that come within redis-py's default socket timeout (5 s).

The node awaited replies (BRPOP) on a client with that default read timeout, so every call to a
station held by another node that took longer than 5 s ended as a timeout after 5.2-9.4 s, and the
station's answer, pushed later, was read by nobody: every SetChargingProfile timeout of issue 14's
production-topology run (398 in one run, all cut 5.6-9.4 s after the call; the node holding the
stations saw no station time out). About 6 s by
its nature (an answer after 5.5 s); `alone` (tests/conftest.py ALONE) so that a loaded runner
does not stretch it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from csms.app import running_csms
from csms.commands import Outcome
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation

SLOW_S = 5.5
"""The station's answer time: longer than redis-py's default socket read timeout (5 s)."""


async def test_answer_after_five_seconds_reaches_a_caller_through_redis(
        redis_url: str, redis: Redis, provision: Callable[..., Awaitable[None]]) -> None:
    async with running_csms(make_settings(redis_url), services=[]) as node:
        await provision("CP-1", site_id="depot")
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        await st.ok("BootNotification", {"reason": "PowerUp",
                                         "chargingStation": {"model": "M1", "vendorName": "V1"}})
        payload = {"requestId": 1, "reportBase": "FullInventory"}
        # the node's own CommandClient (its reply client): the path a call from another node takes
        call = asyncio.create_task(node.commands.call("CP-1", "GetBaseReport", payload, timeout_s=10))
        asked = await asyncio.wait_for(st.incoming_calls.get(), 2)
        await asyncio.sleep(SLOW_S)
        await st.send_raw(json.dumps([3, asked[1], {"status": "Accepted"}]))
        reply = await asyncio.wait_for(call, 5)
        assert reply.outcome is Outcome.RESULT, reply.error
        assert reply.payload == {"status": "Accepted"}
        await st.close()
