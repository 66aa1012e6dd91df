"""The csms Redis client under bursts: more concurrent commands than connections wait, not fail."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from evfleet.store.client import MAX_CONNECTIONS, POOL_TIMEOUT_S, connect_redis


async def _connections_named(url: str, name: str) -> int:
    probe = connect_redis(url)
    try:
        clients = await probe.client_list()
        return sum(1 for c in clients if c.get("name") == name)
    finally:
        await probe.aclose()


async def test_burst_beyond_the_pool_size_waits_for_a_connection(redis_url: str) -> None:
    client = connect_redis(redis_url, max_connections=4, client_name="burst-test")
    try:
        # 300 concurrent commands on 4 connections (a plain pool raises MaxConnectionsError here)
        results = await asyncio.gather(*(client.incr("evfleet:test:burst") for _ in range(300)))
        assert sorted(results) == list(range(1, 301))
        assert await client.get("evfleet:test:burst") == "300"
        assert 1 <= await _connections_named(redis_url, "burst-test") <= 4
    finally:
        await client.aclose()
    assert await _connections_named(redis_url, "burst-test") == 0  # aclose() closed the pool


async def test_wait_for_a_connection_is_bounded(redis_url: str) -> None:
    client = connect_redis(redis_url, max_connections=1, pool_timeout_s=0.2)
    try:
        holder = asyncio.ensure_future(client.brpop(["evfleet:test:nothing"], timeout=1))
        await asyncio.sleep(0.05)
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        assert await holder is None
        assert await client.ping() is True  # the connection is free again
    finally:
        await client.aclose()


async def test_default_pool_is_blocking_with_a_cap_and_timeout(redis_url: str) -> None:
    client = connect_redis(redis_url)
    try:
        pool = client.connection_pool
        assert isinstance(pool, BlockingConnectionPool)
        assert pool.max_connections == MAX_CONNECTIONS and pool.timeout == POOL_TIMEOUT_S
        # a mass-connect-sized burst (2,000 station handlers at once) succeeds
        results = await asyncio.gather(*(client.hset(f"evfleet:test:st:{i}", "online", "1")
                                         for i in range(2500)))
        assert results == [1] * 2500
    finally:
        await client.aclose()


def test_a_refused_write_inside_a_script_counts_as_redis_unavailable() -> None:
    """Redis refuses a script's first write with an error wrapping the OOM reply; a TransactionEvent
    must then stay unanswered like for a plain OOM (seen in a CI run as an InternalError answer)."""
    import redis.exceptions as rx

    from evfleet.store.client import store_unavailable

    wrapped = rx.ResponseError("Error running script (call to f_897d): @user_script:22: @user_script: 22: "
                               "-OOM command not allowed when used memory > 'maxmemory'.")
    assert store_unavailable(wrapped)
    assert store_unavailable(rx.ResponseError("OOM command not allowed when used memory > 'maxmemory'."))
    assert not store_unavailable(rx.ResponseError("Error running script: @user_script:3: bad argument"))
