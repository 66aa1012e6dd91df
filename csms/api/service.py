"""Entry point of the operator API for the composition root: serve the app on uvicorn.

Binds `settings.api_host:settings.api_port` (port 0 = a free port, written back to
`ctx.api_port`), holds at most `api_max_connections` connections (503 beyond), runs until
cancelled, then stops the live feed and closes connections. Beside it, under the service
lease `site-power`, one node of the deployment samples the site power history into Redis
(csms/api/power_history.py).
Signals are left to the composition root.

Slow clients cannot hold connections: the request line and headers of every request must
arrive within `api_header_timeout_s` (uvicorn has no such timeout; `HeaderTimeoutH11Protocol`
adds it, against slowloris), and an idle keep-alive connection is closed after
`api_keepalive_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from csms.api.app import build_deps, create_app
from csms.api.calls import CommandClientCaller
from csms.api.power_history import LEASE, record_site_power
from csms.commands import CommandClient
from csms.context import CsmsContext
from csms.leases import run_singleton
from csms.settings import CsmsSettings
from evfleet.tasks import stop_tasks

log = logging.getLogger(__name__)


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling (the csms owns the process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Do not install signal handlers."""
        yield


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request line and headers of each request."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            log.info("api: closing a connection whose request headers took over %.0f s",
                     self.header_timeout_s)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header deadline of the first request."""
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        """Start the deadline when a new request begins; stop it once its headers are in."""
        if self._header_timer is None and self._waiting_for_headers():
            self._arm_header_timer()
        super().data_received(data)
        if not self._waiting_for_headers():
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline with the connection."""
        self._disarm_header_timer()
        super().connection_lost(exc)


def http_protocol(header_timeout_s: float) -> type[HeaderTimeoutH11Protocol]:
    """The protocol class uvicorn instantiates, with this header deadline."""
    return type("HeaderTimeoutH11", (HeaderTimeoutH11Protocol,), {"header_timeout_s": header_timeout_s})


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket (port 0 = any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def server_config(app: Any, settings: CsmsSettings) -> uvicorn.Config:
    """uvicorn's settings for the node's API.

    `log_config=None`: uvicorn's default would run `logging.config.dictConfig`, which closes every
    handler the command installed (the demo's `demo.log` stopped at the API start) and sends
    uvicorn's own lines to stderr past the JSON format and the redaction filter. Its lines go to the
    root logger instead. `limit_concurrency`: its own connection budget (HTTP 503 beyond it), apart
    from the stations' `ocpp_max_connections`.
    """
    return uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                          timeout_graceful_shutdown=2, proxy_headers=False,
                          http=http_protocol(settings.api_header_timeout_s),
                          timeout_keep_alive=max(1, round(settings.api_keepalive_timeout_s)),
                          server_header=False, limit_concurrency=settings.api_max_connections)


async def run(ctx: CsmsContext) -> None:
    """Serve the API, dashboard and /metrics until cancelled (no-op when api_enabled is off)."""
    settings = ctx.settings
    if not settings.api_enabled:
        return
    commands = ctx.extras.get("commands")
    caller = CommandClientCaller(commands) if isinstance(commands, CommandClient) else None
    deps = build_deps(ctx.redis, ctx.keys, ctx.clock, auth=settings.api_auth,
                      default_site=settings.default_site, default_limit_kw=settings.default_site_limit_kw,
                      caller=caller, call_timeout_s=settings.call_timeout_s)
    app = create_app(deps)
    # the node binds it before the services start (a busy port fails the start); a restart rebinds
    sock = ctx.extras.pop("api_socket", None) or bind_socket(settings.api_host, settings.api_port)
    ctx.api_port = int(sock.getsockname()[1])
    ctx.extras["api_deps"] = deps
    server = EmbeddedServer(server_config(app, settings))
    log.info("operator API on http://%s:%d (auth %s)", settings.api_host, ctx.api_port,
             "on" if settings.api_auth else "OFF")
    if not settings.api_auth:
        log.warning("operator API auth is disabled (api_auth=false): anyone reaching the port can act")
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="api-uvicorn")
    # one node per deployment samples the site power history into Redis (every node serves it)
    recorder = asyncio.create_task(run_singleton(
        ctx.redis, ctx.keys.service_lease(LEASE), ctx.node_id, settings.service_lease_ttl_s,
        lambda: record_site_power(deps.reader, deps.power)), name="api-site-power")
    try:
        await asyncio.shield(serving)
    finally:
        await stop_tasks([recorder], what="site power recorder")  # bounded (evfleet.tasks)
        server.should_exit = True
        await deps.hub.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(serving), 5)
        if not serving.done():
            serving.cancel()
            with contextlib.suppress(BaseException):
                await serving
        sock.close()
