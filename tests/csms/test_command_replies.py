"""Command replies are awaited on their own Redis pool: calls in flight never starve OCPP handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from csms.app import running_csms
from csms.commands import CommandClient, CommandReply, Outcome
from csms.protocol.commands import CommandExecutor
from csms.protocol.env import NodeEnv
from csms.protocol.registry import Registry
from csms.settings import CsmsSettings
from csms.store.embedded import free_port
from csms.store.state import StateStore
from evfleet.clock import RealClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation, wait_for
from tests.csms.test_station_messages import tx_event

MAIN_POOL = 8
REPLY_POOL = 16
PENDING_CALLS = 40  # more than both pools together


async def _clients(redis: Redis, name: str | None = None, cmd: str | None = None) -> int:
    rows = await redis.client_list()
    return sum(1 for c in rows
               if (name is None or c.get("name") == name) and (cmd is None or c.get("cmd") == cmd))


async def test_saturated_reply_pool_does_not_stall_ocpp_handlers(
        redis_url: str, redis: Redis, provision: Callable[..., Awaitable[None]]) -> None:
    settings = make_settings(redis_url)
    async with running_csms(settings, services=[], redis_max_connections=MAIN_POOL,
                            reply_max_connections=REPLY_POOL) as node:
        await provision("CP-1", site_id="depot")
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        await st.ok("BootNotification", {"reason": "PowerUp",
                                         "chargingStation": {"model": "M1", "vendorName": "V1"}})
        # the station never answers: every call stays in flight, waiting for its reply
        calls = [asyncio.create_task(node.commands.call("CP-1", "GetBaseReport",
                                                        {"requestId": i, "reportBase": "FullInventory"},
                                                        timeout_s=30))
                 for i in range(PENDING_CALLS)]
        try:
            async def saturated() -> bool:
                return int((await redis.info("clients"))["blocked_clients"]) >= MAIN_POOL

            await wait_for(saturated, timeout=10)
            await asyncio.sleep(0.2)
            started = time.monotonic()
            answer = await st.call("TransactionEvent", tx_event("Started", 0, txid="tx-busy", energy_kwh=1.0),
                                   timeout=5)
            elapsed_s = time.monotonic() - started
            assert answer[0] == 3, answer
            assert elapsed_s < 2.0
            assert await redis.hget("evfleet:tx:CP-1:tx-busy", "energy_wh") == "1000.0"
            assert await redis.hget("evfleet:station:CP-1:evse:1", "transaction_id") == "tx-busy"
            # the reply pool is full (the other calls queue for a connection), none of it on the main pool
            assert await _clients(redis, "evfleet-replies", "brpop") == REPLY_POOL
            assert not any(t.done() for t in calls)
        finally:
            for t in calls:
                t.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        await st.close()
    # closed with the node (Redis drops a closed client a moment later: polled, not read once; with
    # the reply client's socket read timeout gone a close was still listed right after, at load 9-14)
    await wait_for(lambda: _no_reply_clients(redis), timeout=2)


async def _no_reply_clients(redis: Redis) -> bool:
    return await _clients(redis, "evfleet-replies") == 0


async def test_queued_calls_get_their_replies_once_the_pool_frees(
        redis_url: str, provision: Callable[..., Awaitable[None]]) -> None:
    settings = make_settings(redis_url)
    async with running_csms(settings, services=[], reply_max_connections=2) as node:
        await provision("CP-1")
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        await st.ok("BootNotification", {"reason": "PowerUp",
                                         "chargingStation": {"model": "M1", "vendorName": "V1"}})
        st.auto_answer["GetBaseReport"] = {"status": "Accepted"}
        replies: list[CommandReply] = await asyncio.gather(*(
            node.commands.call("CP-1", "GetBaseReport", {"requestId": i, "reportBase": "FullInventory"},
                               timeout_s=10) for i in range(10)))
        assert [r.outcome for r in replies] == [Outcome.RESULT] * 10
        await st.close()


async def test_client_without_reply_client_opens_and_closes_its_own(redis_url: str, keys: Keys) -> None:
    shared = connect_redis(redis_url, client_name="shared-test")
    client = CommandClient(shared, keys, reply_max_connections=3)
    try:
        reply_redis = client.reply_redis
        assert reply_redis is not shared and reply_redis.connection_pool is not shared.connection_pool
        assert reply_redis.connection_pool.max_connections == 3
        assert await reply_redis.brpop(["evfleet:test:none"], timeout=0.1) is None
        assert await reply_redis.get("x") is None  # same server, same options (str replies)
    finally:
        await client.aclose()
        await shared.aclose()
    probe = connect_redis(redis_url)
    try:
        assert await _clients(probe, "shared-test") == 0
    finally:
        await probe.aclose()


class _StoreGoneStation:
    """A connected station whose call fails the way a node's Redis fails in a burst."""

    id = "CP-GONE"
    site_id = "depot"

    async def send_command(self, action: str, payload: dict[str, Any], timeout_s: float) -> None:
        raise RedisConnectionError("No connection available.")


async def test_command_failing_on_an_unavailable_store_is_one_line_and_still_answered(
        caplog: pytest.LogCaptureFixture) -> None:
    """A command that fails because Redis cannot take writes now (here: down) is logged in one line,
    without the traceback whose formatting cost a node 6-20 % of its CPU at 20,000 stations, and
    the node's own caller still gets its InternalError reply although the reply cannot be stored."""
    down = connect_redis(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    keys, clock = Keys(), RealClock()
    env = NodeEnv(settings=CsmsSettings(), clock=clock, keys=keys, store=StateStore(down, keys, clock, "n"),
                  node_id="n")
    registry = Registry()
    registry.replace(cast(Any, _StoreGoneStation()))
    executor = CommandExecutor(env, registry, down)
    try:
        with caplog.at_level(logging.WARNING, logger="csms.protocol.commands"):
            reply = await asyncio.wait_for(executor.call_local(
                "CP-GONE", "GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"}), 10)
            await asyncio.sleep(0)  # the worker task ends after the reply
        assert reply.outcome is Outcome.CALL_ERROR and (reply.error or {})["code"] == "InternalError"
        records = [r for r in caplog.records if r.name == "csms.protocol.commands"]
        assert records and all(r.exc_info is None for r in records)
        assert any("state store unavailable" in r.getMessage() for r in records)
        assert all(t.done() and t.exception() is None for t in executor._workers.values())
    finally:
        await down.aclose()


async def test_a_cancelled_call_gives_its_reply_connection_back(redis_url: str, redis: Redis,
                                                               keys: Keys) -> None:
    """A call cancelled while it waits for its reply (a site's calls when its lease is lost, a pass
    cancelled, a shutdown): redis-py drops a connection whose read is cancelled, so each cancel cost
    a new connection (TCP + CLIENT SETNAME) for the next call. The reply connection goes back to the
    pool whole instead: ten calls cancelled one after the other use one connection, not ten."""
    await redis.hset(keys.station("CP-MUTE"), mapping={"online": "1", "node": "mute-node"})
    await redis.set(keys.node("mute-node"), "{}")  # a live node that never answers
    reply_redis = connect_redis(redis_url, client_name="reply-test")
    client = CommandClient(redis, keys, reply_redis=reply_redis)

    async def blocked() -> int:
        return int((await redis.info("clients"))["blocked_clients"])

    async def waiting() -> bool:  # the call's BRPOP is in flight
        return await blocked() == 1

    async def settled() -> bool:  # no BRPOP of a cancelled call still blocks
        return await blocked() == 0

    try:
        reply_connections: set[str] = set()  # CLIENT LIST ids of the reply client's connections
        for _ in range(10):
            call = asyncio.create_task(client.call("CP-MUTE", "ClearCache", {}, timeout_s=30))
            await wait_for(waiting, timeout=10)
            rows = await redis.client_list()
            reply_connections.update(c["id"] for c in rows if c.get("name") == "reply-test")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await wait_for(settled, timeout=10)
        assert len(reply_connections) == 1, reply_connections
        assert await redis.llen(keys.node_commands("mute-node")) == 10  # the requests went out
    finally:
        await reply_redis.aclose()
