"""`StationHandler`: one connected OCPP 2.0.1 charging station = the block mixins + ocpp.v201.ChargePoint.

Public names: `StationConnection`, `StationHandler`, `CallOutcome`, `StationClosed`.

`StationConnection` is the version-independent part (receive loop, routing, rate limit,
outbound CALLs); a version's handler adds its block mixins and says which schemas and
error-code names it uses (`ocpp_version`, `check_schema`, `wire_code`, `known_actions`);
the OCPP 1.6J handler is `csms.protocol.v16.station.StationHandler16`.

The `ocpp` library's own routing is replaced (`route_message`) because it ignores frames
that are not JSON, answers unknown actions with NotSupported and has no compatibility mode.
Here every bad frame gets the CALLERROR `csms.protocol.framing` names, a station in
compatibility mode (`station:{sid}` `compat`=1) has schema violations counted and its
message processed anyway, and a CALLRESULT/CALLERROR that answers nothing is logged and
counted. When Redis cannot store (down, restarting, loading, out of memory), the CALL being
handled is not answered: `start` raises `StoreUnavailable` and the server closes the connection
with 1013 (try again later), so the station keeps its TransactionEvents queued and sends them
again after reconnecting (a write that reached Redis before the failure is then a replay,
stored once). Handlers run one at a time on the receive loop; outbound CALLs (`call_raw`) are
sent only from the command executor's per-station task, never from inside a handler.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocpp.charge_point import ChargePoint as BaseChargePoint
from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.routing import routables
from ocpp.v201 import ChargePoint
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from csms import metrics
from csms.core.ratelimit import TokenBucket
from csms.errors import PayloadValueError
from csms.protocol.authorization import AuthorizationBlock
from csms.protocol.availability import AvailabilityBlock
from csms.protocol.base import BlockBase
from csms.protocol.diagnostics import DiagnosticsBlock
from csms.protocol.env import NodeEnv
from csms.protocol.framing import (
    STATION_ACTIONS,
    CallFrame,
    ErrorCode,
    ErrorFrame,
    FrameError,
    ResultFrame,
    call_error_json,
    call_json,
    call_result_json,
    parse_frame,
    schema_violation,
)
from csms.protocol.meter_values import MeterValuesBlock
from csms.protocol.provisioning import ProvisioningBlock
from csms.protocol.smart_charging import SmartChargingBlock
from csms.protocol.transactions import TransactionsBlock
from evfleet.logs import LineBudget, log_context
from evfleet.store.client import StoreUnavailable, store_unavailable

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)
def _snake(key: str) -> str:
    return str(camel_to_snake_case({key: None}).popitem()[0])


@functools.lru_cache(maxsize=1024)
def _camel(key: str) -> str:
    return str(snake_to_camel_case({key: None}).popitem()[0])


_FLAT = (str, int, float, bool)


def answer_payload(result: Any) -> Any:
    """`snake_to_camel_case(remove_nones(serialize_as_dict(result)))` (the ocpp library's way to
    turn a handler's call_result into the answer's payload), without its deep copies when the
    result holds only flat values (Heartbeat's currentTime, the empty MeterValues answer): its
    fields that are not None, camelCase keys."""
    fields = getattr(result, "__dataclass_fields__", None)
    if fields is not None:
        flat: dict[str, Any] = {}
        for name in fields:
            value = getattr(result, name)
            if value is None:
                continue
            if not isinstance(value, _FLAT):
                break
            flat[_camel(name)] = value
        else:
            return flat
    return snake_to_camel_case(remove_nones(serialize_as_dict(result)))


def top_level_snake_case(payload: dict[str, Any]) -> dict[str, Any]:
    """Handler kwargs: top-level keys in snake_case (like the ocpp library), nested values unchanged
    (handlers read nested structures from `self.payload`, camelCase as received)."""
    return {_snake(k): v for k, v in payload.items()}


@functools.cache
def _route_plan(cls: type) -> tuple[tuple[Any, str, str, bool], ...]:
    """(action, option, attribute name, skip schema validation) of each @on/@after handler of
    `cls`: what `ocpp.routing.create_route_map` finds, found once per class."""
    plan = []
    for name in dict.fromkeys(routables):
        attr = getattr(cls, name, None)
        for option in ("_on_action", "_after_action"):
            action = getattr(attr, option, None)
            if action is not None:
                skip = bool(getattr(attr, "_skip_schema_validation", False))
                plan.append((action, option, name, skip))
    return tuple(plan)


def route_map(obj: object) -> dict[Any, dict[str, Any]]:
    """`ocpp.routing.create_route_map(obj)`, from the per-class plan (bound methods of `obj`)."""
    routes: dict[Any, dict[str, Any]] = {}
    cls: Any = type(obj)
    for action, option, name, skip in _route_plan(cls):
        entry = routes.setdefault(action, {})
        if option == "_on_action":
            entry["_skip_schema_validation"] = skip
        entry[option] = getattr(obj, name)
    return routes


class StationClosed(Exception):
    """The station's connection closed while a CALL was outstanding."""


class FloodError(Exception):
    """The station kept sending faster than its rate limit allows."""


@dataclass(frozen=True)
class CallOutcome:
    """Result of one outbound CALL: `result` payload, `call_error`, `timeout`, or `invalid` (refused
    before sending, e.g. no equivalent in the station's OCPP version)."""

    outcome: str
    payload: dict[str, Any] | None = None
    error_code: str = ""
    error_description: str = ""
    error_details: dict[str, Any] | None = None
    message_id: str = ""
    """The CALL's OCPP message id (empty if it was not sent)."""


LATE_LINES = LineBudget()
"""Budget of the WARNINGs of late answers (`LineBudget`)."""
LATE_KEPT = 64
"""Timed-out CALLs a connection remembers, so that an answer arriving after its timeout is
logged as late (with its delay), not as answering nothing."""


class StationConnection(BlockBase, BaseChargePoint):
    """The csms side of one station connection, whatever its OCPP version."""

    ocpp_version = "2.0.1"
    known_actions: frozenset[str] = frozenset()
    """Every action of the version (an unknown one is NotImplemented, a known one not handled
    NotSupported)."""
    station_actions: frozenset[str] = frozenset()
    """Actions a station sends in this version (metrics label them by name)."""

    def check_schema(self, action: str, payload: dict[str, Any], request: bool = True) -> FrameError | None:
        """The schema violation of a payload in this version (None if valid)."""
        raise NotImplementedError

    def wire_code(self, code: ErrorCode) -> str:
        """How this version spells a CALLERROR code on the wire."""
        return code.value

    def __init__(self, station_id: str, connection: ServerConnection, env: NodeEnv, site_id: str,
                 security_profile: int = 1) -> None:
        # what the ocpp library's ChargePoint.__init__ sets, but the route map comes from a plan
        # made once per class: its create_route_map tries every @on-decorated name of every class
        # loaded on each new connection (about 0.5 ms, a quarter of a reconnect's CPU)
        self.id = station_id
        self._response_timeout = env.settings.call_timeout_s
        self._connection = connection
        self.route_map = route_map(self)
        self._response_queue: asyncio.Queue[Any] = asyncio.Queue()
        self._unique_id_generator = uuid.uuid4
        self.logger = log
        self.env = env
        self.site_id = site_id
        self.security_profile = security_profile
        self.conn_id = uuid.uuid4().hex
        # camelCase payload of the CALL being handled; handlers get its top-level keys as snake_case
        # kwargs and read nested structures from here
        self.payload: dict[str, Any] = {}
        self.booted = asyncio.Event()
        s = env.settings
        self._bucket = TokenBucket(s.rate_limit_per_s, s.rate_limit_burst, s.flood_disconnect_after,
                                   time.monotonic())
        self._pending: dict[str, asyncio.Future[ResultFrame | ErrorFrame]] = {}
        self._late: dict[str, tuple[str, float, float]] = {}
        """Timed-out CALLs: message id -> (action, monotonic time sent, timeout); `LATE_KEPT` at most."""
        self._after_answer: list[Callable[[], None]] = []
        self._call_lock = asyncio.Lock()

    # --- receive loop ---------------------------------------------------------------
    async def start(self) -> None:
        """Receive and route messages until the connection closes or the station floods."""
        with log_context(station_id=self.id):
            try:
                while True:
                    # recv(), not `async for`: websockets' async iterator leaves an asend object per
                    # message alive until the next one, walked by every young collection (issue 14)
                    try:
                        raw = await self._connection.recv()
                    except ConnectionClosedOK:
                        break
                    decision = self._bucket.take(time.monotonic())
                    if decision.wait_s > 0:
                        metrics.OCPP_THROTTLED.inc()
                        # a station that waits for each answer (e.g. flushing its offline queue) is
                        # only slowed down; one that keeps sending without waiting is flooding
                        if decision.disconnect and self._frames_waiting() > 0:
                            raise FloodError(f"{decision.throttled_in_row} messages over the rate limit, "
                                             f"{self._frames_waiting()} more queued")
                        await asyncio.sleep(decision.wait_s)
                    try:
                        await self.route_message(raw)
                    except Exception as err:
                        if store_unavailable(err):
                            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
                        raise
            finally:
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(StationClosed(self.id))

    def _frames_waiting(self) -> int:
        """Frames received from the station but not read yet (websockets' receive buffer)."""
        frames = getattr(getattr(self._connection, "recv_messages", None), "frames", None)
        return len(frames) if frames is not None else 1  # unknown: assume the worst

    async def route_message(self, raw: str | bytes) -> None:
        """Route one frame (replaces the ocpp library's routing; see module docstring)."""
        frame = parse_frame(raw)
        if isinstance(frame, FrameError):
            await self._refuse(frame, raw)
        elif isinstance(frame, CallFrame):
            with log_context(message_id=frame.unique_id):
                await self._handle_call_frame(frame)
        else:
            fut = self._pending.get(frame.unique_id)
            if fut is None and frame.unique_id in self._late:
                action, sent, timeout_s = self._late.pop(frame.unique_id)
                metrics.OCPP_PROTOCOL_ERRORS.labels("LateResponse").inc()
                now, skipped = time.monotonic(), LATE_LINES.take(time.monotonic())
                if skipped is not None:
                    log.warning("answer to %s %s from station %s on node %s came %.1f s after it was sent, "
                                "%.1f s after its %g s timeout; ignored%s", action, frame.unique_id, self.id,
                                self.env.node_id, now - sent, now - sent - timeout_s, timeout_s,
                                f" ({skipped} more passed over before this one)" if skipped else "")
                return
            if fut is None or fut.done():
                metrics.OCPP_PROTOCOL_ERRORS.labels("UnmatchedResponse").inc()
                log.warning("response %s answers no outstanding CALL; ignored", frame.unique_id)
                return
            fut.set_result(frame)

    async def _refuse(self, err: FrameError, raw: str | bytes | None) -> None:
        metrics.OCPP_PROTOCOL_ERRORS.labels(err.code.value).inc()
        if err.action:
            metrics.OCPP_MESSAGES.labels(err.action if err.action in self.station_actions else "unknown",
                                         err.code.value).inc()
        log.warning("refused frame (%s): %s", err.code.value, err.description)
        if err.reply:
            await self._send(call_error_json(err.unique_id, self.wire_code(err.code), err.description))
        excerpt = (raw if isinstance(raw, str) else repr(raw))[:200] if raw is not None else ""
        await self.env.store.protocol_error(self.id, self.site_id, {
            "code": self.wire_code(err.code), "description": err.description, "message_id": err.unique_id,
            "action": err.action, "frame": excerpt})

    def after_answer(self, callback: Callable[[], None]) -> None:
        """Run `callback` right after the answer to the CALL being handled was sent (a handler
        uses it to start follow-up work the station must only see after the answer)."""
        self._after_answer.append(callback)

    async def _handle_call_frame(self, frame: CallFrame) -> None:
        self._after_answer.clear()
        started = time.perf_counter()
        action = frame.action
        handlers = self.route_map.get(action)
        if handlers is None or "_on_action" not in handlers:
            code = ErrorCode.NOT_SUPPORTED if action in self.known_actions else ErrorCode.NOT_IMPLEMENTED
            await self._refuse(FrameError(frame.unique_id, code, f"action {action!r} is not handled",
                                          action=action if code is ErrorCode.NOT_SUPPORTED else ""), None)
            return
        violation = self.check_schema(action, frame.payload)
        if violation is not None:
            if not await self._compat_mode():
                await self._refuse(FrameError(frame.unique_id, violation.code, violation.description,
                                              action=action), None)
                return
            metrics.OCPP_SCHEMA_VIOLATIONS.labels(action).inc()
            await self.env.store.count_violation(self.id, action)
            log.warning("compat mode: accepting %s despite %s: %s", action, violation.code.value,
                        violation.description)
        self.payload = frame.payload
        try:
            result = handlers["_on_action"](**top_level_snake_case(frame.payload))
            if asyncio.iscoroutine(result):
                result = await result
            response = answer_payload(result)
        except TypeError as err:
            if violation is None:
                raise
            await self._refuse(FrameError(frame.unique_id, violation.code,
                                          f"{violation.description} ({err})", action=action), None)
            return
        except PayloadValueError as err:
            await self._refuse(FrameError(frame.unique_id, ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
                                          str(err), action=action), None)
            return
        except Exception as err:
            if store_unavailable(err):
                raise  # no answer: the station keeps the message queued (see module docstring)
            log.exception("handler for %s failed", action)
            metrics.OCPP_MESSAGES.labels(action, "InternalError").inc()
            await self._send(call_error_json(frame.unique_id, self.wire_code(ErrorCode.INTERNAL_ERROR),
                                             f"{type(err).__name__} while handling {action}"))
            return
        finally:
            self.payload = {}
        await self._send(call_result_json(frame.unique_id, response))
        metrics.OCPP_MESSAGES.labels(action, "accepted" if violation is None else "compat").inc()
        metrics.OCPP_HANDLER_SECONDS.labels(action).observe(time.perf_counter() - started)
        if self._after_answer:  # (most messages have none: no new list per message, issue 14)
            callbacks, self._after_answer = self._after_answer, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # a follow-up must never break the receive loop
                    log.exception("follow-up of %s failed", action)

    async def _compat_mode(self) -> bool:
        value = await self.env.store.redis.hget(self.env.keys.station(self.id), "compat")
        return value == "1"

    # --- outbound calls (only from the command executor's per-station task) ---------
    async def call_raw(self, action: str, payload: dict[str, Any], timeout_s: float) -> CallOutcome:
        """Send one CALL (camelCase payload) and wait for its answer; one at a time per station."""
        async with self._call_lock:
            unique_id = str(uuid.uuid4())
            fut: asyncio.Future[ResultFrame | ErrorFrame] = asyncio.get_running_loop().create_future()
            self._pending[unique_id] = fut
            sent = time.monotonic()
            try:
                await self._send(call_json(unique_id, action, payload))
                async with asyncio.timeout(timeout_s):  # not wait_for: it can lose a cancel (evfleet.tasks)
                    answer = await fut
            except TimeoutError:
                self._note_late(unique_id, action, sent, timeout_s)
                return CallOutcome("timeout", error_description=f"no answer within {timeout_s:g} s",
                                   message_id=unique_id)
            except ConnectionClosed as err:
                raise StationClosed(self.id) from err
            finally:
                self._pending.pop(unique_id, None)
                # a StationClosed that the receive loop set on `fut` carries a traceback through this
                # frame, which holds `fut`: a reference cycle only the collector would free
                del fut
        if isinstance(answer, ErrorFrame):
            return CallOutcome("call_error", error_code=answer.code, error_description=answer.description,
                               error_details=answer.details)
        violation = self.check_schema(action, answer.payload, request=False)
        if violation is not None and not await self._compat_mode():
            return CallOutcome("call_error", payload=answer.payload,
                               error_code=self.wire_code(violation.code),
                               error_description=f"station answer breaks the schema: {violation.description}")
        return CallOutcome("result", payload=answer.payload, message_id=unique_id)

    def _note_late(self, unique_id: str, action: str, sent: float, timeout_s: float) -> None:
        """Remember a timed-out CALL (`_late`), so that its answer, if it comes, is logged as late."""
        if len(self._late) >= LATE_KEPT:
            del self._late[next(iter(self._late))]
        self._late[unique_id] = (action, sent, timeout_s)

    async def send_command(self, action: str, payload: dict[str, Any], timeout_s: float) -> CallOutcome:
        """A command of the command protocol (validated by the executor): `call_raw` here; a
        version may translate it first (`StationHandler16`)."""
        return await self.call_raw(action, payload, timeout_s)

    async def _send(self, message: str) -> None:
        await self._connection.send(message)


class StationHandler(ProvisioningBlock, TransactionsBlock, AuthorizationBlock, AvailabilityBlock,
                     MeterValuesBlock, SmartChargingBlock, DiagnosticsBlock, StationConnection, ChargePoint):
    """The csms side of one OCPP 2.0.1 station connection."""

    ocpp_version = "2.0.1"
    known_actions = frozenset(a.value for a in Action) | STATION_ACTIONS
    station_actions = STATION_ACTIONS

    def check_schema(self, action: str, payload: dict[str, Any], request: bool = True) -> FrameError | None:
        """Violation of the OCPP 2.0.1 schema (csms.protocol.framing)."""
        return schema_violation(action, payload, request=request)
