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

A connection that dies without a close (server host gone, network cut, a half-open TCP
connection) is found by its silence: when the server sends nothing for `reply_timeout_s` while
commands wait, the connection is dropped and they fail with ConnectionError (so a TransactionEvent
whose write went unanswered is itself not answered); an idle connection is sent a PING every
`idle_ping_s` so that it is found dead, and replaced, before the next message needs it. One
connection attempt runs at a time, bounded by `connect_timeout_s`; every caller waiting for it
shares its outcome.

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
from redis.asyncio.connection import parse_url

from evfleet.store.client import is_cluster_url

_SUPPORTED_OPTIONS = frozenset({"host", "port", "db", "username", "password"})

REPLY_TIMEOUT_S = 10.0
"""A connection whose server sends nothing for this long while commands wait is dropped."""
IDLE_PING_S = 5.0
"""An idle connection is sent a PING this often (its silence then finds it dead)."""
CHECK_EVERY_S = 1.0
"""How often a connection's silence and idleness are checked (one timer per connection)."""
CONNECT_TIMEOUT_S = 5.0
"""A connection attempt (TCP, AUTH, SELECT) that takes longer fails."""

_REPLY_ERRORS: dict[str, type[rx.RedisError]] = {
    "OOM": rx.OutOfMemoryError, "WRONGPASS": rx.AuthenticationError, "EXECABORT": rx.ExecAbortError,
    "LOADING": rx.BusyLoadingError, "NOSCRIPT": rx.NoScriptError, "READONLY": rx.ReadOnlyError,
    "NOAUTH": rx.AuthenticationError, "NOPERM": rx.NoPermissionError, "TRYAGAIN": rx.TryAgainError,
    "CLUSTERDOWN": rx.ClusterDownError, "CROSSSLOT": rx.ClusterCrossSlotError,
    "MASTERDOWN": rx.MasterDownError,
}
"""Error reply code -> redis-py's exception class, as redis-py's parsers map them (MOVED and ASK,
which only a cluster sends, stay ResponseError: `from_url` serves no cluster)."""
_ERR_REPLIES: dict[str, type[rx.RedisError]] = {
    "max number of clients reached": rx.MaxClientsReachedError,
    "invalid password": rx.AuthenticationError,
    "wrong number of arguments for 'auth' command": rx.AuthenticationWrongNumberOfArgsError,
    "wrong number of arguments for 'AUTH' command": rx.AuthenticationWrongNumberOfArgsError,
}
"""`ERR` replies that redis-py raises as their own class."""


def _reply_error(text: str) -> rx.RedisError:
    """The redis-py exception of an error reply (`OOM command not allowed ...` -> OutOfMemoryError
    with the text after the code, as redis-py raises it; an unknown code -> ResponseError)."""
    code, _, rest = text.partition(" ")
    if code == "ERR" and rest in _ERR_REPLIES:
        return _ERR_REPLIES[rest](rest)
    cls = _REPLY_ERRORS.get(code)
    if cls is not None:
        return cls(rest)
    return rx.ResponseError(rest if code == "ERR" else text)


class _Protocol(asyncio.Protocol):
    """One connection: packed commands out (one write per loop turn), replies matched in order;
    a timer every `check_s` drops it when silent and pings it when idle (module docstring)."""

    def __init__(self, reply_timeout_s: float = REPLY_TIMEOUT_S, idle_ping_s: float = IDLE_PING_S,
                 check_s: float = CHECK_EVERY_S) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", protocolError=rx.InvalidResponse,
                                      replyError=_reply_error)
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self.lost: BaseException | None = None
        self._reply_timeout_s, self._idle_ping_s, self._check_s = reply_timeout_s, idle_ping_s, check_s
        self._sent = self._received = 0
        """Commands sent and reads with data, counted (the timer compares them between checks)."""
        self._seen = (0, 0, False)
        """(`_sent`, `_received`, commands waiting) at the last check."""
        self._silent_s = self._idle_s = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (uvloop's is no `asyncio.Transport` subclass, but behaves as one)."""
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(self._check_s, self._check)

    def data_received(self, data: bytes) -> None:
        """Hand each complete reply to the caller waiting longest."""
        self._received += 1
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except rx.InvalidResponse as err:
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
            if isinstance(reply, rx.RedisError):  # an error reply (`_reply_error`)
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every caller still waiting."""
        self._fail(rx.ConnectionError(f"Connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail(self, err: rx.ConnectionError, abort: bool = False) -> None:
        if self.lost is None:
            self.lost = err
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            if abort:  # a silent peer: drop the connection without waiting to flush to it
                self._transport.abort()
            else:
                self._transport.close()
        self._out.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(err)

    def _check(self) -> None:
        """Every `check_s`: drop the connection if commands waited through a whole `reply_timeout_s`
        with no data from the server; send a PING after `idle_ping_s` without commands."""
        self._timer = None
        if self.lost is not None or self._transport is None or self._transport.is_closing():
            return
        sent, received, waited = self._seen
        waiting = bool(self._waiters)
        self._seen = (self._sent, self._received, waiting)
        if waiting and waited and received == self._received:
            self._silent_s += self._check_s
            if self._silent_s >= self._reply_timeout_s:
                self._fail(rx.ConnectionError(
                    f"Redis sent nothing for {self._silent_s:g} s while commands waited: connection dropped"),
                    abort=True)
                return
        else:
            self._silent_s = 0.0
        if waiting or sent != self._sent:
            self._idle_s = 0.0
        else:
            self._idle_s += self._check_s
            if self._idle_s >= self._idle_ping_s:
                self._idle_s = 0.0
                self.send(("PING",)).add_done_callback(_drop_outcome)
        self._timer = asyncio.get_running_loop().call_later(self._check_s, self._check)

    def send(self, args: Sequence[str | bytes]) -> asyncio.Future[Any]:
        """Queue one command; its reply arrives in the returned future."""
        if self.lost is not None or self._transport is None or self._transport.is_closing():
            raise rx.ConnectionError(f"Connection to Redis lost: {self.lost}")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._out.append(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]
        self._waiters.append(waiter)
        self._sent += 1
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()


def _drop_outcome(future: asyncio.Future[Any]) -> None:
    """The idle PING's reply or error is not needed (a silent server is found by `_check`)."""
    if not future.cancelled():
        future.exception()


def _close_made(future: asyncio.Future[_Protocol]) -> None:
    """A connection attempt that ends after `aclose`: close the connection it made."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()


class LeanRedis:
    """A pipelined client of one Redis server (see module docstring)."""

    def __init__(self, host: str, port: int, db: int = 0, username: str | None = None,
                 password: str | None = None, *, reply_timeout_s: float = REPLY_TIMEOUT_S,
                 idle_ping_s: float = IDLE_PING_S, check_s: float = CHECK_EVERY_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.reply_timeout_s, self.idle_ping_s, self.check_s = reply_timeout_s, idle_ping_s, check_s
        self.connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    @classmethod
    def from_url(cls, url: str, **timeouts: float) -> LeanRedis | None:
        """A client for a plain `redis://` URL (`timeouts`: the constructor's keyword arguments);
        None for anything it does not serve."""
        if not url.startswith("redis://") or is_cluster_url(url):
            return None
        options = parse_url(url)
        if not set(options) <= _SUPPORTED_OPTIONS:
            return None
        return cls(str(options.get("host", "localhost")), int(options.get("port", 6379)),
                   int(options.get("db", 0)), options.get("username"), options.get("password"), **timeouts)

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None or self._connecting.done():  # one attempt at a time, shared
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(_drop_outcome)
        return await asyncio.shield(self._connecting)

    def _new_protocol(self) -> _Protocol:
        return _Protocol(self.reply_timeout_s, self.idle_ping_s, self.check_s)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await loop.create_connection(self._new_protocol, self.host, self.port)
                if self.password is not None:
                    auth = [self.username, self.password] if self.username else [self.password]
                    await protocol.send(["AUTH", *auth])
                if self.db:
                    await protocol.send(["SELECT", str(self.db)])
        except (OSError, TimeoutError) as err:
            if protocol is not None:
                protocol.close()
            reason = f"no answer in {self.connect_timeout_s:g} s" if isinstance(err, TimeoutError) else err
            raise rx.ConnectionError(f"Error connecting to {self.host}:{self.port}: {reason}") from err
        except BaseException:
            if protocol is not None:
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
        if self._connecting is not None and not self._connecting.done():  # close what it makes
            self._connecting.add_done_callback(_close_made)
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
