"""Entry point of the operator API for the composition root: serve the app on uvicorn.

Binds `settings.api_host:settings.api_port` (port 0 = a free port, written back to
`ctx.api_port`), runs until cancelled, then stops the live feed and closes connections.
Signals are left to the composition root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn

from csms.api.app import build_deps, create_app
from csms.api.calls import CommandClientCaller
from csms.commands import CommandClient
from csms.context import CsmsContext

log = logging.getLogger(__name__)


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling (the csms owns the process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Do not install signal handlers."""
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket (port 0 = any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


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
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2, proxy_headers=False)
    server = EmbeddedServer(config)
    log.info("operator API on http://%s:%d (auth %s)", settings.api_host, ctx.api_port,
             "on" if settings.api_auth else "OFF")
    if not settings.api_auth:
        log.warning("operator API auth is disabled (api_auth=false): anyone reaching the port can act")
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="api-uvicorn")
    try:
        await asyncio.shield(serving)
    finally:
        server.should_exit = True
        await deps.hub.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(serving), 5)
        if not serving.done():
            serving.cancel()
            with contextlib.suppress(BaseException):
                await serving
        sock.close()
