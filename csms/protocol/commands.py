"""Node side of the command protocol: executes calls to the stations this node holds.

Public names: `CommandExecutor`, `DISCONNECT_ACTION`, `request_disconnect`.

`run()` BRPOPs `node:{node}:commands` (then RPOPs up to `INTAKE_BATCH` more); each request is
validated (known CSMS->station
action, payload valid against the OCPP 2.0.1 schema), appended to its station's FIFO and
sent by that station's worker task, one CALL at a time. Every request gets exactly one
reply LPUSHed to `reply_to` (TTL 60 s) and a `command.result` event; a timeout is
reported and the queue moves on; nothing is retried.

One internal action is not an OCPP CALL: `_Disconnect` (`DISCONNECT_ACTION`, payload
`{"reason": str}`) closes the station's connection on this node (1008, the reason) and
replies `result` `{"status": "Disconnected"}` (`offline` if the station is not connected
here). `evfleet stations remove` sends it through `request_disconnect`.

The node itself sends calls through the same queues with `call_local` (request with an
empty `reply_to`: the reply is handed back in process, still recorded as `command.result`).
`fetch_device_model` (wired to every Accepted BootNotification when the setting
`fetch_device_model_on_boot` is on) sends GetBaseReport FullInventory from a task; the
station's NotifyReport then stores EVSE `max_power_w` / `phases`. A refusal, CALLERROR or
timeout is logged and counted (`evfleet_device_model_fetches_total`), never more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from csms import metrics
from csms.commands import REPLY_TTL_S, CommandReply, CommandRequest, Outcome, dedicated_client
from csms.protocol.env import NodeEnv
from csms.protocol.framing import CSMS_ACTIONS, schema_violation
from csms.protocol.registry import Registry
from csms.protocol.station import StationClosed
from csms.protocol.v16.commands import command_error_16
from csms.protocol.v16.configuration import fetch_configuration
from csms.protocol.v16.station import StationHandler16
from evfleet.events import EventType, event_fields
from evfleet.keys import Keys
from evfleet.logs import LineBudget, log_context
from evfleet.store.client import as_str, store_unavailable
from evfleet.store.multi import SlotMulti

log = logging.getLogger(__name__)

DISCONNECT_ACTION = "_Disconnect"
INTAKE_BATCH = 100
"""Requests taken from the node's command list at once after a BRPOP (RPOP with a count). One
BRPOP per request took one round trip and one turn of the node's event loop each: a node that
was busy took a few a second, and a burst from the node acting for the sites (a reconcile of
50 stations, half of them held here) waited in the list past its callers' 35 s (issue 14: 257
such timeouts in one production-topology run with lease balancing)."""
TIMEOUT_LINES = LineBudget()
"""Budget of the per-call WARNINGs of calls a station left unanswered (`LineBudget`)."""
CLOSE_REMOVED = 1008  # policy violation: the station is no longer provisioned


async def request_disconnect(redis: Redis, keys: Keys, station_id: str, node_id: str, reason: str,
                             timeout_s: float = 10.0) -> CommandReply | None:
    """Ask node `node_id` to close `station_id`'s connection; its reply, None if none in time."""
    request_id = str(uuid.uuid4())
    req = CommandRequest(request_id=request_id, station_id=station_id, action=DISCONNECT_ACTION,
                         payload={"reason": reason}, timeout_s=timeout_s,
                         reply_to=keys.command_reply(request_id))
    await redis.lpush(keys.node_commands(node_id), req.model_dump_json())
    reply_redis = dedicated_client(redis, max_connections=1)  # no 5 s socket timeout on the BRPOP
    try:
        got = await reply_redis.brpop([req.reply_to], timeout=timeout_s)
    finally:
        await reply_redis.aclose()
    return None if got is None else CommandReply.model_validate(json.loads(as_str(got[1])))


class CommandExecutor:
    """Per-station FIFO queues and worker tasks of one node."""

    def __init__(self, env: NodeEnv, registry: Registry, redis: Redis) -> None:
        self.env = env
        self.registry = registry
        self.redis = redis
        self._queues: dict[str, asyncio.Queue[CommandRequest]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._closers: set[asyncio.Task[None]] = set()
        self._local: dict[str, asyncio.Future[CommandReply]] = {}
        self._queued_at: dict[str, float] = {}
        """request id -> monotonic time it joined its station's queue (until it is sent)."""
        self._refused_report: set[str] = set()  # stations whose GetBaseReport refusal was logged
        self.stopping = False  # set by the node at shutdown (the loop also ends on cancellation)

    async def run(self) -> None:
        """Consume the node's command list until cancelled."""
        key = self.env.keys.node_commands(self.env.node_id)
        try:
            while not self.stopping:
                try:
                    got = await self.redis.brpop([key], timeout=1)
                    if got is not None:
                        await self.submit_raw(as_str(got[1]))
                        # the rest of a burst in one more round trip, not one BRPOP (and one turn of
                        # a busy node's event loop) per request (`INTAKE_BATCH`)
                        more: list[str] = await self.redis.rpop(key, INTAKE_BATCH) or []  # type: ignore[assignment]
                        for raw in more:
                            await self.submit_raw(as_str(raw))
                except RedisError as err:  # Redis restarting: wait and go on, never stop consuming
                    log.warning("command list unreadable (%s); retrying in 1 s", err)
                    await asyncio.sleep(1.0)
        finally:
            workers = [t for t in [*self._workers.values(), *self._closers] if not t.done()]
            self.stopping = True
            for task in workers:
                task.cancel()
            if workers:
                await asyncio.wait(workers, timeout=5)
            await self._drain_all()

    async def submit_raw(self, raw: str) -> None:
        """Validate one request and queue it (or reply at once if it cannot be sent)."""
        try:
            req = CommandRequest.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as err:
            log.error("unreadable command request dropped (no reply_to): %s", str(err)[:200])
            return
        await self.submit(req)

    async def submit(self, req: CommandRequest) -> None:
        """Queue one parsed request (or reply at once if it cannot be sent)."""
        if req.action == DISCONNECT_ACTION:
            task = asyncio.create_task(self._disconnect(req), name=f"disconnect-{req.station_id}")
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)
            return
        if isinstance(self.registry.get(req.station_id), StationHandler16):
            error = command_error_16(req.action, req.payload)  # 1.6 request, or a 2.0.1 one it translates
            if error is not None:
                await self.reply(req, Outcome.INVALID, error=error)
                return
        elif req.action not in CSMS_ACTIONS:
            await self.reply(req, Outcome.INVALID, error={
                "code": "NotImplemented", "description": f"{req.action!r} is not a CSMS-to-station action"})
            return
        elif (violation := schema_violation(req.action, req.payload)) is not None:
            await self.reply(req, Outcome.INVALID, error={
                "code": violation.code.value, "description": violation.description})
            return
        if self.registry.get(req.station_id) is None:
            await self.reply(req, Outcome.OFFLINE, error={
                "code": "offline", "description": f"station not connected to node {self.env.node_id}"})
            return
        queue = self._queues.setdefault(req.station_id, asyncio.Queue())
        self._queued_at[req.request_id] = time.monotonic()
        queue.put_nowait(req)
        worker = self._workers.get(req.station_id)
        if worker is None or worker.done():
            self._workers[req.station_id] = asyncio.create_task(
                self._worker(req.station_id, queue), name=f"commands-{req.station_id}")

    async def call_local(self, station_id: str, action: str, payload: dict[str, Any],
                         timeout_s: float | None = None) -> CommandReply:
        """Send a CALL to a station of this node through its queue and return the reply
        (never raises for outcomes; the reply is not pushed to Redis)."""
        timeout_s = timeout_s or self.env.settings.call_timeout_s
        req = CommandRequest(request_id=str(uuid.uuid4()), station_id=station_id, action=action,
                             payload=payload, timeout_s=timeout_s, reply_to="",
                             sent_at=self.env.clock.now().isoformat())
        fut: asyncio.Future[CommandReply] = asyncio.get_running_loop().create_future()
        self._local[req.request_id] = fut
        try:
            await self.submit(req)
            return await fut
        finally:
            self._local.pop(req.request_id, None)

    def fetch_device_model(self, station_id: str) -> None:
        """Start a task asking the station for its device model (GetBaseReport FullInventory; an
        OCPP 1.6 station: GetConfiguration, `csms.protocol.v16.configuration`)."""
        if self.stopping:
            return
        task = asyncio.create_task(self._fetch_device_model(station_id), name=f"device-model-{station_id}")
        self._closers.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._closers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def _fetch_device_model(self, station_id: str) -> None:
        if isinstance(self.registry.get(station_id), StationHandler16):
            with log_context(station_id=station_id):
                ok = await fetch_configuration(self.call_local, self.env.store, station_id)
            metrics.DEVICE_MODEL_FETCHES.labels("Accepted" if ok else "failed").inc()
            return
        request_id = uuid.uuid4().int % 2**31
        with log_context(station_id=station_id):
            reply = await self.call_local(station_id, "GetBaseReport",
                                          {"requestId": request_id, "reportBase": "FullInventory"})
            status = str((reply.payload or {}).get("status", "")) if reply.ok else ""
            outcome = status if reply.ok else reply.outcome.value
            metrics.DEVICE_MODEL_FETCHES.labels(outcome or "unknown").inc()
            if status == "Accepted":
                log.info("device model of %s requested (GetBaseReport %d)", station_id, request_id)
            elif not reply.ok:
                log.warning("GetBaseReport FullInventory to %s failed (%s: %s): EVSE max power stays "
                            "unknown until it sends a NotifyReport", station_id, reply.outcome.value,
                            (reply.error or {}).get("description", ""))
            elif station_id not in self._refused_report:
                # a charger without device-model reports refuses on every boot (a warning each time
                # was 20,000 lines per boot wave): logged once per station and node, counted always
                self._refused_report.add(station_id)
                log.info("station %s refused GetBaseReport FullInventory (%s): EVSE max power stays "
                         "unknown until it sends a NotifyReport (not logged again for it on this node)",
                         station_id, status)

    async def _worker(self, station_id: str, queue: asyncio.Queue[CommandRequest]) -> None:
        """Send a station's calls in order; exits when its queue is empty."""
        with log_context(station_id=station_id):
            while not queue.empty():
                req = queue.get_nowait()
                try:
                    await self._execute(req)
                except asyncio.CancelledError:
                    await self.reply(req, Outcome.OFFLINE, error={
                        "code": "offline", "description": "csms node shutting down"})
                    raise
                except Exception as err:  # a bug must not stall the queue
                    await self._failed(req, err)

    async def _failed(self, req: CommandRequest, err: Exception) -> None:
        """A request whose execution raised: logged (a Redis that cannot take the reply now in one
        line, without the traceback that at 20,000 stations cost a node 6-20 % of its CPU) and
        answered InternalError if the reply can be stored (a local caller gets it either way)."""
        if not store_unavailable(err):
            log.exception("command %s %s failed", req.action, req.request_id)
        else:
            log.warning("command %s %s: state store unavailable (%s: %s)", req.action, req.request_id,
                        type(err).__name__, err)
        try:
            await self.reply(req, Outcome.CALL_ERROR, error={
                "code": "InternalError", "description": f"{type(err).__name__} in csms"})
        except Exception as again:
            if not store_unavailable(again):
                raise
            log.warning("command %s %s: reply not stored (%s)", req.action, req.request_id, again)

    async def _disconnect(self, req: CommandRequest) -> None:
        """Close a station's connection (internal `_Disconnect`), then reply."""
        handler = self.registry.get(req.station_id)
        if handler is None:
            await self.reply(req, Outcome.OFFLINE, error={
                "code": "offline", "description": f"station not connected to node {self.env.node_id}"})
            return
        reason = str(req.payload.get("reason") or "disconnected by the operator")
        reason = reason.encode()[:120].decode(errors="ignore")  # a close reason is at most 123 bytes
        log.warning("closing the connection of station %s: %s", req.station_id, reason)
        await handler._connection.close(CLOSE_REMOVED, reason)
        await self.reply(req, Outcome.RESULT, payload={"status": "Disconnected"})

    async def _execute(self, req: CommandRequest) -> None:
        queued_s = time.monotonic() - self._queued_at.pop(req.request_id, time.monotonic())
        handler = self.registry.get(req.station_id)
        if handler is None:
            await self.reply(req, Outcome.OFFLINE, error={
                "code": "offline", "description": "station disconnected before the call was sent"})
            return
        started = time.perf_counter()
        try:
            out = await handler.send_command(req.action, req.payload, req.timeout_s)
        except StationClosed:
            await self.reply(req, Outcome.OFFLINE, error={
                "code": "offline", "description": "connection closed before the station answered"})
            return
        elapsed_s = time.perf_counter() - started
        metrics.OUTBOUND_CALL_SECONDS.labels(req.action).observe(elapsed_s)
        if out.outcome == "timeout":
            self._log_timeout(req, out.message_id, queued_s, elapsed_s)
        error = None
        if out.outcome != "result":
            error = {"code": out.error_code or out.outcome, "description": out.error_description,
                     "details": out.error_details or {}}
        await self.reply(req, Outcome(out.outcome), payload=out.payload, error=error)

    def _log_timeout(self, req: CommandRequest, message_id: str, queued_s: float, elapsed_s: float) -> None:
        """One WARNING per CALL the station left unanswered: station, message id, node, delays."""
        via = "from another process through Redis" if req.reply_to else "from this node"
        transit = ""
        if req.sent_at and req.reply_to:
            with contextlib.suppress(ValueError):
                sent = datetime.fromisoformat(req.sent_at)
                redis_s = (self.env.clock.now() - sent).total_seconds() - queued_s - elapsed_s
                transit = f", {redis_s:.1f} s in Redis"
        skipped = TIMEOUT_LINES.take(time.monotonic())
        if skipped is None:
            return
        log.warning("%s %s (request %s, %s) to station %s on node %s: no answer within %.1f s "
                    "(%.1f s in the station's queue before it was sent%s)%s", req.action, message_id,
                    req.request_id, via, req.station_id, self.env.node_id, elapsed_s, queued_s, transit,
                    f" ({skipped} more such lines passed over before this one)" if skipped else "")

    async def reply(self, req: CommandRequest, outcome: Outcome, payload: dict[str, Any] | None = None,
                    error: dict[str, Any] | None = None) -> None:
        """Push the one reply and a `command.result` event."""
        metrics.OUTBOUND_CALLS.labels(req.action, outcome.value).inc()
        if error is not None:
            error.setdefault("details", {})
        reply = CommandReply(request_id=req.request_id, station_id=req.station_id, action=req.action,
                             outcome=outcome, payload=payload, error=error,
                             answered_at=self.env.clock.now().isoformat())
        handler = self.registry.get(req.station_id)
        site_id = handler.site_id if handler is not None else ""
        evse_id = req.payload.get("evseId")
        multi = SlotMulti(self.redis)  # one MULTI; on a cluster the reply and the event are two
        stream = self.env.keys.station_events(req.station_id)
        if req.reply_to:  # empty for the node's own calls (call_local)
            multi.on(req.reply_to).lpush(req.reply_to, reply.model_dump_json())
            multi.on(req.reply_to).expire(req.reply_to, REPLY_TTL_S)
        multi.on(stream).xadd(stream, event_fields(
            EventType.COMMAND_RESULT, self.env.clock.now(), req.station_id,
            evse_id if isinstance(evse_id, int) else None, "", site_id,
            {"request_id": req.request_id, "action": req.action, "outcome": outcome.value,
             "payload": payload, "error": error}), maxlen=100_000, approximate=True)
        try:
            await multi.execute()
        finally:
            local = self._local.get(req.request_id)
            if local is not None and not local.done():
                local.set_result(reply)
        log.info("command %s %s -> %s", req.action, req.request_id, outcome.value)

    async def _drain_all(self) -> None:
        for queue in self._queues.values():
            while not queue.empty():
                req = queue.get_nowait()
                with contextlib.suppress(Exception):
                    await self.reply(req, Outcome.OFFLINE, error={
                        "code": "offline", "description": "csms node shutting down"})
