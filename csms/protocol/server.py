"""The OCPP WebSocket endpoint `/ocpp/{station_id}` (subprotocol `ocpp2.0.1` or `ocpp1.6`).

Public names: `OcppServer`, `SUBPROTOCOL`, `build_tls_context`.

Handshake (before any OCPP frame), in this order: the node's OCPP connection budget
(`ocpp_max_connections`, else 503), path `/ocpp/{id}` (else 404), a supported subprotocol
offered (`ocpp2.0.1` or `ocpp1.6`, else 400; `csms.protocol.versions`), HTTP Basic
credentials with username = station id (else 401 with `WWW-Authenticate`), then the login
itself through the `HandshakeGate` (bounded FIFO queue, batched credential reads, backoff on
failures; 401 "invalid credentials" for an unknown station and a wrong password alike,
429/503 with Retry-After when backed off, busy or while Redis cannot be read), and last the
station's version pin (a station pinned to one version must offer that one, else 400). A
station provisioned for security profile 2 is refused on a plain (non-TLS) listener. With
`tls_client_ca` set, a client certificate is verified during TLS and a profile-3 station logs
in with it alone (CN = station id; `csms.protocol.certauth`) instead of HTTP Basic. A
second connection with the same id replaces the first, which is closed with code 1000
("replaced by a newer connection"). A station that never booted and sends no
BootNotification within `boot_timeout_s` is closed with 1008. A connection whose message
could not be stored is closed with 1013 without an answer to that message (see
`csms.protocol.station`). Frames larger than `max_frame_bytes` close the connection (1009);
a station that keeps exceeding its message rate is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from csms import metrics
from csms.core.security import BasicAuthError, parse_basic_auth
from csms.protocol.certauth import certificate_login, peer_common_name
from csms.protocol.env import NodeEnv
from csms.protocol.handshake import Admitted, HandshakeGate, Refused
from csms.protocol.registry import Registry
from csms.protocol.station import FloodError, StationConnection, StationHandler
from csms.protocol.v16.station import StationHandler16
from csms.protocol.versions import SUBPROTOCOLS, choose_subprotocol
from csms.refreeze import REFREEZER
from csms.store.provisioning import ProvisioningError, validate_station_id
from evfleet.logs import log_context
from evfleet.store.client import StoreUnavailable, store_unavailable
from evfleet.tasks import stop_tasks

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp2.0.1"
PATH_PREFIX = "/ocpp/"
CLOSE_REPLACED = 1000
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
LISTEN_BACKLOG = 2048  # a whole fleet reconnects at once after a restart (kernel caps at somaxconn)
CLOSE_WAIT_S = 15.0
"""`close` waits this long for the station handlers once their connections are closing (the close
handshake takes up to websockets' 10 s), then cancels those left and logs where they waited."""


def build_tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """Server TLS context (TLS >= 1.2) for security profile 2; with `client_ca`, client
    certificates are asked for and verified against it (profile 3, `csms.protocol.certauth`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(client_ca)
    return ctx


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [p.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")]


async def _discard_incoming(conn: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in conn:
            pass


def peer_address(conn: ServerConnection) -> Any:
    """The client's (host, port), or None once its socket is gone: uvloop's transport raises
    AttributeError ('getpeername') for a client that left during the handshake, which made each
    such handshake fail with a logged traceback (thousands in a 20,000-station connect wave)."""
    try:
        return conn.remote_address
    except (AttributeError, OSError):
        return None


class OcppServer:
    """WebSocket server + the station handlers of one node."""

    def __init__(self, env: NodeEnv, registry: Registry) -> None:
        self.env = env
        self.registry = registry
        self.tls = env.settings.tls_cert is not None
        self._server: Server | None = None
        # logins admitted by process_request, taken by _handle (weak: a client may vanish between)
        self._auth: weakref.WeakKeyDictionary[ServerConnection, Admitted] = weakref.WeakKeyDictionary()
        # subprotocol chosen for an admitted handshake, taken by _select_subprotocol
        self._chosen: weakref.WeakKeyDictionary[ServerConnection, str] = weakref.WeakKeyDictionary()
        self._open: set[ServerConnection] = set()  # handshaking or open, until the socket closes
        self.gate = HandshakeGate(env.store.redis, env.keys, env.settings, self.tls)
        self._closers: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()  # the tasks running `_handle`

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port 0)."""
        assert self._server is not None, "server not started"
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting connections."""
        s = self.env.settings
        tls_ctx = None
        if s.tls_cert is not None:
            if s.tls_key is None:
                raise ValueError("tls_cert is set but tls_key is not")
            tls_ctx = build_tls_context(str(s.tls_cert), str(s.tls_key),
                                        str(s.tls_client_ca) if s.tls_client_ca else None)
        await self.gate.start()
        self._server = await serve(
            self._handle, s.host, s.port, subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            select_subprotocol=self._select_subprotocol, process_request=self._process_request,
            max_size=s.max_frame_bytes, ssl=tls_ctx,
            compression=None, logger=logging.getLogger("websockets.server"),
            backlog=LISTEN_BACKLOG, open_timeout=s.handshake_timeout_s,
            ping_interval=s.ws_ping_interval_s, ping_timeout=s.ws_ping_timeout_s)
        log.info("OCPP server listening on %s:%s (%s)", s.host, self.port, "wss" if tls_ctx else "ws")

    async def close(self) -> None:
        """Stop accepting, close every connection (1001) and wait for the handlers (bounded:
        `CLOSE_WAIT_S`, then the handlers still running are cancelled; a shutdown never hangs)."""
        if self._server is not None:
            self._server.close(close_connections=True)
            try:
                async with asyncio.timeout(CLOSE_WAIT_S):
                    await self._server.wait_closed()
            except TimeoutError:
                log.error("%d station handler(s) still running %g s after close: cancelling them",
                          len(self._handlers), CLOSE_WAIT_S)
                if not await stop_tasks(self._handlers, what="station handlers"):
                    await self._server.wait_closed()
        await self.gate.close()
        for task in list(self._closers):
            with contextlib.suppress(ConnectionClosed):
                await task

    # --- handshake ------------------------------------------------------------------
    def _refuse(self, conn: ServerConnection, status: HTTPStatus, reason: str, text: str,
                retry_after_s: int | None = None) -> Response:
        metrics.HANDSHAKE_REFUSALS.labels(reason).inc()
        log.warning("handshake refused (%s %s) from %s: %s", status.value, reason, peer_address(conn), text)
        response = conn.respond(status, text + "\n")
        if status == HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="evfleet", charset="UTF-8"'
        if retry_after_s is not None:
            response.headers["Retry-After"] = str(retry_after_s)
        return response

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        budget = self.env.settings.ocpp_max_connections
        if len(self._open) >= budget:
            return self._refuse(conn, HTTPStatus.SERVICE_UNAVAILABLE, "connection_budget",
                                f"csms node holds its maximum of {budget} OCPP connections", 30)
        self._open.add(conn)
        conn.connection_lost_waiter.add_done_callback(lambda _: self._open.discard(conn))
        path = urlsplit(request.path).path
        if not path.startswith(PATH_PREFIX) or "/" in path[len(PATH_PREFIX):]:
            return self._refuse(conn, HTTPStatus.NOT_FOUND, "path", "use /ocpp/{station_id}")
        station_id = unquote(path[len(PATH_PREFIX):])
        try:
            validate_station_id(station_id)
        except ProvisioningError as err:
            return self._refuse(conn, HTTPStatus.NOT_FOUND, "path", str(err))
        offered = _offered_subprotocols(request.headers)
        if choose_subprotocol(offered) is None:
            return self._refuse(conn, HTTPStatus.BAD_REQUEST, "subprotocol",
                                f"Sec-WebSocket-Protocol must offer {' or '.join(SUBPROTOCOLS)}")
        with log_context(station_id=station_id):
            verdict = await self._login(conn, request, station_id)
            if isinstance(verdict, Response):
                return verdict
            chosen = choose_subprotocol(offered, verdict.pinned)
            if chosen is None:
                verdict.settled()
                return self._refuse(conn, HTTPStatus.BAD_REQUEST, "subprotocol",
                                    f"station is pinned to OCPP {verdict.pinned}; offer ocpp{verdict.pinned}")
            self._auth[conn] = verdict
            self._chosen[conn] = chosen
            # a client gone before _handle runs must not hold its admission slot
            conn.connection_lost_waiter.add_done_callback(lambda _: verdict.settled())
            return None

    def _select_subprotocol(self, conn: ServerConnection,
                            offered: Sequence[Subprotocol]) -> Subprotocol | None:
        """The subprotocol `_process_request` chose (websockets calls this after it)."""
        chosen = self._chosen.pop(conn, None)
        return Subprotocol(chosen) if chosen else None

    async def _login(self, conn: ServerConnection, request: Request, station_id: str) -> Response | Admitted:
        """Certificate login for profile 3 (`csms.protocol.certauth`), else the password login."""
        common_name = peer_common_name(conn)
        if common_name is not None:
            if common_name != station_id:
                return self._refuse(conn, HTTPStatus.UNAUTHORIZED, "certificate_cn",
                                    "client certificate CN is not the station id")
            try:
                admitted = await certificate_login(self.env.store.redis, self.env.keys, station_id,
                                                   self.env.settings.default_site)
            except RedisError as err:
                return self._refuse(conn, HTTPStatus.SERVICE_UNAVAILABLE, "store_unavailable",
                                    f"state store: {err}", 5)
            if admitted is not None:
                metrics.CERTIFICATE_LOGINS.inc()
                return admitted
        return await self._authenticate(conn, request, station_id)

    async def _authenticate(self, conn: ServerConnection, request: Request,
                            station_id: str) -> Response | Admitted:
        try:
            user, password = parse_basic_auth(request.headers.get("Authorization"))
        except BasicAuthError as err:
            return self._refuse(conn, HTTPStatus.UNAUTHORIZED, "no_auth", str(err))
        if user != station_id:
            return self._refuse(conn, HTTPStatus.UNAUTHORIZED, "user_mismatch",
                                "Basic username must be the station id")
        peer = peer_address(conn)
        ip = str(peer[0]) if peer else ""
        verdict = await self.gate.check(station_id, password, ip, conn.connection_lost_waiter.done)
        if isinstance(verdict, Refused):
            return self._refuse(conn, verdict.status, verdict.reason, verdict.text, verdict.retry_after_s)
        return verdict

    # --- connection -----------------------------------------------------------------
    async def _handle(self, conn: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(conn)
        finally:
            self._handlers.discard(task)

    async def _serve(self, conn: ServerConnection) -> None:
        admitted = self._auth.pop(conn)
        if conn.connection_lost_waiter.done():  # the client left right after the handshake
            admitted.settled()
            return
        station_id, site_id = admitted.station_id, admitted.site_id
        env = self.env
        with log_context(station_id=station_id):
            cls: type[StationConnection] = \
                StationHandler16 if conn.subprotocol == "ocpp1.6" else StationHandler
            handler = cls(station_id, conn, env, site_id,
                          security_profile=max(admitted.profile, 2 if self.tls else 1))
            old = self.registry.replace(handler)
            peer = peer_address(conn)
            remote = f"{peer[0]}:{peer[1]}" if peer else ""
            await env.store.station_connected(station_id, site_id, handler.conn_id, remote,
                                              handler.security_profile, handler.ocpp_version)
            if old is not None:
                log.warning("new connection replaces the previous one")
                metrics.OCPP_DISCONNECTS.labels("replaced").inc()
                task = asyncio.create_task(
                    old._connection.close(CLOSE_REPLACED, "replaced by a newer connection"))
                self._closers.add(task)
                task.add_done_callback(self._closers.discard)
            admitted.settled()
            log.info("station connected from %s", remote)
            code: int | None = None
            reason = ""
            watchdog = None if admitted.booted else asyncio.create_task(self._boot_watchdog(handler))
            try:
                await handler.start()
            except StoreUnavailable as err:
                log.warning("state store unavailable (%s): closing without an answer so the station "
                            "keeps its messages queued", err)
                metrics.OCPP_DISCONNECTS.labels("store_unavailable").inc()
                with contextlib.suppress(ConnectionClosed):
                    await conn.close(CLOSE_TRY_AGAIN, "state store unavailable; try again later")
            except FloodError as err:
                log.warning("disconnecting flooding station: %s", err)
                metrics.OCPP_DISCONNECTS.labels("flood").inc()
                # discard what the station still sends so its Close frame is read promptly
                drain = asyncio.create_task(_discard_incoming(conn))
                await conn.close(CLOSE_POLICY, "message rate limit exceeded")
                drain.cancel()
            except ConnectionClosed:
                pass
            finally:
                admitted.settled()
                if watchdog is not None:
                    watchdog.cancel()
                self.registry.remove(handler)
                REFREEZER.connection_closed()  # its objects are now a cycle, maybe frozen: a thaw frees it
                if conn.close_code is not None:
                    code, reason = conn.close_code, conn.close_reason or ""
                try:
                    await asyncio.shield(env.store.station_disconnected(
                        station_id, site_id, handler.conn_id, code, reason))
                except Exception as err:
                    if not store_unavailable(err):
                        log.exception("could not mark the station offline")
                    else:  # one line: a burst of these must not add traceback formatting to it
                        log.warning("could not mark the station offline: state store unavailable (%s: %s)",
                                    type(err).__name__, err)
                log.info("station disconnected (code %s %s)", code, reason)

    async def _boot_watchdog(self, handler: StationConnection) -> None:
        """Close the connection of a never-booted station that sends no BootNotification in time."""
        timeout_s = self.env.settings.boot_timeout_s
        try:
            await asyncio.wait_for(handler.booted.wait(), timeout_s)
        except TimeoutError:
            log.warning("no BootNotification within %g s; closing the connection", timeout_s)
            metrics.OCPP_DISCONNECTS.labels("no_boot").inc()
            with contextlib.suppress(ConnectionClosed):
                await handler._connection.close(CLOSE_POLICY, f"no BootNotification within {timeout_s:g} s")
