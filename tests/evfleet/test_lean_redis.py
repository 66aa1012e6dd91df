"""`evfleet.store.lean.LeanRedis`: the pipelined client of the per-message writes, against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis as sync_redis
from redis import exceptions as rx

from csms.store.embedded import EmbeddedRedis, free_port
from evfleet.store.client import store_unavailable
from evfleet.store.lean import LeanRedis


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[LeanRedis]:
    """A lean client of the test's (flushed) Redis, closed after the test."""
    lean = LeanRedis.from_url(redis_url)
    assert lean is not None
    yield lean
    await lean.aclose()


def test_only_plain_tcp_urls_are_served() -> None:
    assert LeanRedis.from_url("redis://127.0.0.1:6390/2") is not None
    client = LeanRedis.from_url("redis://user:secret@127.0.0.1:6390/2")
    assert client is not None and (client.username, client.password, client.db) == ("user", "secret", 2)
    for url in ("rediss://127.0.0.1:6390/0", "unix:///tmp/redis.sock", "redis+cluster://127.0.0.1:7000",
                "redis://127.0.0.1:6390/0?socket_timeout=5"):
        assert LeanRedis.from_url(url) is None, url


async def test_concurrent_commands_get_their_own_replies_in_one_write(client: LeanRedis) -> None:
    replies = await asyncio.gather(*(client.execute("HSET", f"k{i}", "f", str(i)) for i in range(200)))
    assert replies == [1] * 200
    values = await asyncio.gather(*(client.execute("HGET", f"k{i}", "f") for i in range(200)))
    assert values == [str(i) for i in range(200)]  # str, like decode_responses=True
    assert await client.execute("HGETALL", "k7") == ["f", "7"]
    assert await client.execute("HGET", "k7", "missing") is None
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        await client.execute("LPUSH", "k7", "x")
    assert await client.execute("HGET", "k8", "f") == "8"  # an error reply keeps the order


async def test_error_replies_raise_redis_py_classes_with_its_texts(client: LeanRedis) -> None:
    """As redis-py raises them: the code's own class without the code, ERR's text without "ERR"."""
    with pytest.raises(rx.NoScriptError) as noscript:
        await client.execute("EVALSHA", "0" * 40, "0")
    assert str(noscript.value).startswith("No matching script")
    with pytest.raises(rx.ResponseError) as unknown:
        await client.execute("NOSUCHCOMMAND")
    assert type(unknown.value) is rx.ResponseError and str(unknown.value).startswith("unknown command")
    await client.execute("CONFIG", "SET", "maxmemory", "1")
    try:
        with pytest.raises(rx.OutOfMemoryError) as oom:
            await client.execute("SET", "big", "x" * 1000)
        assert store_unavailable(oom.value) and str(oom.value).startswith("command not allowed")
    finally:
        await client.execute("CONFIG", "SET", "maxmemory", "0")


async def test_a_cancelled_caller_does_not_shift_the_replies(client: LeanRedis) -> None:
    await client.execute("SET", "a", "1")
    slow = asyncio.ensure_future(client.execute("BLPOP", "never", "0.2"))
    after = asyncio.ensure_future(client.execute("GET", "a"))
    await asyncio.sleep(0.05)
    slow.cancel()
    assert await after == "1"
    assert await client.execute("GET", "a") == "1"


async def test_scripts_are_loaded_when_the_server_lost_them(client: LeanRedis) -> None:
    script = client.register_script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
    assert await script(keys=["n"], args=["x"]) == ["n", "x", 1]
    await client.execute("SCRIPT", "FLUSH")
    assert await script(keys=["n"], args=["y"]) == ["n", "y", 2]
    failing = client.register_script("return redis.call('LPUSH', KEYS[1], 'x')")
    await client.execute("SET", "s", "v")
    with pytest.raises(rx.ResponseError):
        await failing(keys=["s"])


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


class SilencingProxy:
    """A TCP proxy in front of a real Redis whose open connections can be made to stop answering
    (`silence`: what the client sends is read and dropped, nothing comes back, nothing is closed:
    a half-open connection); connections made after it are forwarded as usual."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.silenced: list[bytes] = []
        """What each silenced connection received after `silence`."""
        self._live: list[list[bool]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def silence(self) -> None:
        for live in self._live:
            live[0] = False
        self._live.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        live = [True]
        self._live.append(live)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        received = len(self.silenced)
        self.silenced.append(b"")

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            while data := await src.read(65536):
                if live[0]:
                    dst.write(data)
                elif upstream:
                    self.silenced[received] += data

        tasks = [asyncio.create_task(pump(reader, up_writer, True)),
                 asyncio.create_task(pump(up_reader, writer, False))]
        self._tasks.update(tasks)
        with contextlib.suppress(ConnectionError):
            await asyncio.gather(*tasks)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()


@contextlib.asynccontextmanager
async def behind_proxy(redis_server: EmbeddedRedis, idle_ping_s: float) -> AsyncIterator[
        tuple[SilencingProxy, LeanRedis]]:
    """A lean client (1 s reply timeout) of the real Redis through a `SilencingProxy`."""
    proxy = SilencingProxy(int(redis_server.url.rsplit(":", 1)[1].split("/")[0]))
    url = await proxy.start()
    client = LeanRedis.from_url(url, reply_timeout_s=1.0, check_s=0.1, idle_ping_s=idle_ping_s)
    assert client is not None
    try:
        yield proxy, client
    finally:
        await client.aclose()
        await proxy.stop()


async def test_a_connection_that_stops_answering_is_dropped_and_replaced(
        redis_server: EmbeddedRedis) -> None:
    """A half-open connection: the waiting command fails as unavailable (its TransactionEvent is not
    answered) instead of waiting for ever, and the next command gets a new connection."""
    async with behind_proxy(redis_server, idle_ping_s=60) as (proxy, client):
        assert await client.execute("SET", "half-open", "1") == "OK"
        proxy.silence()
        async with asyncio.timeout(10):  # without the reply timeout: TimeoutError here, not ConnectionError
            with pytest.raises(rx.ConnectionError) as dropped:
                await client.execute("GET", "half-open")
        assert store_unavailable(dropped.value)
        assert await client.execute("GET", "half-open") == "1"
        assert proxy.connections == 2


async def test_an_idle_connection_found_dead_is_replaced_before_the_next_command(
        redis_server: EmbeddedRedis) -> None:
    """The idle PING: a connection that died while nothing was sent is replaced, so the first
    command after the quiet spell is answered (without it, that command waited on the dead one)."""
    async with behind_proxy(redis_server, idle_ping_s=0.2) as (proxy, client):
        assert await client.execute("SET", "idle", "1") == "OK"
        proxy.silence()
        for _ in range(200):  # until the PING went unanswered for the reply timeout
            if proxy.silenced[0] and client._protocol is not None and client._protocol.lost is not None:
                break
            await asyncio.sleep(0.05)
        assert b"PING" in proxy.silenced[0]
        async with asyncio.timeout(10):
            assert await client.execute("GET", "idle") == "1"
        assert proxy.connections == 2


async def test_one_connection_attempt_is_shared_and_bounded() -> None:
    """A server that accepts but never answers (AUTH hangs): every caller waiting for the attempt
    fails as unavailable after `connect_timeout_s`, from one attempt, not one attempt each."""
    accepted: list[asyncio.StreamWriter] = []

    async def mute(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = LeanRedis.from_url(f"redis://:pw@127.0.0.1:{port}/0", connect_timeout_s=0.3)
    assert client is not None
    try:
        async with asyncio.timeout(10):
            results = await asyncio.gather(*(client.execute("GET", "x") for _ in range(20)),
                                           return_exceptions=True)
        assert all(isinstance(r, rx.ConnectionError) and store_unavailable(r) for r in results), results
        assert len(accepted) == 1
    finally:
        await client.aclose()
        for writer in accepted:
            writer.close()
        server.close()
