"""Composition root of a csms node.

Public names: `running_csms` (async context manager for tests, the demo and embedding),
`run_csms` (what `evfleet csms` / `python -m csms` run), `CsmsNode`, `DEFAULT_SERVICES`,
`supervise`.

    async with running_csms(settings, clock=clock) as node:
        node.ocpp_port, node.url, node.ctx, node.station_url("CP-1"), node.redis_url

A node: connects to Redis (or starts an embedded redis-server when `redis_url` is unset,
stopped on exit), serves OCPP on `/ocpp/{id}`, runs the command executor, refreshes its
heartbeat key `node:{id}` (TTL 15 s) and runs the services `csms.api.service.run`,
`csms.telemetry.service.run` and `csms.smart_charging.service.run` with the `CsmsContext`.
After each Accepted BootNotification the node asks the station for its device model
(GetBaseReport through the executor, setting `fetch_device_model_on_boot`), so EVSE max
power and phases are known without anyone else asking. A service that raises is logged
and restarted with backoff; it never takes OCPP down. On
exit every connection is closed (1001), this node's stations are marked offline and the
heartbeat key is deleted.

`ctx.redis` is a `redis.asyncio.Redis` with `decode_responses=True` (pool of
`redis_max_connections`). Replies to commands are awaited on a second client of the node
(pool of `reply_max_connections`, client name `evfleet-replies`) that `commands` uses, so
calls in flight never hold connections the OCPP handlers need; it is closed on exit. `ctx.extras` holds
`registry` (connected stations), `commands` (a `CommandClient`), `redis_url` and
`store` (`StateStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from csms.commands import REPLY_MAX_CONNECTIONS, CommandClient
from csms.context import CsmsContext, Service
from csms.gccensus import GC_CENSUS
from csms.loopwatch import LoopLag, SlowCallbacks
from csms.protocol.commands import CommandExecutor
from csms.protocol.env import NodeEnv
from csms.protocol.framing import warm_up as warm_up_schemas
from csms.protocol.registry import Registry
from csms.protocol.server import OcppServer
from csms.refreeze import REFREEZER
from csms.runtime import GC_PAUSES, freeze_after_start, tune_gc
from csms.settings import CsmsSettings
from csms.store.embedded import EmbeddedRedis
from csms.store.migrate import migrate_legacy_transactions
from csms.store.provisioning import publish_site_defaults
from csms.store.quota import EventQuota
from csms.store.state import StateStore
from evfleet.backoff import Backoff
from evfleet.clock import (
    Clock,
    RealClock,
    ScaledClock,
    acquire_clock,
    describe,
    keep_clock_alive,
    read_shared_clock,
)
from evfleet.keys import Keys
from evfleet.store.client import MAX_CONNECTIONS, as_str, connect_redis
from evfleet.store.layout import resolve_keys
from evfleet.store.lean import LeanRedis
from evfleet.tasks import stop_tasks

log = logging.getLogger(__name__)

API_SERVICE = "csms.api.service:run"
DEFAULT_SERVICES: tuple[str, ...] = (
    API_SERVICE,
    "csms.telemetry.service:run",
    "csms.smart_charging.service:run",
)
NODE_TTL_S = 15
NODE_REFRESH_S = 5.0
EMBEDDED_URL_FILE = "redis.url"


@dataclass
class CsmsNode:
    """A running node (what `running_csms` yields)."""

    ctx: CsmsContext
    server: OcppServer
    registry: Registry
    executor: CommandExecutor
    redis_url: str
    embedded: EmbeddedRedis | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ocpp_port(self) -> int:
        """Bound OCPP port."""
        return self.server.port

    @property
    def url(self) -> str:
        """Base URL stations connect to (append the station id)."""
        scheme = "wss" if self.server.tls else "ws"
        host = self.ctx.settings.host
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        return f"{scheme}://{host}:{self.ocpp_port}/ocpp/"

    def station_url(self, station_id: str) -> str:
        """URL of one station's endpoint."""
        return self.url + station_id

    @property
    def commands(self) -> CommandClient:
        """A CommandClient on this node's Redis."""
        client = self.ctx.extras["commands"]
        assert isinstance(client, CommandClient)
        return client


def default_node_id() -> str:
    """hostname-pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def load_service(spec: str) -> Service:
    """Import `module:function`."""
    module_name, _, attr = spec.partition(":")
    service: Service = getattr(importlib.import_module(module_name), attr or "run")
    return service


async def supervise(name: str, spec: str | Service, ctx: CsmsContext, first_backoff_s: float = 1.0,
                    max_backoff_s: float = 60.0) -> None:
    """Run a service; log and restart it with exponential backoff (full jitter) when it raises."""
    backoff = Backoff(first_backoff_s, max_backoff_s)
    while True:
        try:
            service = load_service(spec) if isinstance(spec, str) else spec
            await service(ctx)
            log.info("service %s finished", name)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = backoff.next_delay()
            log.exception("service %s crashed; restarting in %.1f s", name, delay)
        await asyncio.sleep(delay)


def _bind_api(settings: CsmsSettings) -> socket.socket:
    """The operator API's listening socket; OSError naming the address when it cannot bind."""
    from csms.api.service import bind_socket

    try:
        return bind_socket(settings.api_host, settings.api_port)
    except OSError as err:
        raise OSError(err.errno, f"operator API address {settings.api_host}:{settings.api_port}: "
                                 f"{err.strerror} (choose another with --api-port or api_port)") from err


async def _heartbeat(redis: Redis, keys: Keys, node_id: str, info: dict[str, object],
                     stopping: asyncio.Event) -> None:
    """Keep `node:{id}` alive (real time: the TTL is enforced by Redis in real time)."""
    while not stopping.is_set():
        try:
            await redis.set(keys.node(node_id), json.dumps(info), ex=NODE_TTL_S)
        except Exception:
            log.exception("node heartbeat write failed")
        await asyncio.sleep(NODE_REFRESH_S)


def _start_embedded(settings: CsmsSettings) -> EmbeddedRedis:
    """Start the embedded redis-server: persistent under `data_dir/redis` (its URL written to
    `data_dir/redis.url`) when a data dir is set, else in memory."""
    if settings.data_dir is not None:
        data_dir = Path(settings.data_dir) / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        server = EmbeddedRedis(data_dir=str(data_dir), persist=True).start()
        (Path(settings.data_dir) / EMBEDDED_URL_FILE).write_text(server.url + "\n")
        return server
    return EmbeddedRedis().start()


def _stop_embedded(embedded: EmbeddedRedis, settings: CsmsSettings) -> None:
    """Stop the embedded redis-server and remove the URL file `_start_embedded` wrote."""
    embedded.stop()
    if settings.data_dir is not None:
        with contextlib.suppress(FileNotFoundError):
            (Path(settings.data_dir) / EMBEDDED_URL_FILE).unlink()


async def _redis_server(settings: CsmsSettings) -> tuple[EmbeddedRedis | None, str]:
    """The node's Redis URL: `redis_url`, else an embedded redis-server started here (returned,
    to be stopped on exit)."""
    embedded: EmbeddedRedis | None = None
    if settings.redis_url is None:
        embedded = await asyncio.to_thread(_start_embedded, settings)
        log.info("embedded redis-server at %s", embedded.url)
    return embedded, settings.redis_url or (embedded.url if embedded else "")


async def _mark_offline(redis: Redis, keys: Keys, now: str, node_id: str | None = None) -> int:
    """Mark stations offline that are recorded online on `node_id`, or (None) on any node whose
    heartbeat key has expired (a crashed node). Returns how many."""
    sids = sorted(as_str(s) for s in await redis.smembers(keys.stations()))
    pipe = redis.pipeline(transaction=False)
    for sid in sids:
        pipe.hmget(keys.station(sid), ["online", "node"])
    rows = await pipe.execute()
    alive: dict[str, bool] = {}
    count = 0
    for sid, (online, node) in zip(sids, rows, strict=True):
        if online != "1" or not node:
            continue
        if node_id is None:
            if node not in alive:
                alive[node] = bool(await redis.exists(keys.node(node)))
            if alive[node]:
                continue
        elif node != node_id:
            continue
        await redis.hset(keys.station(sid), mapping={"online": "0", "last_seen": now})
        count += 1
    return count


async def _clean_up_node(redis: Redis, keys: Keys, clock: Clock, node_id: str) -> None:
    """Mark the node's stations offline and drop its key (best effort: Redis may be gone)."""
    try:
        swept = await _mark_offline(redis, keys, clock.now().isoformat(), node_id)
        if swept:
            log.info("marked %d stations offline", swept)
        await redis.delete(keys.node(node_id))
    except RedisError as err:  # Redis gone (an external one down): one line, the node key expires
        log.error("could not clean up node state in Redis (stations of node %s stay online until "
                  "another node starts): %s", node_id, err)


async def _node_clock(redis: Redis, keys: Keys, settings: CsmsSettings, node_id: str,
                      given: Clock | None) -> Clock:
    """The node's clock: the one it was handed (demo, tests), else the deployment's one time source.

    `clock_speed` 1 (the default) is real time and refuses a live simulated clock in this Redis;
    another speed joins the live clock of that speed or starts one (see `evfleet.clock.acquire_clock`).
    """
    if given is not None:
        return given
    clock, created = await acquire_clock(redis, keys.clock(), settings.clock_speed, f"csms:{node_id}",
                                         settings.clock_start)
    if isinstance(clock, ScaledClock):
        log.warning("simulated clock: %gx, now %s (%s)", clock.speed, clock.now().isoformat(),
                    "started here" if created else "joined")
    else:
        shared = await read_shared_clock(redis, keys.clock())
        if shared is not None:
            log.warning("ignoring %s in %s: running in real time", describe(shared), keys.clock())
    return clock


async def _join_redis(redis: Redis, settings: CsmsSettings, node_id: str, clock: Clock | None,
                      tasks: list[asyncio.Task[None]]) -> tuple[Keys, Clock]:
    """Join the deployment's Redis before serving: its key layout, its clock (a simulated one kept
    alive by a task appended to `tasks`), transaction keys of earlier versions migrated, this node's
    site defaults published. The keys and the node's clock."""
    await redis.ping()
    keys = await resolve_keys(redis, settings.redis_prefix, settings.redis_shards)
    clock = await _node_clock(redis, keys, settings, node_id, clock)
    if isinstance(clock, ScaledClock):
        tasks.append(asyncio.create_task(keep_clock_alive(redis, keys.clock(), clock.spec()),
                                         name="clock-heartbeat"))
    if not keys.shards:  # the sharded layout starts from `evfleet redis migrate-keys`, already current
        await migrate_legacy_transactions(redis, keys)  # before serving: tx keys of earlier versions
    await _publish_defaults(redis, keys, settings, node_id, clock)
    return keys, clock


async def _publish_defaults(redis: Redis, keys: Keys, settings: CsmsSettings, node_id: str,
                            clock: Clock) -> None:
    """Publish `default_site_limit_kw`, the limit every reader uses for sites without one, and
    `site_margin_kw`, the headroom no reader hands out."""
    before, sites = await publish_site_defaults(redis, keys, settings.default_site_limit_kw, node_id,
                                                clock.now(), margin_kw=settings.site_margin_kw)
    if before is not None and before != settings.default_site_limit_kw:
        log.warning("default_site_limit_kw %g kW replaces the %g kW another node published: configure "
                    "every csms node alike", settings.default_site_limit_kw, before)
    if sites:
        log.info("sites re-budgeted (default limit %g kW, site margin %g kW): %s",
                 settings.default_site_limit_kw, settings.site_margin_kw, ", ".join(sites))


async def _register_node(redis: Redis, keys: Keys, clock: Clock, node_id: str, ocpp_port: int,
                         ) -> dict[str, object]:
    """Announce this node (`node:{id}`, refreshed by the heartbeat) and mark the stations of crashed
    nodes offline; the node record."""
    info: dict[str, object] = {"node_id": node_id, "host": socket.gethostname(), "pid": os.getpid(),
                               "ocpp_port": ocpp_port, "started_at": clock.now().isoformat()}
    await redis.set(keys.node(node_id), json.dumps(info), ex=NODE_TTL_S)
    stale = await _mark_offline(redis, keys, clock.now().isoformat())
    if stale:
        log.warning("marked %d stations of crashed csms nodes offline", stale)
    return info


def _start_services(ctx: CsmsContext, services: Sequence[str | Service], backoff_s: float,
                    tasks: list[asyncio.Task[None]]) -> socket.socket | None:
    """Start each service under `supervise` (appended to `tasks`); the API's bound socket, if any.

    The API port is bound here, before any service runs, so a busy port stops the start with a
    clear error (not a retry loop).
    """
    api_socket = None
    if ctx.settings.api_enabled and API_SERVICE in services:
        api_socket = _bind_api(ctx.settings)
        ctx.api_port = int(api_socket.getsockname()[1])
        ctx.extras["api_socket"] = api_socket
    for spec in services:
        name = spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))
        tasks.append(asyncio.create_task(supervise(name, spec, ctx, backoff_s), name=f"service-{name}"))
    return api_socket


@contextlib.asynccontextmanager
async def running_csms(settings: CsmsSettings, clock: Clock | None = None,
                       services: Sequence[str | Service] | None = None,
                       service_backoff_s: float = 1.0, redis_max_connections: int = MAX_CONNECTIONS,
                       reply_max_connections: int = REPLY_MAX_CONNECTIONS) -> AsyncIterator[CsmsNode]:
    """Start a node, yield it, stop it cleanly (see module docstring)."""
    node_id = settings.node_id or default_node_id()
    embedded, redis_url = await _redis_server(settings)
    redis = connect_redis(redis_url, max_connections=redis_max_connections)
    # callers bound their own wait (CommandClient.call), so no pool timeout and no socket read
    # timeout here: redis-py's default (5 s) cut every BRPOP of a reply at 5 s, so a call to a station
    # held by another node that took longer was counted as timed out and its answer lost (issue 14:
    # every SetChargingProfile timeout of the production-topology run, 5.6-9.4 s after the call)
    reply_redis = connect_redis(redis_url, max_connections=reply_max_connections, pool_timeout_s=None,
                                client_name="evfleet-replies", socket_timeout=None)
    keys = Keys(settings.redis_prefix)
    server: OcppServer | None = None
    executor: CommandExecutor | None = None
    stopping = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    api_socket: socket.socket | None = None
    started = False
    fast: LeanRedis | None = None
    try:
        keys, clock = await _join_redis(redis, settings, node_id, clock, tasks)
        quota = EventQuota(redis, keys, clock, settings.station_event_quota_per_hour,
                           settings.station_event_max_bytes)
        fast = LeanRedis.from_url(redis_url)  # None for a cluster, TLS or a Unix socket: redis-py
        store = StateStore(redis, keys, clock, node_id, quota=quota, fast=fast)
        env = NodeEnv(settings=settings, clock=clock, keys=keys, store=store, node_id=node_id)
        registry = Registry()
        server = OcppServer(env, registry)
        await server.start()
        executor = CommandExecutor(env, registry, redis)
        if settings.fetch_device_model_on_boot:
            env.boot_accepted.append(executor.fetch_device_model)
        ctx = CsmsContext(settings=settings, redis=redis, keys=keys, clock=clock, node_id=node_id,
                          ocpp_port=server.port)
        commands = CommandClient(redis, keys, clock, settings.call_timeout_s, reply_redis=reply_redis)
        ctx.extras.update(registry=registry, commands=commands, redis_url=redis_url, store=store,
                          executor=executor)
        info = await _register_node(redis, keys, clock, node_id, server.port)
        tasks.append(asyncio.create_task(_heartbeat(redis, keys, node_id, info, stopping),
                                         name="node-heartbeat"))
        tasks.append(asyncio.create_task(executor.run(), name="command-executor"))
        if services is None:
            services = DEFAULT_SERVICES if settings.run_services else ()
        api_socket = _start_services(ctx, services, service_backoff_s, tasks)
        node = CsmsNode(ctx=ctx, server=server, registry=registry, executor=executor, redis_url=redis_url,
                        embedded=embedded, tasks=tasks)
        log.info("csms node %s up: OCPP on port %s, event loop %s", node_id, server.port,
                 type(asyncio.get_running_loop()).__module__.split(".")[0])
        started = True
        yield node
    finally:
        stopping.set()
        if executor is not None:
            executor.stopping = True
        await stop_tasks(tasks, what="csms node tasks")
        if api_socket is not None:  # the API service closes it; not when the start failed first
            api_socket.close()
        if server is not None:  # not when the start failed first (Redis unreachable, clock refused)
            await server.close()
            await _clean_up_node(redis, keys, clock or RealClock(), node_id)
        if fast is not None:
            await fast.aclose()
        await reply_redis.aclose()
        await redis.aclose()
        if embedded is not None:
            await asyncio.to_thread(_stop_embedded, embedded, settings)
        if started:
            log.info("csms node %s stopped", node_id)


async def run_csms(settings: CsmsSettings, clock: Clock | None, stop: asyncio.Event) -> None:
    """Run a node until `stop` is set (SIGINT/SIGTERM in the CLI)."""
    tune_gc(settings.gc_thresholds)
    GC_PAUSES.profile_over_s = settings.gc_profile_ms / 1000 if settings.gc_profile_ms > 0 else None
    GC_PAUSES.log_over_s = settings.gc_log_ms / 1000 if settings.gc_log_ms > 0 else None
    slow = SlowCallbacks(settings.slow_callback_ms / 1000) if settings.slow_callback_ms > 0 else None
    if slow is not None:
        slow.install()
        slow.watch_turns(asyncio.get_running_loop())
        GC_PAUSES.log_over_s = slow.threshold_s  # a collection is a stall too: logged with its size
    lag = asyncio.create_task(LoopLag().run(), name="loop-lag")
    refreezer: asyncio.Task[None] | None = None
    try:
        async with running_csms(settings, clock=clock) as node:
            log.info("stations connect to %s{station_id}", node.url)
            # in a thread: the event loop keeps serving (a GIL switch every few ms, no long stall)
            log.info("%d OCPP schemas compiled", await asyncio.to_thread(warm_up_schemas))
            if settings.gc_freeze:
                await asyncio.sleep(0.5)  # let the services start (they import and compile what they use)
                log.info("gc: %d objects frozen after start-up", freeze_after_start())
                if settings.gc_refreeze:
                    REFREEZER.start(settings.gc_thaw_growth, settings.gc_thaw_after_closed)
                    REFREEZER.profile_garbage = settings.gc_profile_ms > 0
                    REFREEZER.freeze_young_s = settings.gc_freeze_young_s
                    refreezer = asyncio.create_task(REFREEZER.run(), name="gc-refreeze")
            if settings.gc_census:
                GC_CENSUS.install(settings.gc_census, settings.gc_census_after_s)
            await stop.wait()
    finally:
        REFREEZER.stop()
        GC_CENSUS.uninstall()
        if refreezer is not None:
            refreezer.cancel()
        lag.cancel()
        if slow is not None:
            slow.uninstall()
