"""Calls to stations from any process, through Redis (caller side of the command protocol).

Public names: `CommandClient`, `CommandRequest`, `CommandReply`, `Outcome`, `CommandError`,
`StationOfflineError`, `CommandTimeoutError`, `StationCallError`, `InvalidCommandError`,
`dedicated_client`, `REPLY_MAX_CONNECTIONS`.

Usage::

    client = CommandClient(redis, Keys("evfleet"))
    reply = await client.call("CP-1", "SetChargingProfile", {"evseId": 1, "chargingProfile": {...}})
    if reply.ok: print(reply.payload["status"])          # the station's answer
    else: print(reply.outcome, reply.error)              # offline / timeout / call_error / invalid
    payload = (await client.call(...)).raise_for_outcome()  # or raise a typed CommandError

Waiting for replies: `call` LPUSHes the request on the shared client (`redis`) but BRPOPs
the reply on a separate client (`reply_redis`), so that thousands of calls in flight (each
holding one connection for up to its timeout) never take connections from the OCPP
handlers' pool. A node passes its own reply client (csms/app.py, closed on shutdown);
without one the client opens a dedicated pool on the same server at the first call
(`REPLY_MAX_CONNECTIONS`, waiting calls queue for a connection) and `aclose()` closes it.
A call cancelled while it waits (a site's calls when its lease is lost, a shutdown) does not
cancel its BRPOP, which would make redis-py drop that connection (and the next call open
another): it pushes a wake-up onto its own reply key, the BRPOP returns at once and its
connection goes back to the pool (`_await_reply`).

Errors (all `CommandError`): `StationOfflineError` (station not connected or its node is
gone), `CommandTimeoutError` (no answer in time), `StationCallError` (station answered with
a CALLERROR; `.code`), `InvalidCommandError` (unknown action / payload breaks the schema).
See docs/redis-schema.md for the wire format.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from csms.command_types import (  # noqa: F401 (re-exported: the protocol's value types)
    CommandError,
    CommandReply,
    CommandRequest,
    CommandTimeoutError,
    InvalidCommandError,
    Outcome,
    StationCallError,
    StationOfflineError,
)
from evfleet.clock import Clock
from evfleet.keys import Keys
from evfleet.logs import LineBudget
from evfleet.store.client import as_str
from evfleet.store.client import dedicated_client as store_dedicated_client

log = logging.getLogger(__name__)

REPLY_TTL_S = 60
WAKE_UP = "caller-gone"
"""Pushed onto a cancelled call's own reply key to end its BRPOP (never read as a reply)."""
CALLER_GRACE_S = 5.0
TIMEOUT_LINES = LineBudget()
"""Budget of the per-call WARNINGs of calls that got no reply in time (`LineBudget`)."""
REPLY_MAX_CONNECTIONS = 1024
"""Connections a reply client opens at most (one per call waiting for its reply); more calls
in flight queue for a free connection, within their own timeout."""


class CommandClient:
    """Sends CALLs to stations through whichever csms node holds their connection."""

    def __init__(self, redis: Redis, keys: Keys, clock: Clock | None = None,
                 default_timeout_s: float = 30.0, reply_redis: Redis | None = None,
                 reply_max_connections: int = REPLY_MAX_CONNECTIONS) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.default_timeout_s = default_timeout_s
        self._reply_redis = reply_redis
        self._owns_reply_redis = False
        self.reply_max_connections = reply_max_connections
        self._abandoned: set[asyncio.Future[Any]] = set()
        """BRPOPs of cancelled calls and their wake-ups, still out (`_await_reply`)."""

    @property
    def reply_redis(self) -> Redis:
        """The client replies are awaited on (BRPOP); never the shared client's pool."""
        if self._reply_redis is None:
            self._reply_redis = dedicated_client(self.redis, self.reply_max_connections)
            self._owns_reply_redis = True
        return self._reply_redis

    async def aclose(self) -> None:
        """Close the reply client if this CommandClient opened it (a given one stays open)."""
        if self._abandoned:  # BRPOPs of cancelled calls: woken, they end within a round trip
            await asyncio.wait(set(self._abandoned), timeout=1.0)
        if self._owns_reply_redis and self._reply_redis is not None:
            await self._reply_redis.aclose()
            self._reply_redis = None
            self._owns_reply_redis = False

    def _now(self) -> str:
        return (self.clock.now() if self.clock else datetime.now(UTC)).isoformat()

    def _local(self, request_id: str, station_id: str, action: str, outcome: Outcome,
               description: str) -> CommandReply:
        return CommandReply(request_id=request_id, station_id=station_id, action=action, outcome=outcome,
                            error={"code": outcome.value, "description": description, "details": {}},
                            answered_at=self._now())

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> CommandReply:
        """Ask for one CALL (camelCase payload) and wait for the reply (never raises for outcomes)."""
        timeout_s = timeout_s or self.default_timeout_s
        request_id = str(uuid.uuid4())
        asked = time.monotonic()
        raw_online, raw_node = await self.redis.hmget(self.keys.station(station_id), ["online", "node"])
        online, node = as_str(raw_online), as_str(raw_node)
        if online != "1" or not node:
            return self._local(request_id, station_id, action, Outcome.OFFLINE, "station is not connected")
        if not await self.redis.exists(self.keys.node(node)):
            return self._local(request_id, station_id, action, Outcome.OFFLINE,
                               f"csms node {node} holding the station is not alive")
        reply_to = self.keys.command_reply(request_id)
        request = CommandRequest(request_id=request_id, station_id=station_id, action=action,
                                 payload=payload, timeout_s=timeout_s, reply_to=reply_to,
                                 sent_at=self._now())
        reply_redis = self.reply_redis
        await self.redis.lpush(self.keys.node_commands(node), request.model_dump_json())
        # the node may first finish earlier calls queued for this station; the reply pool may make
        # this call wait for a connection first, so the whole wait is bounded, not only the BRPOP
        wait_s = timeout_s + CALLER_GRACE_S
        try:
            async with asyncio.timeout(wait_s + 1.0):
                got = await self._await_reply(reply_redis, reply_to, wait_s)
        except (TimeoutError, RedisTimeoutError):
            got = None
        if got is None:
            skipped = TIMEOUT_LINES.take(time.monotonic())
            if skipped is not None:
                log.warning("%s (request %s) to station %s through node %s: no reply within %.1f s (that "
                            "node's own WARNING says whether the station did not answer)%s", action,
                            request_id, station_id, node, time.monotonic() - asked,
                            f" ({skipped} more such lines passed over before this one)" if skipped else "")
            return self._local(request_id, station_id, action, Outcome.TIMEOUT,
                               f"no reply from node {node} within {wait_s:g} s")
        return CommandReply.model_validate(json.loads(got[1]))

    async def _await_reply(self, reply_redis: Redis, reply_to: str, wait_s: float) -> Any:
        """BRPOP the call's reply. When the caller is cancelled (or the bound around this runs out)
        the BRPOP is left running, not cancelled: a wake-up pushed onto the reply key (by the shared
        client) ends it within a round trip, and its connection goes back to the pool whole."""
        read = asyncio.ensure_future(reply_redis.brpop([reply_to], timeout=wait_s))
        try:
            return await asyncio.shield(read)
        except asyncio.CancelledError:
            if not read.done():
                self._keep(read)
                self._keep(asyncio.ensure_future(self._wake(reply_to)))
            raise

    async def _wake(self, reply_to: str) -> None:
        """End a cancelled call's BRPOP (its reply key expires as a reply's would)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(reply_to, WAKE_UP)
                pipe.expire(reply_to, REPLY_TTL_S)
                await pipe.execute()
        except RedisError as err:  # Redis gone: the BRPOP ends with its connection, or at its timeout
            log.debug("wake-up of a cancelled call's BRPOP not sent: %s", err)

    def _keep(self, future: asyncio.Future[Any]) -> None:
        self._abandoned.add(future)
        future.add_done_callback(_forget_outcome)
        future.add_done_callback(self._abandoned.discard)

    async def call_checked(self, station_id: str, action: str, payload: dict[str, Any],
                           timeout_s: float | None = None) -> dict[str, Any]:
        """Like `call`, but return the station's payload or raise a typed CommandError."""
        return (await self.call(station_id, action, payload, timeout_s)).raise_for_outcome()


def _forget_outcome(future: asyncio.Future[Any]) -> None:
    """A cancelled call's BRPOP or wake-up: its result or error is nobody's (retrieved, not logged)."""
    if not future.cancelled():
        future.exception()


def dedicated_client(redis: Redis, max_connections: int = REPLY_MAX_CONNECTIONS) -> Redis:
    """A new client on the same server and options as `redis`, with its own blocking pool
    (`max_connections`, waiting for a free connection without a pool timeout)."""
    # no socket read timeout: a BRPOP blocks for as long as the call may take (redis-py's default
    # socket_timeout of 5 s would cut every call a station answers slower); callers bound the wait
    return store_dedicated_client(redis, max_connections, socket_timeout=None)
