"""The operator web app: `/api/v1` (JSON), `/api/v1/live` (Server-Sent Events), `/metrics`,
the dashboard at `/` and OpenAPI at `/docs`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from pydantic import StringConstraints
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from csms.api import metrics
from csms.api.actions import actions
from csms.api.admin import admin
from csms.api.calls import CommandClientCaller, StationCaller
from csms.api.deps import ApiDeps, deps_of, require_stream
from csms.api.errors import READ_ERRORS, ErrorResponse, error_body, install_error_handlers
from csms.api.history import history
from csms.api.live import LiveHub
from csms.api.models import Health
from csms.api.power_history import PowerHistory
from csms.api.reader import StateReader
from csms.api.routes import act, read
from csms.api.site_inputs import SiteInputWriter
from csms.api.tokens import Role, TokenStore
from csms.commands import CommandClient
from evfleet.clock import Clock
from evfleet.keys import Keys
from evfleet.store.client import dedicated_client

log = logging.getLogger(__name__)

STATIC_DIR = resources.files("csms.api") / "static"
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", max_length=200)]
"""A Prometheus metric name (`GET /metrics?name[]=`)."""
METRICS_422 = {"description": "a `name[]` that is not a metric name",
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
"""/metrics answers in text, its errors in JSON (the API's one error body)."""
SSE_PING_S = 15.0
SSE_RECHECK_S = 1.0
"""How often an open live feed re-checks its token: a revoked token's feed ends within this."""
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CSP_DOCS = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")
LIVE_ANSWER: dict[str, Any] = {
    "description": "`event: snapshot` once, then `event: delta` per tick (docs/api.md)",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin"}


def build_deps(redis: Any, keys: Keys, clock: Clock, *, auth: bool = True, default_site: str = "default",
               default_limit_kw: float | None = None, caller: StationCaller | None = None,
               call_timeout_s: float = 30.0, tick_s: float = 1.0) -> ApiDeps:
    """Wire the API's readers and writers over one Redis client."""
    reader = StateReader(redis, keys, clock, default_site, default_limit_kw)
    return ApiDeps(redis=redis, keys=keys, clock=clock, reader=reader,
                   writer=SiteInputWriter(redis, keys, clock), tokens=TokenStore(redis, keys, clock),
                   caller=caller or CommandClientCaller(CommandClient(redis, keys, clock, call_timeout_s)),
                   hub=LiveHub(reader, tick_s=tick_s), power=PowerHistory(redis, keys), auth=auth,
                   call_timeout_s=call_timeout_s)


class ResponseHeaders:
    """Pure ASGI middleware: the security headers on every response, and each request counted
    (`metrics.API_REQUESTS`, `API_LATENCY` up to the response's start, by route template).

    Not `@app.middleware("http")`: Starlette's `BaseHTTPMiddleware` runs every request through a
    task group and memory streams: a `/healthz` took 0.45 ms of CPU in-process with it, 0.22 without,
    and HAProxy checks each node 3 times a second per HAProxy process (issue 14)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to its response and count it when it starts."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Content-Security-Policy", CSP_DOCS if scope["path"] == "/docs" else CSP)
                path = getattr(scope.get("route"), "path", "unmatched")
                metrics.API_REQUESTS.labels(scope["method"], path, str(message["status"])).inc()
                metrics.API_LATENCY.labels(path).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(deps: ApiDeps) -> FastAPI:
    """The FastAPI app over `deps`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deps.hub.ensure_started()
        try:
            yield
        finally:
            await deps.hub.stop()
            await probe.close()

    probe = HealthProbe(deps.redis)
    site_metrics = metrics.SiteMetricsRefresh(deps.reader)
    app = FastAPI(title="evfleet operator API", version="1",
                  description="Stations, sessions, transactions, sites, id tokens and actions of an "
                              "evfleet CSMS. Bearer tokens: "
                              "`evfleet tokens create NAME --role viewer|operator`.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.deps = deps
    app.state.site_metrics = site_metrics  # benchmarks/api_scale.py times every refresh (min_interval_s 0)
    install_error_handlers(app)
    metrics.load_ocpp_metrics()

    app.add_middleware(ResponseHeaders)

    app.include_router(history)  # before `read`: /transactions.csv is not /transactions/{station_id}
    app.include_router(read)
    app.include_router(act)
    app.include_router(actions)
    app.include_router(admin)

    @app.get("/api/v1/live", tags=["live"], summary="Server-Sent Events: aggregated live updates",
             response_class=StreamingResponse, responses={**READ_ERRORS, 200: LIVE_ANSWER})
    async def live(request: Request, _: Any = Depends(require_stream(Role.VIEWER))) -> StreamingResponse:
        """`snapshot` once, then one `delta` per tick with changed stations, sessions, events and sites."""
        token = getattr(request.state, "stream_token", None)
        return StreamingResponse(_sse(request, deps_of(request), token), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/metrics", tags=["metrics"], summary="Prometheus metrics", response_class=PlainTextResponse,
             responses={422: METRICS_422})
    async def prometheus(names: list[MetricName] | None = Query(None, alias="name[]")) -> Response:
        """OCPP, operator and optimizer series in the Prometheus text format; with `name[]` only
        those series (Redis is read only for the series read from it: `metrics.needs_refresh`)."""
        if metrics.needs_refresh(names):
            await site_metrics.refresh()
        return Response(metrics.render(names=names), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz", tags=["metrics"], summary="Liveness: Redis reachable", response_model=Health,
             responses={503: {"model": ErrorResponse, "description": "Redis does not answer"}})
    async def healthz() -> Response:
        """`{"ok": true}` when Redis answers; 503 with the API's error body
        (`store_unavailable`) when it does not."""
        if await probe.redis_answers():
            return JSONResponse({"ok": True})
        return JSONResponse(error_body("store_unavailable", "Redis does not answer the node's PING"),
                            status_code=503)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        """The dashboard page."""
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        """No icon (browsers ask for one on every page; a 404 would be logged as an error)."""
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    _install_docs(app)
    return app


class HealthProbe:
    """The /healthz check: PING on a connection of its own (`dedicated_client`, opened at the
    first check), not on the node's shared pool. When thousands of station handlers hold every
    pooled connection (a burst a node works off), a check waiting behind them failed after the
    pool timeout and HAProxy took a live node out of service (20,000 stations: 47,000 refused
    handshakes); the check answers whether Redis is reachable, which this still does."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._own: Redis | None = None

    async def redis_answers(self) -> bool:
        """Whether Redis answers a PING (an unreachable Redis is logged, without a traceback)."""
        if self._own is None:
            self._own = dedicated_client(self.redis, max_connections=1, client_name="evfleet-health")
        try:
            await self._own.ping()
        except RedisError as err:
            log.warning("health check: Redis does not answer (%s: %s)", type(err).__name__, err)
            return False
        return True

    async def close(self) -> None:
        """Close the probe's connection (if it was opened)."""
        if self._own is not None:
            await self._own.aclose()
            self._own = None


def swagger_assets_dir() -> str | None:
    """Swagger UI files shipped by the `swagger-ui-py` package (no CDN needed), if installed."""
    try:
        import swagger_ui
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(swagger_ui.__file__), "static")
    return path if os.path.exists(os.path.join(path, "swagger-ui-bundle.js")) else None


def _install_docs(app: FastAPI) -> None:
    """OpenAPI UI at /docs, served from local files so it works without internet."""
    assets = swagger_assets_dir()
    if assets:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI over /openapi.json."""
        if not assets:  # fall back to FastAPI's CDN assets
            return get_swagger_ui_html(openapi_url="/openapi.json", title="evfleet operator API")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="evfleet operator API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def _sse_frame(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


async def _sse(request: Request, deps: ApiDeps, token: str | None = None) -> AsyncIterator[bytes]:
    """One client's event stream: a snapshot, then the hub's deltas and pings. With a `token`,
    the feed ends (event `revoked`) within SSE_RECHECK_S of the token's revocation."""
    sub = deps.hub.subscribe()
    loop = asyncio.get_running_loop()
    try:
        sites = await deps.reader.sites()
        yield _sse_frame("snapshot", {"type": "snapshot", "ts": deps.clock.now().isoformat(), "sites": sites})
        last_ping = checked = loop.time()
        while True:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(SSE_RECHECK_S):
                    message = await sub.queue.get()
            except TimeoutError:
                message = None
            now = loop.time()
            if token is not None and now - checked >= SSE_RECHECK_S:
                checked = now
                if await deps.tokens.lookup(token) is None:
                    yield _sse_frame("revoked", {"type": "revoked", "detail": "API token revoked"})
                    return
            if message is None:
                if now - last_ping >= SSE_PING_S:
                    last_ping = now
                    if await request.is_disconnected():
                        return
                    yield b": ping\n\n"
                continue
            if message.get("type") == "close":
                return
            yield _sse_frame("delta", message)
    finally:
        deps.hub.unsubscribe(sub)
