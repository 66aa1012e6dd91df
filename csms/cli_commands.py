"""`evfleet csms`, `evfleet stations ...`, `evfleet sites ...`, `evfleet idtokens ...`,
`evfleet redis migrate-keys`.

Management commands use `--redis-url` / `EVFLEET_REDIS_URL` / `--config`; without one they
use the embedded Redis of `evfleet csms` in the data dir (`--data-dir`, `EVFLEET_DATA_DIR`,
default `$XDG_DATA_HOME/evfleet`): the running one if `evfleet csms` is up, else they start
it briefly themselves (state persists there).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

T = TypeVar("T")

stations_app = typer.Typer(help="Provision charging stations (id, password, site).", no_args_is_help=True)
sites_app = typer.Typer(help="Sites and their grid limits.", no_args_is_help=True)
idtokens_app = typer.Typer(help="Id tokens (RFID cards, ...) for Authorize.", no_args_is_help=True)
redis_app = typer.Typer(help="Redis key layout (Redis Cluster).", no_args_is_help=True)

ConfigOpt = typer.Option(None, "--config", help="TOML configuration file ([csms] table or top level)")
RedisUrlOpt = typer.Option(None, "--redis-url", help="Redis URL (default: EVFLEET_REDIS_URL, --config, "
                                                     "else the embedded Redis in the data dir)")
PrefixOpt = typer.Option(None, "--redis-prefix", help="key prefix (default: evfleet)")
DataDirOpt = typer.Option(None, "--data-dir", help="embedded Redis home (default $XDG_DATA_HOME/evfleet)")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("csms")(csms)
    app.add_typer(stations_app, name="stations")
    app.add_typer(sites_app, name="sites")
    app.add_typer(idtokens_app, name="idtokens")
    app.add_typer(redis_app, name="redis")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(config: Path | None, **flags: Any) -> Any:
    from csms.settings import CsmsSettings
    from evfleet.config import load_or_exit

    return load_or_exit(CsmsSettings, config, **flags)


def csms(
    config: Path | None = ConfigOpt,
    host: str | None = typer.Option(None, help="OCPP listen address (default 0.0.0.0)"),
    port: int | None = typer.Option(None, help="OCPP WebSocket port (default 9000; 0 = any free port)"),
    redis_url: str | None = RedisUrlOpt,
    redis_prefix: str | None = PrefixOpt,
    redis_shards: int | None = typer.Option(
        None, min=0, max=16384, help="key layout: 0 unsharded, N >= 1 Redis Cluster layout with N shards "
                                     "(default: as recorded in Redis, else 16 on redis+cluster://, else 0)"),
    data_dir: Path | None = DataDirOpt,
    node_id: str | None = typer.Option(None, help="node id (default hostname-pid)"),
    tls_cert: Path | None = typer.Option(None, help="server certificate PEM (security profile 2)"),
    tls_key: Path | None = typer.Option(None, help="server private key PEM"),
    tls_client_ca: Path | None = typer.Option(
        None, help="CA PEM of station client certificates (security profile 3)"),
    auto_register: bool | None = typer.Option(None, "--auto-register/--no-auto-register",
                                              help="DEVELOPMENT: accept unknown stations"),
    accept_all_tokens: bool | None = typer.Option(None, "--accept-all-tokens/--no-accept-all-tokens",
                                                  help="DEVELOPMENT: Authorize accepts unknown id tokens"),
    api: bool | None = typer.Option(None, "--api/--no-api", help="serve the operator API and dashboard"),
    api_host: str | None = typer.Option(None, help="operator API listen address (default 127.0.0.1)"),
    api_port: int | None = typer.Option(None, help="operator API port (default 8080; 0 = any free port)"),
    api_auth: bool | None = typer.Option(None, "--api-auth/--no-api-auth",
                                         help="require bearer tokens on /api (--no-api-auth: development)"),
    mqtt_url: str | None = typer.Option(None, help="MQTT broker mqtt://host:port (default: off)"),
    services: bool | None = typer.Option(None, "--services/--no-services",
                                         help="run API, telemetry and smart charging here (off: OCPP only)"),
    smart_charging: bool | None = typer.Option(None, "--smart-charging/--no-smart-charging",
                                               help="run the smart-charging loop"),
    site_limit_kw: float | None = typer.Option(None, "--site-limit-kw",
                                               help="grid limit of sites created implicitly (default 100)"),
    log_level: str | None = typer.Option(None, help="DEBUG, INFO, WARNING, ERROR"),
    log_json: bool | None = typer.Option(None, "--log-json/--log-text", help="JSON log lines"),
    clock_speed: float | None = typer.Option(
        None, "--clock-speed", min=0.001,
        help="simulated seconds per real second for what-if studies with `evfleet sim` (default 1: real "
             "time); the clock is shared with the optimizer and the simulator through Redis"),
    clock_start: str | None = typer.Option(
        None, "--clock-start", help="ISO time at which a new simulated clock starts (default now)"),
) -> None:
    """Run a csms node (OCPP 2.0.1 server, command executor, API, telemetry, smart charging)."""
    from csms.settings import default_data_dir

    settings = _settings(config, host=host, port=port, redis_url=redis_url, redis_prefix=redis_prefix,
                         redis_shards=redis_shards, data_dir=data_dir, node_id=node_id, tls_cert=tls_cert,
                         tls_key=tls_key,
                         tls_client_ca=tls_client_ca,
                         auto_register=auto_register, accept_all_tokens=accept_all_tokens,
                         api_enabled=api, api_host=api_host, api_port=api_port, api_auth=api_auth,
                         mqtt_url=mqtt_url, run_services=services, smart_charging=smart_charging,
                         default_site_limit_kw=site_limit_kw, log_level=log_level, log_json=log_json,
                         clock_speed=clock_speed, clock_start=clock_start)
    if settings.redis_url is None and settings.data_dir is None:
        settings = settings.model_copy(update={"data_dir": default_data_dir()})
    if settings.node_id is None:  # the same id in the log lines and in Redis
        from csms.app import default_node_id

        settings = settings.model_copy(update={"node_id": default_node_id()})
    serve(settings)


def serve(settings: Any) -> None:
    """`evfleet csms` with resolved settings: logging, the node until SIGINT/SIGTERM, one-line errors."""
    from redis.exceptions import RedisError

    from csms.runtime import event_loop_kind, new_event_loop
    from evfleet.clock import ClockConflict
    from evfleet.logs import configure_logging, redact
    from evfleet.store.layout import LayoutMismatch

    configure_logging(settings.log_level, settings.log_json, node_id=settings.node_id)
    log = logging.getLogger("csms")
    if settings.auto_register:
        log.warning("auto_register is ON: unknown stations are accepted (development only)")

    async def main() -> None:
        from csms.app import run_csms

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_csms(settings, None, stop)

    try:
        loop_kind = event_loop_kind(settings.event_loop, settings.slow_callback_ms)
        with asyncio.Runner(loop_factory=new_event_loop(loop_kind)) as runner:
            runner.run(main())
    except RedisError as err:  # unreachable, refused, wrong password: one line, no traceback
        _fail(f"cannot use Redis at {redact(settings.redis_url or 'the embedded Redis')}: {err}", 1)
    except LayoutMismatch as err:
        _fail(f"cannot start the csms: {err}", 1)
    except ClockConflict as err:
        _fail(f"cannot start the csms: {err}; join it with --clock-speed {err.live_speed:g}, "
              "or stop the process that runs it", 1)
    except OSError as err:
        _fail(f"cannot start the csms: {err}", 1)
    except Exception as err:  # a clear message instead of a traceback; details in the log
        log.exception("csms failed")
        _fail(f"csms failed: {type(err).__name__}: {err}", 1)


# --- management commands --------------------------------------------------------------------

def _run(config: Path | None, redis_url: str | None, prefix: str | None, data_dir: Path | None,
         op: Callable[[Any, Any, Any], Awaitable[T]]) -> T:
    """Run `op(redis, keys, settings)` against the configured (or embedded) Redis."""
    from redis.exceptions import RedisError

    from csms.store.provisioning import ProvisioningConflict, ProvisioningError

    settings = _settings(config, redis_url=redis_url, redis_prefix=prefix, data_dir=data_dir)

    async def go() -> T:
        from csms.store.admin import admin_redis
        from evfleet.store.layout import resolve_keys

        async with admin_redis(settings) as client:
            return await op(client, await resolve_keys(client, settings.redis_prefix, settings.redis_shards),
                            settings)

    from evfleet.store.layout import LayoutMismatch

    try:
        return asyncio.run(go())
    except LayoutMismatch as err:
        _fail(str(err), 1)
    except ProvisioningConflict as err:
        _fail(str(err), 1)
    except ProvisioningError as err:
        _fail(str(err))
    except RedisError as err:
        _fail(f"Redis error: {err}", 1)
    raise AssertionError("unreachable")


def _print_rows(rows: list[dict[str, Any]], as_json: bool, empty: str, header: str,
                line: Callable[[dict[str, Any]], str]) -> None:
    """A list command's output: JSON, a one-line note when there is nothing, or a table."""
    import json

    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif not rows:
        typer.echo(empty)
    else:
        typer.echo(header)
        for row in rows:
            typer.echo(line(row))


@stations_app.command("add")
def stations_add(
    station_id: str = typer.Argument(..., help="station identity (1-48 chars A-Z a-z 0-9 . _ -)"),
    password: str = typer.Option(..., "--password", prompt=True, hide_input=True,
                                 help="HTTP Basic password, 8-40 characters"),
    site: str | None = typer.Option(None, "--site", help="site id (default: keep, or 'default')"),
    compat: bool = typer.Option(False, "--compat/--strict",
                                help="accept (log and count) schema violations from this station"),
    profile: int = typer.Option(1, "--profile", min=1, max=3,
                                help="security profile: 1 (ws + password), 2 (wss + password) or 3 "
                                     "(wss + client certificate with CN = station id; no password "
                                     "login)"),
    iterations: int = typer.Option(100_000, "--iterations", min=1_000,
                                   help="PBKDF2 iterations for passwords under 16 characters "
                                        "(16+ characters use a fast keyed hash)"),
    ocpp: str | None = typer.Option(None, "--ocpp",
                                    help="OCPP version the station must speak: 1.6, 2.0.1, or auto (it "
                                         "chooses; 2.0.1 when it offers both). Default: keep"),
    config: Path | None = ConfigOpt, redis_url: str | None = RedisUrlOpt,
    redis_prefix: str | None = PrefixOpt, data_dir: Path | None = DataDirOpt,
) -> None:
    """Add a station or change its password/site/compat switch (stored as a salted hash)."""
    from csms.protocol.versions import PIN_VALUES
    from csms.store.provisioning import provision_station
    from csms.store.v16 import set_ocpp_version

    if ocpp is not None and ocpp not in PIN_VALUES:
        _fail(f"--ocpp must be one of {', '.join(PIN_VALUES)}, got {ocpp!r}")

    async def op(redis: Any, keys: Any, settings: Any) -> None:
        await provision_station(redis, keys, station_id, password, site, compat=compat,
                                security_profile=profile, iterations=iterations,
                                default_site_limit_kw=settings.default_site_limit_kw)
        if ocpp is not None:
            await set_ocpp_version(redis, keys, station_id, ocpp)

    _run(config, redis_url, redis_prefix, data_dir, op)
    typer.echo(f"station {station_id} provisioned (profile {profile}{', compat' if compat else ''})")


@stations_app.command("list")
def stations_list(config: Path | None = ConfigOpt, redis_url: str | None = RedisUrlOpt,
                  redis_prefix: str | None = PrefixOpt, data_dir: Path | None = DataDirOpt,
                  as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List provisioned stations with their state."""
    from csms.store.provisioning import list_stations

    def line(row: dict[str, Any]) -> str:
        vm = f"{row.get('vendor', '')}/{row.get('model', '')}".strip("/")
        return (f"{row['station_id']:<20} {row.get('site_id', ''):<12} "
                f"{'yes' if row.get('online') == '1' else 'no':<6} "
                f"{'yes' if row.get('compat') == '1' else 'no':<6} {vm:<28} {row.get('last_seen', '')}")

    rows = _run(config, redis_url, redis_prefix, data_dir, lambda r, k, s: list_stations(r, k))
    header = f"{'station':<20} {'site':<12} {'online':<6} {'compat':<6} {'vendor/model':<28} last_seen"
    _print_rows(rows, as_json, "no stations provisioned", header, line)


@stations_app.command("remove")
def stations_remove(station_id: str = typer.Argument(..., help="station id"), config: Path | None = ConfigOpt,
                    redis_url: str | None = RedisUrlOpt, redis_prefix: str | None = PrefixOpt,
                    data_dir: Path | None = DataDirOpt) -> None:
    """Remove a station (its transactions are kept); a connected one is disconnected and refused
    on reconnect."""
    from csms.protocol.commands import request_disconnect
    from csms.store.provisioning import remove_station
    from evfleet.store.client import as_str

    async def op(redis: Any, keys: Any, settings: Any) -> tuple[bool, str]:
        online, node = (as_str(v) for v in await redis.hmget(keys.station(station_id), ["online", "node"]))
        if not await remove_station(redis, keys, station_id):
            return False, ""
        if online != "1" or not node or not await redis.exists(keys.node(node)):
            return True, ""
        # credentials are gone, so it cannot reconnect; close the live connection on its node
        reply = await request_disconnect(redis, keys, station_id, node, "station removed")
        if reply is None:
            return True, f"; node {node} did not confirm the disconnect in time"
        if reply.outcome.value == "result":
            return True, f"; disconnected from node {node}"
        return True, f"; disconnect on node {node}: {reply.outcome.value}"

    removed, note = _run(config, redis_url, redis_prefix, data_dir, op)
    if not removed:
        _fail(f"unknown station {station_id!r}", 1)
    typer.echo(f"station {station_id} removed{note}")


@stations_app.command("compat")
def stations_compat(station_id: str = typer.Argument(..., help="station id"),
                    on: bool = typer.Option(..., "--on/--off", help="compatibility mode on or off"),
                    config: Path | None = ConfigOpt, redis_url: str | None = RedisUrlOpt,
                    redis_prefix: str | None = PrefixOpt, data_dir: Path | None = DataDirOpt) -> None:
    """Switch a station's schema-compatibility mode."""
    from csms.store.provisioning import set_station_compat

    _run(config, redis_url, redis_prefix, data_dir, lambda r, k, s: set_station_compat(r, k, station_id, on))
    typer.echo(f"station {station_id}: compat {'on' if on else 'off'}")


@sites_app.command("set")
def sites_set(site_id: str = typer.Argument(...),
              limit_kw: float = typer.Option(..., "--limit-kw", help="grid connection limit in kW"),
              name: str | None = typer.Option(None, "--name", help="display name (default: the site id)"),
              config: Path | None = ConfigOpt, redis_url: str | None = RedisUrlOpt,
              redis_prefix: str | None = PrefixOpt, data_dir: Path | None = DataDirOpt) -> None:
    """Create or update a site and its limit."""
    from csms.store.provisioning import set_site_limit

    _run(config, redis_url, redis_prefix, data_dir,
         lambda r, k, s: set_site_limit(r, k, site_id, limit_kw, name=name))
    typer.echo(f"site {site_id}: limit {limit_kw:g} kW")


@idtokens_app.command("add")
def idtokens_add(id_token: str = typer.Argument(..., help="id token (1-36 characters)"),
                 status: str = typer.Option("Accepted", help="Accepted, Blocked, Expired, Invalid, ..."),
                 token_type: str = typer.Option("ISO14443", "--type",
                                                help="OCPP IdTokenEnumType: ISO14443, ISO15693, eMAID, ..."),
                 group_id: str | None = typer.Option(None, "--group",
                                                     help="group id token (OCPP groupIdToken)"),
                 config: Path | None = ConfigOpt, redis_url: str | None = RedisUrlOpt,
                 redis_prefix: str | None = PrefixOpt, data_dir: Path | None = DataDirOpt) -> None:
    """Store an id token for Authorize."""
    from csms.core.authorization import KNOWN_STATUSES
    from csms.store.provisioning import add_id_token

    if status not in KNOWN_STATUSES:
        _fail(f"status must be one of {', '.join(sorted(KNOWN_STATUSES))}")
    _run(config, redis_url, redis_prefix, data_dir,
         lambda r, k, s: add_id_token(r, k, id_token, status, token_type, group_id))
    typer.echo(f"id token {id_token}: {status}")


@sites_app.command("list")
def sites_list(config: Path | None = ConfigOpt, redis_url: str | None = RedisUrlOpt,
               redis_prefix: str | None = PrefixOpt, data_dir: Path | None = DataDirOpt,
               as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List sites with their limit and number of stations."""
    from csms.store.provisioning import list_sites

    def line(row: dict[str, Any]) -> str:
        limit = f"{float(row['limit_kw']):g}" if row.get("limit_kw") else "unset"
        return f"{row['site_id']:<20} {limit:>9} {row['stations']:>8}  {row.get('name', '')}"

    rows = _run(config, redis_url, redis_prefix, data_dir, lambda r, k, s: list_sites(r, k))
    _print_rows(rows, as_json, "no sites", f"{'site':<20} {'limit kW':>9} {'stations':>8}  name", line)


@sites_app.command("remove")
def sites_remove(site_id: str = typer.Argument(..., help="site id"), config: Path | None = ConfigOpt,
                 redis_url: str | None = RedisUrlOpt, redis_prefix: str | None = PrefixOpt,
                 data_dir: Path | None = DataDirOpt) -> None:
    """Remove a site that has no stations (its limit, name and prices)."""
    from csms.store.provisioning import remove_site

    _run(config, redis_url, redis_prefix, data_dir, lambda r, k, s: remove_site(r, k, site_id))
    typer.echo(f"site {site_id} removed")


@idtokens_app.command("list")
def idtokens_list(config: Path | None = ConfigOpt, redis_url: str | None = RedisUrlOpt,
                  redis_prefix: str | None = PrefixOpt, data_dir: Path | None = DataDirOpt,
                  as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List the known id tokens with their type, status and group."""
    from csms.store.provisioning import list_id_tokens

    def line(row: dict[str, Any]) -> str:
        return (f"{row['id_token']:<38} {row.get('type', ''):<10} {row.get('status', ''):<10} "
                f"{row.get('group_id', '')}")

    rows = _run(config, redis_url, redis_prefix, data_dir, lambda r, k, s: list_id_tokens(r, k))
    _print_rows(rows, as_json, "no id tokens", f"{'id token':<38} {'type':<10} {'status':<10} group", line)


@idtokens_app.command("remove")
def idtokens_remove(id_token: str = typer.Argument(..., help="id token"), config: Path | None = ConfigOpt,
                    redis_url: str | None = RedisUrlOpt, redis_prefix: str | None = PrefixOpt,
                    data_dir: Path | None = DataDirOpt) -> None:
    """Forget an id token (Authorize answers Unknown from now on)."""
    from csms.store.provisioning import remove_id_token

    _run(config, redis_url, redis_prefix, data_dir, lambda r, k, s: remove_id_token(r, k, id_token))
    typer.echo(f"id token {id_token} removed")


@redis_app.command("migrate-keys")
def redis_migrate_keys(
    shards: int = typer.Option(..., "--shards", min=1, max=16384,
                               help="shards of the Redis Cluster layout (e.g. 16)"),
    to: str | None = typer.Option(None, "--to", help="write into this Redis instead (e.g. the new "
                                                    "redis+cluster:// URL); default: rename in place"),
    force: bool = typer.Option(False, "--force", help="run although a csms node heartbeat is live"),
    config: Path | None = ConfigOpt, redis_url: str | None = RedisUrlOpt,
    redis_prefix: str | None = PrefixOpt, data_dir: Path | None = DataDirOpt,
) -> None:
    """Move an unsharded deployment's keys to the Redis Cluster layout (stop nodes and workers first)."""
    from csms.store.admin import admin_redis
    from csms.store.reshard import MigrationRefused, migrate_keys
    from evfleet.store.client import connect_redis

    settings = _settings(config, redis_url=redis_url, redis_prefix=redis_prefix, data_dir=data_dir)

    async def go() -> Any:
        async with admin_redis(settings) as source:
            target = connect_redis(to) if to else source
            try:
                return await migrate_keys(source, target, settings.redis_prefix, shards, force=force)
            finally:
                if to:
                    await target.aclose()

    try:
        report = asyncio.run(go())
    except MigrationRefused as err:
        _fail(str(err), 1)
    typer.echo(f"{report.renamed} keys moved, {report.kept} copied as they are, {report.events} events, "
               f"{report.active} active and {report.by_start} started transactions split into "
               f"{shards} shards")
