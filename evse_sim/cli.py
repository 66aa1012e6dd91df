"""`evfleet sim`: run a simulated fleet against a CSMS with live progress (see docs/simulator.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from evfleet.config import given_flags, load_or_exit, option
from evse_sim.settings import HLC_MODES, JOSEV_MAX_STATIONS, SimSettings

if TYPE_CHECKING:  # pragma: no cover
    from evse_sim.hlc import HlcLink
    from evse_sim.station import SimStation

DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def parse_duration(text: str) -> timedelta:
    """'90m', '24h', '2d', '3600' (seconds) -> timedelta; raises typer.BadParameter."""
    match = DURATION_RE.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 3600, 90m, 24h or 2d")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return timedelta(seconds=value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def read_password_file(path: Path) -> tuple[str | None, dict[str, str]]:
    """A password file: one line = shared password; or lines 'station_id password' / 'station_id:password'."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    except OSError as err:
        raise typer.BadParameter(f"cannot read password file {path}: {err}") from err
    if len(lines) == 1 and not re.search(r"[\s:]", lines[0]):
        return lines[0], {}
    per_station: dict[str, str] = {}
    for ln in lines:
        sid, _, pwd = ln.replace(":", " ", 1).partition(" ")
        if not pwd.strip():
            raise typer.BadParameter(f"password file {path}: line {ln!r} is not 'station_id password'")
        per_station[sid] = pwd.strip()
    return None, per_station


def hlc_factory(mode: str, links: list[Any] | None = None,
                iso15118: str = "2") -> Callable[[SimStation], HlcLink | None] | None:
    """The fleet's per-station HLC link for `--hlc` (None: the fleet's default, `BasicHlc`).

    `iso15118` ("2" or "20") is the protocol of the `josev` links' AC EVSEs (`--iso15118`).
    `josev` links are appended to `links`: each must be opened (`await link.open(station)`) before
    the station's EVs plug in, and closed at the end (`open_josev_links`, `close_josev_links`).
    """
    if mode == "modelled":
        from evse_sim.iso15118.link import ModelledHlcLink

        return lambda station: ModelledHlcLink()
    if mode == "josev":
        from evse_sim.iso15118.link import JosevHlcLink

        def make(station: SimStation) -> HlcLink:
            link = JosevHlcLink(protocol=iso15118)
            if links is not None:
                links.append((station, link))
            return link
        return make
    if mode in ("basic", "none"):  # none: no EV is an HLC EV, so the link is never used
        return None
    raise ValueError(f"unknown HLC mode {mode!r} (one of {', '.join(HLC_MODES)})")


ProvisionStation = Callable[..., Awaitable[None]]
"""How `--provision-redis` stores one station: ``(redis, keys, station_id, password, site_id=...)``.
The composition root (`evfleet.app.cli`) passes the csms's `provision_station`, so the simulator
never imports the csms."""

_wiring: dict[str, ProvisionStation | None] = {"provision_station": None}


def register(app: typer.Typer, provision_station: ProvisionStation | None = None) -> None:
    """Add `evfleet sim` to the root app (`provision_station` enables `--provision-redis`)."""
    _wiring["provision_station"] = provision_station
    app.command("sim")(sim)


S = SimSettings


def sim(  # noqa: PLR0913 - one parameter per option, each one line
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", envvar="EVFLEET_CONFIG",
                                       help="TOML configuration file ([sim] table or top level)"),
    csms: str | None = option(S, "csms"),
    stations: int | None = option(S, "stations", min=1),
    scenario: str = option(S, "scenario"),
    seed: int | None = option(S, "seed"),
    speed: float | None = option(S, "speed", min=0.001),
    duration: str | None = option(S, "duration"),
    start: str = option(S, "start"),
    password: str | None = option(S, "password"),
    password_file: Path | None = option(S, "password_file"),
    tls_ca: Path | None = option(S, "tls_ca"),
    client_certs: Path | None = option(S, "client_certs"),
    ramp_per_s: float = option(S, "ramp_per_s", min=0.0),
    tick: float = option(S, "tick", min=0.01),
    meter_interval: int = option(S, "meter_interval", min=0),
    aligned_interval: int = option(S, "aligned_interval", min=0),
    hlc: str = option(S, "hlc"),
    iso15118: str = option(S, "iso15118"),
    no_hlc: bool = option(S, "no_hlc"),
    authorize: bool = option(S, "authorize"),
    ocpp: str = option(S, "ocpp"),
    drop_rate: float = option(S, "drop_rate", min=0.0),
    drop_seconds: float = option(S, "drop_seconds", min=0.0),
    clock_redis: str | None = option(S, "clock_redis"),
    provision_redis: str | None = option(S, "provision_redis"),
    site: str = option(S, "site"),
    report: Path | None = option(S, "report"),
    quiet: bool = option(S, "quiet"),
    log_level: str = option(S, "log_level"),
    log_json: bool = option(S, "log_json", "--log-json/--log-text"),
) -> None:
    """Run a simulated fleet of OCPP 2.0.1 and/or 1.6J stations and EVs against a CSMS."""
    values = {k: v for k, v in locals().items() if k not in ("ctx", "config")}
    run_sim(load_or_exit(SimSettings, config, **given_flags(ctx, values)))


def run_sim(s: SimSettings) -> None:
    """`evfleet sim` with resolved settings: check them, run the fleet, print the summary."""
    from evfleet.logs import configure_logging

    configure_logging(s.log_level, s.log_json)
    scen, hlc_mode, passwords = _prepare(s)
    try:
        summary = asyncio.run(_run(scen, s, hlc_mode, passwords))
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: a Josev SECC did not start
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if s.report is not None:
        s.report.write_text(json.dumps(summary, indent=1, default=str))
    stats, outcome = summary["stats"], summary["outcome"]
    typer.echo(
        f"{stats['stations']} stations ({outcome['connected']} connected, {outcome['booted']} booted, "
        f"{outcome['charged']} charged), {stats['visits_started']} EV visits, "
        f"{stats['energy_kwh']:.1f} kWh delivered, {stats['sent']} messages sent, "
        f"{stats['errors']} errors"
    )
    if summary["failure"]:
        typer.echo(f"error: {summary['failure']}", err=True)
        raise typer.Exit(1)


def _usage(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _prepare(s: SimSettings) -> tuple[Any, str, tuple[str | None, dict[str, str]]]:
    """The scenario, the HLC mode and the passwords; a usage error exits 2 with one line."""
    from evse_sim.scenarios import ScenarioError, load_scenario

    passwords: tuple[str | None, dict[str, str]] = (s.password, {})
    try:
        if s.password_file is not None:
            passwords = read_password_file(s.password_file)
        hlc_mode = s.hlc_mode()
        s.check_iso15118()
        scen = load_scenario(s.scenario, stations=s.stations, seed=s.seed)
        if s.duration:
            parse_duration(s.duration)
    except (ScenarioError, ValueError) as err:  # typer.BadParameter goes to the root's usage message
        _usage(str(err))
    if hlc_mode == "none":
        scen = scen.model_copy(update={"evs": [e.model_copy(update={"hlc": False}) for e in scen.evs]})
    if hlc_mode == "josev":
        _check_josev(len(scen.stations))
    return scen, hlc_mode, passwords


def _anchor(scen: Any, start: str) -> datetime:
    """The simulated start: the scenario's, now, or an ISO time (naive = UTC)."""
    from evfleet.clock import RealClock
    from evfleet.isotime import IsoTimeError, parse_iso

    if start == "scenario":
        return cast(datetime, scen.start)
    if start == "now":
        return RealClock().now().replace(microsecond=0)
    try:
        return parse_iso(start)
    except IsoTimeError as err:
        raise ValueError(f"--start: {start!r} is not 'scenario', 'now' or an ISO time") from err


def _fleet_config(s: SimSettings, passwords: tuple[str | None, dict[str, str]], speed: float) -> Any:
    from evse_sim.fleet import FleetConfig

    return FleetConfig(
        s.csms, password=passwords[0], passwords=passwords[1],
        tls_ca=str(s.tls_ca) if s.tls_ca else None,
        client_cert_dir=str(s.client_certs) if s.client_certs else None,
        ramp_per_s=s.ramp_per_s, tick_real_s=s.tick, tx_updated_interval_s=s.meter_interval,
        aligned_interval_s=s.aligned_interval, drop_rate_per_h=s.drop_rate, drop_real_s=s.drop_seconds,
        authorize=s.authorize, max_clock_skew_s=max(CLOCK_SKEW_MIN_S, CLOCK_SKEW_REAL_S * speed),
        ocpp=s.ocpp, seed=s.seed,
    )


async def _run(scen: Any, s: SimSettings, hlc_mode: str,
               passwords: tuple[str | None, dict[str, str]]) -> dict[str, Any]:
    import ocpp.messages

    from evfleet.clock import ScaledClock, keep_clock_alive
    from evse_sim.fleet import FleetRunner

    ocpp.messages.ASYNC_VALIDATION = False  # validate inline: no thread hop per message at fleet scale
    anchor = _anchor(scen, s.start)
    redis = None
    heartbeat: asyncio.Task[None] | None = None
    if s.clock_redis:
        clock, redis = await _join_clock(s.clock_redis, s.speed, anchor)
        scen = scen.at(clock.now())
        heartbeat = asyncio.create_task(keep_clock_alive(redis, _clock_key(), clock.spec()))
    else:
        clock = ScaledClock(anchor, s.speed or 1.0)
        scen = scen.at(anchor)
    if s.provision_redis:
        await _provision(s.provision_redis, s.site, _provisioner(_wiring["provision_station"]), scen,
                         *passwords)
    josev_links: list[Any] = []
    runner = FleetRunner(scen, clock, _fleet_config(s, passwords, clock.speed),
                         hlc_factory=hlc_factory(hlc_mode, josev_links, s.iso15118))
    if josev_links:
        await open_josev_links(josev_links, s.quiet)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop)
    display = None if s.quiet else asyncio.create_task(_live(runner))
    try:
        stats = await runner.run(parse_duration(s.duration) if s.duration else None)
    finally:
        for task in (display, heartbeat):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if redis is not None:
            await redis.aclose()
        await close_josev_links(josev_links)
    if runner.clock_error is not None:
        raise ClockMismatch(
            f"{runner.clock_error}; run the csms with --clock-speed {clock.speed:g} and the sim with "
            "--clock-redis URL, or the sim in real time (--speed 1 --start now)")
    return _summary(scen, clock, runner, stats)


def _summary(scen: Any, clock: Any, runner: Any, stats: Any) -> dict[str, Any]:
    """The `--report` JSON: stats, outcome, per-station first errors, visits."""
    from dataclasses import asdict

    outcome = runner.outcome()
    return {
        "scenario": scen.name,
        "stations": len(scen.stations),
        "speed": clock.speed,
        "run_seed": runner.run_seed,
        "stats": asdict(stats),
        "outcome": asdict(outcome),
        "failure": outcome.failure,
        "station_errors": {sid: st.stats.first_error for sid, st in runner.stations.items()
                           if st.stats.first_error},
        "visits": [asdict(v) for v in runner.visits()],
    }


def _check_josev(stations: int) -> None:
    """One-line errors before anything starts: too many stations, or real ISO 15118 impossible here."""
    from evse_sim.iso15118.netns import check

    if stations > JOSEV_MAX_STATIONS:
        typer.echo(f"error: --hlc josev runs real Josev processes (a JVM per EVSE and per visit): at most "
                   f"{JOSEV_MAX_STATIONS} stations, got {stations} (use --stations N or --hlc modelled)",
                   err=True)
        raise typer.Exit(2)
    cap = check()
    if not cap.ok:
        typer.echo(f"error: --hlc josev: {cap.explain()}", err=True)
        raise typer.Exit(2)


async def open_josev_links(links: list[Any], quiet: bool = False) -> None:
    """Start the Josev SECCs (namespace, veth pair, JVM) of every station before EVs arrive."""
    for station, link in links:
        if not quiet:
            print(f"starting Josev SECCs of {station.id} ...", flush=True)
        await link.open(station)


async def close_josev_links(links: list[Any]) -> None:
    """Stop every Josev process and namespace."""
    for _station, link in links:
        await link.close()


CLOCK_SKEW_MIN_S = 300.0  # the CSMS's currentTime may be this far off our clock [clock s] ...
CLOCK_SKEW_REAL_S = 5.0  # ... or this many real seconds of answer latency, whichever is more


class ClockMismatch(ValueError):
    """The CSMS under test does not run on the simulation's clock."""


REDIS_ANSWER_S = 15.0  # real seconds a --clock-redis/--provision-redis server has to answer


class RedisUnreachable(RuntimeError):
    """A Redis named on the command line did not answer (down, wrong address, not a Redis)."""


@contextlib.asynccontextmanager
async def _answering(option_name: str, url: str) -> AsyncIterator[None]:
    """Bound the Redis calls inside to REDIS_ANSWER_S; no answer or no server -> RedisUnreachable."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        async with asyncio.timeout(REDIS_ANSWER_S):
            yield
    except TimeoutError:
        raise RedisUnreachable(f"{option_name} {url}: no answer within {REDIS_ANSWER_S:g} s "
                               "(is a Redis listening there?)") from None
    except (RedisConnectionError, RedisTimeoutError) as err:
        raise RedisUnreachable(f"{option_name} {url}: {err}") from None


def _clock_key() -> str:
    from evfleet.keys import Keys

    return Keys().clock()


async def _join_clock(url: str, speed: float | None, anchor: datetime) -> tuple[Any, Any]:
    """The deployment's clock in the Redis at `url` (joined or started at `anchor`), and the client."""
    import socket

    from evfleet.clock import ClockConflict, ScaledClock, acquire_clock
    from evfleet.store.client import connect_redis

    redis = connect_redis(url)
    try:
        async with _answering("--clock-redis", url):
            clock, _created = await acquire_clock(redis, _clock_key(), speed, f"sim:{socket.gethostname()}:"
                                                  f"{os.getpid()}", anchor)
    except ClockConflict as err:
        await redis.aclose()
        raise ClockMismatch(f"--speed {speed:g}: {err}; drop --speed to join it") from None
    except BaseException:
        await redis.aclose()
        raise
    if not isinstance(clock, ScaledClock):  # real time: a 1x scaled clock anchored now, shared by nobody
        clock = ScaledClock(clock.now(), 1.0)
    return clock, redis


def _provisioner(provision_station: ProvisionStation | None) -> ProvisionStation:
    if provision_station is None:
        raise typer.BadParameter("this command line cannot provision stations (no csms wired in)",
                                 param_hint="--provision-redis")
    return provision_station


async def _provision(url: str, site_id: str, provision_station: ProvisionStation, scen: Any,
                     password: str | None, passwords: dict[str, str]) -> None:
    from evfleet.store.client import connect_redis
    from evfleet.store.layout import resolve_keys

    redis = connect_redis(url)
    try:
        async with _answering("--provision-redis", url):
            keys = await resolve_keys(redis, "evfleet")  # the deployment's layout (Redis Cluster: sharded)
        for st in scen.stations:
            pwd = passwords.get(st.id, password)
            if not pwd:
                raise ValueError(f"--provision-redis needs a password for {st.id}")
            async with _answering("--provision-redis", url):
                await provision_station(redis, keys, st.id, pwd, site_id=site_id)
    finally:
        await redis.aclose()


async def _live(runner: Any) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    def render() -> Text:
        s = runner.stats()
        when = s.sim_time.strftime("%Y-%m-%d %H:%M") if s.sim_time else "-"
        text = Text()
        text.append(f"evfleet sim {runner.scenario.name}  ", style="bold")
        text.append(f"{when}\n")
        text.append(
            f"online {s.connected}/{s.stations}  EVs {s.plugged}  charging {s.charging}  "
            f"{s.power_kw:,.0f} kW  {s.energy_kwh:,.1f} kWh delivered\n"
        )
        text.append(f"sent {s.sent}  received {s.received}  queued {s.queued}  ")
        text.append(f"errors {s.errors}", style="red" if s.errors else "")
        if s.drops:
            text.append(f"  link drops {s.drops}")
        return text

    with Live(render(), console=Console(stderr=True), refresh_per_second=2, transient=False) as live:
        while True:
            await asyncio.sleep(0.5)
            live.update(render())
