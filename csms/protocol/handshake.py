"""Station login at the WebSocket handshake: a bounded FIFO admission queue, batched credential
reads on a private Redis client, password checks, and backoff on failures.

Public names: `HandshakeGate`, `Admitted`, `Refused`, `BATCH_SIZE`, `ADMIT_IN_FLIGHT`.

Why: after a csms restart every charger reconnects at once. Handshakes enter one queue (at
most `handshake_queue_size`, and at most `handshake_max_wait_s` of expected wait at the
node's current admission rate; beyond either a station gets HTTP 503 with Retry-After at
once, never a timeout: a charger that would give up waiting retries later instead, and the
node keeps its work for the stations it can serve now). One worker serves the queue in
arrival order, `BATCH_SIZE` at a time: one Redis pipeline reads the credentials and station
records of the whole batch. At most `ADMIT_IN_FLIGHT` admitted stations may be still
settling in (until the node has set up and recorded the connection, at most `SETTLE_S`):
the gate paces admissions to what the node completes, so the first stations of a storm are
online in milliseconds and the later ones wait in the queue at no cost, instead of all of
them slowing down together (and opening a Redis connection each) until their chargers time
out and retry. A handshake whose client has left while it waited is dropped unchecked. The
worker uses its own Redis client with `STORE_CONNECTIONS` connections, so its reads never
wait for the shared pool that thousands of station handlers use. If Redis does not answer
within `STORE_TIMEOUT_S`, the batch is answered 503 (Retry-After), and the worker goes on.

Passwords are checked with the stored scheme (`csms.core.security`): microseconds for the
fast keyed hash. A stored PBKDF2 hash is checked in a thread and, when the password is long
enough, replaced by the fast scheme after the login (migration on login). Failures go through
`csms.core.login_guard.LoginGuard`: unknown station and wrong password get the same answer
("invalid credentials") after the same delay; a failure's delay is spent outside the queue,
so 300 wrong-password handshakes do not hold up a real station.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from redis.asyncio import Redis
from redis.exceptions import RedisError

from csms.core.login_guard import GuardPolicy, LoginGuard
from csms.core.security import (
    UNKNOWN_STATION_HASH,
    PasswordHash,
    hash_password,
    is_expensive,
    needs_rehash,
    verify_password,
)
from csms.protocol.versions import PIN_FIELD
from csms.settings import CsmsSettings
from csms.store.provisioning import ProvisioningError, provision_station, rehash_credentials
from evfleet.keys import Keys
from evfleet.store.client import as_str, as_str_dict, dedicated_client
from evfleet.tasks import raise_if_cancelling, stop_tasks

log = logging.getLogger(__name__)

BATCH_SIZE = 512
ADMIT_IN_FLIGHT = 1024
SETTLE_S = 5.0
STORE_CONNECTIONS = 4
STORE_TIMEOUT_S = 5.0
RETRY_AFTER_S = 5
MAX_RETRY_AFTER_S = 60
RATE_WINDOW_S = 5.0
MIN_RATE_PER_S = 200.0
INVALID_CREDENTIALS = "invalid credentials"


@dataclass(frozen=True)
class Admitted:
    """The station may connect: its security profile, site and whether it ever booted.

    Call `settled()` once its connection is set up and recorded (or it closed); the gate
    also frees its slot after SETTLE_S."""

    station_id: str
    profile: int
    site_id: str
    booted: bool
    pinned: str = ""
    """The OCPP version the station is held to (`csms.protocol.versions.PIN_FIELD`), "" = any."""
    settled: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)


@dataclass(frozen=True)
class Refused:
    """Answer the handshake with `status` and `text`; `reason` labels the metric and the log."""

    status: HTTPStatus
    reason: str
    text: str
    retry_after_s: int | None = None


@dataclass
class _Pending:
    station_id: str
    password: str
    ip: str
    future: asyncio.Future[Admitted | Refused | _Failed]
    gone: Callable[[], bool]


@dataclass(frozen=True)
class _Failed:
    reason: str  # unknown_station | bad_password


class HandshakeGate:
    """Admits station handshakes (see module docstring). `start()` before use, `close()` after."""

    def __init__(self, redis: Redis, keys: Keys, settings: CsmsSettings, tls: bool) -> None:
        self.keys = keys
        self.settings = settings
        self.tls = tls
        self._redis = dedicated_client(redis, STORE_CONNECTIONS, client_name="evfleet-handshake")
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(settings.handshake_queue_size)
        self.guard = LoginGuard(GuardPolicy(
            failure_delay_s=settings.login_failure_delay_s, free_failures=settings.login_free_failures,
            max_delay_s=settings.login_backoff_max_s, max_pending_per_ip=settings.login_max_pending_per_ip))
        self._worker: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._settled_at: collections.deque[float] = collections.deque()
        self._slot_freed = asyncio.Event()
        self._side_tasks: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        """Handshakes waiting for their credential check."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Start the worker."""
        self._worker = asyncio.create_task(self._run(), name="handshake-gate")

    async def close(self) -> None:
        """Stop the worker, refuse what is queued, close the private Redis client."""
        if self._worker is not None:  # bounded: a Redis command can lose a cancellation (evfleet.tasks)
            await stop_tasks([self._worker], what="handshake gate")
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_result(Refused(HTTPStatus.SERVICE_UNAVAILABLE, "shutdown",
                                               "csms node is shutting down", RETRY_AFTER_S))
        for task in list(self._side_tasks):
            task.cancel()
        await self._redis.aclose()

    @property
    def in_flight(self) -> int:
        """Admitted stations still settling in."""
        return self._in_flight

    def expected_wait_s(self, now: float) -> float:
        """How long a handshake queued now would wait: queue length / admissions per second of the
        last RATE_WINDOW_S (at least MIN_RATE_PER_S, so a cold node does not refuse early)."""
        while self._settled_at and now - self._settled_at[0] > RATE_WINDOW_S:
            self._settled_at.popleft()
        rate = max(MIN_RATE_PER_S, len(self._settled_at) / RATE_WINDOW_S)
        return (self._queue.qsize() + self._in_flight) / rate

    async def check(self, station_id: str, password: str, ip: str,
                    gone: Callable[[], bool] = lambda: False) -> Admitted | Refused:
        """Queue one login and wait for its verdict (a failure's answer is delayed, see guard).

        `gone()` tells whether the client has left (its handshake is then dropped unchecked)."""
        arrived = time.monotonic()
        if not self.guard.admit_attempt(station_id, ip, arrived):
            return Refused(HTTPStatus.TOO_MANY_REQUESTS, "ip_backoff",
                           "too many failed logins from this address", int(self.settings.login_backoff_max_s))
        wait_s = self.expected_wait_s(arrived)
        if wait_s > self.settings.handshake_max_wait_s:
            return Refused(HTTPStatus.SERVICE_UNAVAILABLE, "queue_full",
                           f"csms node is busy admitting stations (about {wait_s:.0f} s queued), retry",
                           min(MAX_RETRY_AFTER_S, max(RETRY_AFTER_S, round(wait_s))))
        future: asyncio.Future[Admitted | Refused | _Failed] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(station_id, password, ip, future, gone))
        except asyncio.QueueFull:
            return Refused(HTTPStatus.SERVICE_UNAVAILABLE, "queue_full",
                           "csms node is busy admitting stations, retry", RETRY_AFTER_S)
        verdict = await future
        if not isinstance(verdict, _Failed):
            return verdict
        log.warning("login of %s from %s failed (%s)", station_id, ip, verdict.reason)
        delay = self.guard.failure(station_id, ip, arrived, time.monotonic())
        self.guard.pending_started(ip)
        try:
            await asyncio.sleep(delay)
        finally:
            self.guard.pending_ended(ip)
        return Refused(HTTPStatus.UNAUTHORIZED, verdict.reason, INVALID_CREDENTIALS)

    # --- worker -----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            while self._in_flight >= ADMIT_IN_FLIGHT:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            batch = [first]
            while len(batch) < min(BATCH_SIZE, ADMIT_IN_FLIGHT - self._in_flight) and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [item for item in batch if self._still_waiting(item)]
            if not batch:
                continue
            try:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    rows = await self._fetch([item.station_id for item in batch])
                raise_if_cancelling()  # redis-py sends with wait_for: evfleet.tasks
            except (RedisError, TimeoutError) as err:
                log.error("credential store unavailable for %d handshakes: %r", len(batch), err)
                for item in batch:
                    _resolve(item, Refused(HTTPStatus.SERVICE_UNAVAILABLE, "store_unavailable",
                                           "state store unavailable; try again later", RETRY_AFTER_S))
                continue
            for item, (cred_fields, station_fields) in zip(batch, rows, strict=True):
                self._judge(item, cred_fields, station_fields)

    @staticmethod
    def _still_waiting(item: _Pending) -> bool:
        if item.future.done():
            return False
        if item.gone():
            _resolve(item, Refused(HTTPStatus.REQUEST_TIMEOUT, "client_gone",
                                   "client left during the handshake"))
            return False
        return True

    def _take_slot(self) -> Callable[[], None]:
        """Count one admitted station in flight; the returned callable frees it (once)."""
        self._in_flight += 1
        freed = False

        def free() -> None:
            nonlocal freed
            if not freed:
                freed = True
                timer.cancel()
                self._in_flight -= 1
                self._settled_at.append(time.monotonic())
                self._slot_freed.set()

        timer = asyncio.get_running_loop().call_later(SETTLE_S, free)
        return free

    async def _fetch(self, station_ids: list[str]) -> list[tuple[dict[str, str], list[str]]]:
        pipe = self._redis.pipeline(transaction=False)
        for sid in station_ids:
            pipe.hgetall(self.keys.station_credentials(sid))
            pipe.hmget(self.keys.station(sid), ["site_id", "last_boot", PIN_FIELD])
        replies = await pipe.execute()
        return [(as_str_dict(replies[i]), [as_str(v) for v in replies[i + 1]])
                for i in range(0, len(replies), 2)]

    def _judge(self, item: _Pending, cred_fields: dict[str, str], station: list[str]) -> None:
        """Verify one login (the fast scheme inline, PBKDF2 in a thread) and resolve its future."""
        stored = _parse(cred_fields)
        if stored is None and self.settings.auto_register:
            self._spawn(self._auto_register(item))
            return
        known = stored is not None
        cred, profile = stored if stored is not None else (UNKNOWN_STATION_HASH, 1)
        if is_expensive(cred):
            self._spawn(self._judge_slow(item, cred, profile, station, known))
            return
        ok = verify_password(item.password, cred) and known
        _resolve(item, self._verdict(item, ok, known, cred, profile, station))

    async def _judge_slow(self, item: _Pending, cred: PasswordHash, profile: int, station: list[str],
                          known: bool) -> None:
        ok = await asyncio.to_thread(verify_password, item.password, cred) and known
        _resolve(item, self._verdict(item, ok, known, cred, profile, station))

    def _verdict(self, item: _Pending, ok: bool, known: bool, cred: PasswordHash, profile: int,
                 station: list[str]) -> Admitted | Refused | _Failed:
        if not ok:
            return _Failed("bad_password" if known else "unknown_station")
        if profile >= 3:  # certificate only (csms.protocol.certauth): a password cannot downgrade it
            return Refused(HTTPStatus.UNAUTHORIZED, "profile",
                           "security profile 3 requires a client certificate (CN = station id)")
        if profile >= 2 and not self.tls:
            return Refused(HTTPStatus.UNAUTHORIZED, "profile", "security profile 2 requires TLS")
        self.guard.success(item.station_id, item.ip)
        if needs_rehash(item.password, cred):
            self._spawn(self._migrate(item.station_id, item.password, cred))
        site_id, last_boot, pinned = station
        return Admitted(item.station_id, profile, site_id or self.settings.default_site, bool(last_boot),
                        pinned, self._take_slot())

    async def _migrate(self, station_id: str, password: str, old: PasswordHash) -> None:
        try:
            new = hash_password(password)
            replaced = await rehash_credentials(self._redis, self.keys, station_id, old, new)
        except RedisError as err:
            log.warning("could not migrate the password hash of %s: %r", station_id, err)
            return
        if replaced:
            log.info("password hash of %s migrated to the fast scheme", station_id)

    async def _auto_register(self, item: _Pending) -> None:
        try:
            await provision_station(self._redis, self.keys, item.station_id, item.password,
                                    default_site_limit_kw=self.settings.default_site_limit_kw)
        except ProvisioningError as err:
            _resolve(item, Refused(HTTPStatus.UNAUTHORIZED, "auto_register", str(err)))
            return
        except RedisError as err:
            _resolve(item, Refused(HTTPStatus.SERVICE_UNAVAILABLE, "store_unavailable", f"state store: {err}",
                                   RETRY_AFTER_S))
            return
        log.warning("auto-registered unknown station %s (development switch auto_register)", item.station_id)
        site = as_str(await self._redis.hget(self.keys.station(item.station_id), "site_id"))
        _resolve(item, Admitted(item.station_id, 1, site or self.settings.default_site, False, "",
                                self._take_slot()))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)


def _parse(fields: dict[str, str]) -> tuple[PasswordHash, int] | None:
    if not fields:
        return None
    try:
        return PasswordHash.from_fields(fields), int(fields.get("security_profile", "1"))
    except (KeyError, ValueError):
        log.error("damaged credential record (fields %s); refusing the station", sorted(fields))
        return None


def _resolve(item: _Pending, verdict: Admitted | Refused | _Failed) -> None:
    if not item.future.done():
        item.future.set_result(verdict)
