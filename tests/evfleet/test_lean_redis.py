"""`evfleet.store.lean.LeanRedis`: the pipelined client of the per-message writes, against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis as sync_redis
from redis import exceptions as rx

from csms.store.embedded import EmbeddedRedis, free_port
from evfleet.store.client import store_unavailable
from evfleet.store.lean import LeanRedis


def test_only_plain_tcp_urls_are_served() -> None:
    assert LeanRedis.from_url("redis://127.0.0.1:6390/2") is not None
    client = LeanRedis.from_url("redis://user:secret@127.0.0.1:6390/2")
    assert client is not None and (client.username, client.password, client.db) == ("user", "secret", 2)
    for url in ("rediss://127.0.0.1:6390/0", "unix:///tmp/redis.sock", "redis+cluster://127.0.0.1:7000",
                "redis://127.0.0.1:6390/0?socket_timeout=5"):
        assert LeanRedis.from_url(url) is None, url


async def test_concurrent_commands_get_their_own_replies_in_one_write(redis_url: str) -> None:
    client = LeanRedis.from_url(redis_url)
    assert client is not None
    try:
        replies = await asyncio.gather(*(client.execute("HSET", f"k{i}", "f", str(i)) for i in range(200)))
        assert replies == [1] * 200
        values = await asyncio.gather(*(client.execute("HGET", f"k{i}", "f") for i in range(200)))
        assert values == [str(i) for i in range(200)]  # str, like decode_responses=True
        assert await client.execute("HGETALL", "k7") == ["f", "7"]
        assert await client.execute("HGET", "k7", "missing") is None
        with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
            await client.execute("LPUSH", "k7", "x")
        assert await client.execute("HGET", "k8", "f") == "8"  # an error reply keeps the order
    finally:
        await client.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies(redis_url: str) -> None:
    client = LeanRedis.from_url(redis_url)
    assert client is not None
    try:
        await client.execute("SET", "a", "1")
        slow = asyncio.ensure_future(client.execute("BLPOP", "never", "0.2"))
        after = asyncio.ensure_future(client.execute("GET", "a"))
        await asyncio.sleep(0.05)
        slow.cancel()
        assert await after == "1"
        assert await client.execute("GET", "a") == "1"
    finally:
        await client.aclose()


async def test_scripts_are_loaded_when_the_server_lost_them(redis_url: str) -> None:
    client = LeanRedis.from_url(redis_url)
    assert client is not None
    try:
        script = client.register_script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
        assert await script(keys=["n"], args=["x"]) == ["n", "x", 1]
        await client.execute("SCRIPT", "FLUSH")
        assert await script(keys=["n"], args=["y"]) == ["n", "y", 2]
        failing = client.register_script("return redis.call('LPUSH', KEYS[1], 'x')")
        await client.execute("SET", "s", "v")
        with pytest.raises(rx.ResponseError):
            await failing(keys=["s"])
    finally:
        await client.aclose()


async def test_lost_server_is_unavailable_then_reconnected() -> None:
    """A dead Redis raises ConnectionError (judged StoreUnavailable: the message is not answered);
    once it is back, the next command reconnects."""
    port = free_port()
    server = EmbeddedRedis(port=port).start()
    client = LeanRedis.from_url(server.url)
    assert client is not None
    try:
        assert await client.execute("SET", "a", "1") == "OK"
        server.stop()
        with pytest.raises(rx.ConnectionError) as lost:
            for _ in range(50):  # the first may still be written before the close is seen
                await client.execute("GET", "a")
                await asyncio.sleep(0.02)
        assert store_unavailable(lost.value)
        with pytest.raises(rx.ConnectionError) as refused:
            await client.execute("GET", "a")
        assert store_unavailable(refused.value)
        server = EmbeddedRedis(port=port).start()
        assert await client.execute("SET", "b", "2") == "OK"
    finally:
        await client.aclose()
        server.stop()


async def test_password_and_database_are_used(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0].replace("redis://", "redis://:s3cret@")
    sync_redis.Redis.from_url(redis_url).config_set("requirepass", "s3cret")
    authed = sync_redis.Redis.from_url(f"{base}/2")
    try:
        client = LeanRedis.from_url(f"{base}/2")
        assert client is not None
        try:
            assert await client.execute("SET", "in-db-2", "1") == "OK"
        finally:
            await client.aclose()
        assert authed.get("in-db-2") == b"1"
        wrong = LeanRedis.from_url(base.replace("s3cret", "wrong") + "/0")
        assert wrong is not None
        with pytest.raises(rx.AuthenticationError):
            await wrong.execute("GET", "x")
        await wrong.aclose()
    finally:
        authed.config_set("requirepass", "")
        authed.close()


def test_works_on_uvloop(redis_server: EmbeddedRedis) -> None:
    """`EVFLEET_EVENT_LOOP=uvloop`: its transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[Any]:
        client = LeanRedis.from_url(redis_server.url)
        assert client is not None
        try:
            script = client.register_script("return redis.call('INCR', KEYS[1])")
            # concurrent callers on one connection, then one after the other (a script's first
            # call is EVALSHA, then EVAL: concurrent commands may pass it)
            first = await asyncio.gather(client.execute("SET", "uv", "1"), client.execute("GET", "uv"))
            return [*first, await script(keys=["uv"]), await client.execute("GET", "uv")]
        finally:
            await client.aclose()

    assert uvloop.run(main()) == ["OK", "1", 2, "2"]
