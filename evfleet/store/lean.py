"""A lean pipelined Redis client for a node's per-message writes (one TCP connection, hiredis).

Public names: `LeanRedis`, `LeanScript`.

redis-py 8 spends about 70 us of CPU around each command here (pool checkout under a lock and a
condition, a connection check, a timeout context, observability hooks, retry wrapper) against about
10 us for the round trip itself. Every station message writes with one or two commands, so that
overhead was a large share of a node's CPU per message. `LeanRedis` sends commands on one
connection without waiting for earlier replies (pipelining): commands issued in the same loop
turn go out in one socket write, and replies are matched to callers in order.

What stays as with redis-py: replies are decoded as UTF-8 `str` (`decode_responses=True`), error
replies raise redis-py's exception classes (`NoScriptError`, `OutOfMemoryError`,
`BusyLoadingError`, `ReadOnlyError`, `ResponseError`, ...), and a connection that cannot be made
or is lost raises `redis.exceptions.ConnectionError` in every caller waiting on it, so
`evfleet.store.client.store_unavailable` judges failures the same way; the next command
reconnects. A caller cancelled while waiting leaves its reply to be read and dropped.

Only plain TCP URLs (`redis://[user:password@]host:port/db`) are served: `from_url` returns None
for a cluster, a Unix socket, TLS or extra connection options, and the caller keeps redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis import exceptions as rx
from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url

from evfleet.store.client import is_cluster_url

_SUPPORTED_OPTIONS = frozenset({"host", "port", "db", "username", "password"})


class _Protocol(asyncio.Protocol):
    """One connection: packed commands out (one write per loop turn), replies matched in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8")
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (uvloop's is no `asyncio.Transport` subclass, but behaves as one)."""
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Hand each complete reply to the caller waiting longest."""
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as err:
                self._fail(rx.ConnectionError(f"Redis protocol error: {err}"))
                return
            if reply is False:
                return
            if not self._waiters:  # a reply nobody asked for: the stream cannot be trusted
                self._fail(rx.ConnectionError("Redis sent a reply no command was waiting for"))
                return
            waiter = self._waiters.popleft()
            if waiter.done():  # its caller was cancelled
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(BaseParser.parse_error(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every caller still waiting."""
        self._fail(rx.ConnectionError(f"Connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail(self, err: rx.ConnectionError) -> None:
        if self.lost is None:
            self.lost = err
        if self._transport is not None:
            self._transport.close()
        self._out.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(err)

    def send(self, args: Sequence[str | bytes]) -> asyncio.Future[Any]:
        """Queue one command; its reply arrives in the returned future."""
        if self.lost is not None or self._transport is None or self._transport.is_closing():
            raise rx.ConnectionError(f"Connection to Redis lost: {self.lost}")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._out.append(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]
        self._waiters.append(waiter)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        """Close the connection (waiting callers get ConnectionError)."""
        if self._transport is not None:
            self._transport.close()


class LeanRedis:
    """A pipelined client of one Redis server (see module docstring)."""

    def __init__(self, host: str, port: int, db: int = 0, username: str | None = None,
                 password: str | None = None) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def from_url(cls, url: str) -> LeanRedis | None:
        """A client for a plain `redis://` URL; None for anything it does not serve."""
        if not url.startswith("redis://") or is_cluster_url(url):
            return None
        options = parse_url(url)
        if not set(options) <= _SUPPORTED_OPTIONS:
            return None
        return cls(str(options.get("host", "localhost")), int(options.get("port", 6379)),
                   int(options.get("db", 0)), options.get("username"), options.get("password"))

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
            except OSError as err:
                raise rx.ConnectionError(f"Error connecting to {self.host}:{self.port}: {err}") from err
            try:
                if self.password is not None:
                    auth = [self.username, self.password] if self.username else [self.password]
                    await protocol.send(["AUTH", *auth])
                if self.db:
                    await protocol.send(["SELECT", str(self.db)])
            except BaseException:
                protocol.close()
                raise
            self._protocol = protocol
            return protocol

    async def execute(self, *args: str | bytes) -> Any:
        """Send one command and return its reply (str values, lists, ints, None)."""
        protocol = await self._connection()
        return await protocol.send(args)

    def register_script(self, source: str) -> LeanScript:
        """A Lua script run by its SHA1 (loaded on first use), like redis-py's `register_script`."""
        return LeanScript(self, source)

    async def aclose(self) -> None:
        """Close the connection."""
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


class LeanScript:
    """A registered Lua script: `await script(keys=[...], args=[...])`."""

    def __init__(self, client: LeanRedis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()  # noqa: S324 - Redis names scripts so

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[str] = ()) -> Any:
        """EVALSHA; EVAL (which loads the script) when the server does not have it."""
        try:
            return await self.client.execute("EVALSHA", self.sha, str(len(keys)), *keys, *args)
        except rx.NoScriptError:
            return await self.client.execute("EVAL", self.source, str(len(keys)), *keys, *args)
