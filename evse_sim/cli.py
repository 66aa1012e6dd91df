"""`evfleet sim`: run a simulated fleet against a CSMS with live progress (see docs/simulator.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

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


HLC_MODES = ("basic", "modelled", "josev", "none")
JOSEV_MAX_STATIONS = 10  # each AC EVSE runs a Josev SECC JVM, each HLC visit a Josev EVCC JVM


def hlc_factory(mode: str, links: list[Any] | None = None) -> Callable[[SimStation], HlcLink | None] | None:
    """The fleet's per-station HLC link for `--hlc` (None: the fleet's default, `BasicHlc`).

    `josev` links are appended to `links`: each must be opened (`await link.open(station)`) before
    the station's EVs plug in, and closed at the end (`open_josev_links`, `close_josev_links`).
    """
    if mode == "modelled":
        from evse_sim.iso15118.link import ModelledHlcLink

        return lambda station: ModelledHlcLink()
    if mode == "josev":
        from evse_sim.iso15118.link import JosevHlcLink

        def make(station: SimStation) -> HlcLink:
            link = JosevHlcLink()
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


def register(app: typer.Typer, provision_station: ProvisionStation | None = None) -> None:
    """Add `evfleet sim` to the root app (`provision_station` enables `--provision-redis`)."""

    @app.command("sim")
    def sim(
        csms: str = typer.Option(..., "--csms", help="CSMS base URL, e.g. ws://127.0.0.1:9000/ocpp"),
        stations: int | None = typer.Option(
            None, "--stations", min=1, help="fleet size (default: the scenario's)"
        ),
        scenario: str = typer.Option(
            "seed001", "--scenario", help="seed001 | seed003 | seed004 | random | path to a scenario JSON"
        ),
        seed: int | None = typer.Option(
            None, "--seed",
            help="seed of the scenario and the stations (transaction ids); default: a fresh one per run",
        ),
        speed: float | None = typer.Option(
            None, "--speed", min=0.001,
            help="simulated seconds per real second (default 1, or the speed of the clock joined with "
            "--clock-redis); the csms must run on the same clock (see docs/simulator.md)",
        ),
        duration: str | None = typer.Option(
            None, "--duration", help="simulated time to run (90m, 24h...); default: the scenario horizon"
        ),
        start: str = typer.Option(
            "scenario", "--start", help="'scenario' (its own start), 'now', or ISO time"
        ),
        password: str | None = typer.Option(
            None, "--password", help="Basic-auth password (security profile 1/2)"
        ),
        password_file: Path | None = typer.Option(
            None, "--password-file", help="shared or per-station passwords"
        ),
        tls_ca: Path | None = typer.Option(
            None, "--tls-ca", help="CA certificate for wss:// (security profile 2)"
        ),
        client_certs: Path | None = typer.Option(
            None, "--client-certs",
            help="directory with {station_id}.pem and .key: client certificates (security profile 3)",
        ),
        ramp_per_s: float = typer.Option(
            50.0, "--ramp-per-s", min=0.0, help="stations started per second (0 = all)"
        ),
        tick: float = typer.Option(0.5, "--tick", min=0.01, help="real seconds between simulation steps"),
        meter_interval: int = typer.Option(60, "--meter-interval", min=0, help="TxUpdatedInterval [clock s]"),
        aligned_interval: int = typer.Option(
            300, "--aligned-interval", min=0, help="MeterValues interval [clock s], 0 = off"
        ),
        hlc: str = typer.Option(
            "basic",
            "--hlc",
            help="ISO 15118 link of HLC EVs: basic (announce needs, follow the limit), modelled "
            "(the modelled ISO 15118-2 session: SAScheduleList, EV's own plan), josev (real ISO 15118-2 "
            f"AC sessions with Josev over veth pairs; at most {JOSEV_MAX_STATIONS} stations; "
            "`evfleet iso15118 check`) or none (no HLC EVs)",
        ),
        no_hlc: bool = typer.Option(False, "--no-hlc", help="same as --hlc none"),
        authorize: bool = typer.Option(
            False, "--authorize", help="send Authorize for EV id tokens; charge once Accepted"
        ),
        ocpp: str = typer.Option(
            "2.0.1", "--ocpp", help="OCPP version of the stations: 2.0.1, 1.6 (OCPP 1.6J) or mixed "
            "(every second station 1.6J)"
        ),
        drop_rate: float = typer.Option(
            0.0, "--drop-rate", min=0.0, help="fault injection: link drops per station per simulated hour"
        ),
        drop_seconds: float = typer.Option(
            10.0, "--drop-seconds", min=0.0, help="real seconds a dropped station stays offline"
        ),
        clock_redis: str | None = typer.Option(
            None,
            "--clock-redis",
            help="run on the deployment's clock in this csms Redis: join the live simulated clock "
            "(`evfleet csms --clock-speed`), or start one there",
        ),
        provision_redis: str | None = typer.Option(
            None, "--provision-redis", help="first provision the stations in this csms Redis"
        ),
        site: str = typer.Option(
            "default", "--site",
            help="csms site the stations are provisioned on (with --provision-redis; default: the csms's "
            "default site, whose limit `evfleet sites set default` sets)",
        ),
        report: Path | None = typer.Option(None, "--report", help="write a JSON summary (stats + visits)"),
        quiet: bool = typer.Option(False, "--quiet", help="no live display; print the summary only"),
        log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING, ERROR"),
    ) -> None:
        """Run a simulated fleet of OCPP 2.0.1 and/or 1.6J stations and EVs against a CSMS."""
        from evse_sim.fleet import OCPP_CHOICES
        from evse_sim.scenarios import ScenarioError, load_scenario

        logging.basicConfig(
            level=getattr(logging, log_level.upper(), logging.WARNING),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("ocpp").setLevel(max(logging.WARNING, logging.getLogger().level))
        if not re.match(r"^wss?://", csms):
            raise typer.BadParameter("must start with ws:// or wss://", param_hint="--csms")
        if tls_ca is not None and not tls_ca.exists():
            raise typer.BadParameter(f"{tls_ca} does not exist", param_hint="--tls-ca")
        if client_certs is not None and not client_certs.is_dir():
            raise typer.BadParameter(f"{client_certs} is not a directory", param_hint="--client-certs")
        shared: str | None = password
        per_station: dict[str, str] = {}
        if password_file is not None:
            shared, per_station = read_password_file(password_file)
        try:
            scen = load_scenario(scenario, stations=stations, seed=seed)
        except ScenarioError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        if ocpp not in OCPP_CHOICES:
            raise typer.BadParameter(f"{ocpp!r} is not one of {', '.join(OCPP_CHOICES)}", param_hint="--ocpp")
        hlc_mode = hlc.strip().lower()
        if hlc_mode not in HLC_MODES:
            raise typer.BadParameter(
                f"{hlc!r} is not one of {', '.join(HLC_MODES)}", param_hint="--hlc"
            )
        if no_hlc:
            if hlc_mode not in ("basic", "none"):
                raise typer.BadParameter(f"--no-hlc contradicts --hlc {hlc_mode}", param_hint="--hlc")
            hlc_mode = "none"
        if hlc_mode == "none":
            scen = scen.model_copy(update={"evs": [e.model_copy(update={"hlc": False}) for e in scen.evs]})
        if hlc_mode == "josev":
            _check_josev(len(scen.stations))
        wanted = parse_duration(duration) if duration else None
        try:
            summary = asyncio.run(
                _run(
                    scen,
                    csms,
                    speed,
                    wanted,
                    start,
                    shared,
                    per_station,
                    tls_ca,
                    client_certs,
                    ramp_per_s,
                    tick,
                    meter_interval,
                    aligned_interval,
                    clock_redis,
                    (provision_redis, site, _provisioner(provision_station)) if provision_redis else None,
                    quiet,
                    drop_rate,
                    drop_seconds,
                    authorize,
                    hlc_mode,
                    ocpp,
                    seed,
                )
            )
        except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: a Josev SECC did not start
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        if report is not None:
            report.write_text(json.dumps(summary, indent=1, default=str))
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


async def _run(
    scen: Any,
    csms: str,
    speed: float | None,
    duration: timedelta | None,
    start: str,
    password: str | None,
    passwords: dict[str, str],
    tls_ca: Path | None,
    client_certs: Path | None,
    ramp_per_s: float,
    tick: float,
    meter_interval: int,
    aligned_interval: int,
    clock_redis: str | None,
    provision: tuple[str, str, ProvisionStation] | None,
    quiet: bool,
    drop_rate: float = 0.0,
    drop_seconds: float = 10.0,
    authorize: bool = False,
    hlc_mode: str = "basic",
    ocpp_version: str = "2.0.1",
    seed: int | None = None,
) -> dict[str, Any]:
    from dataclasses import asdict

    import ocpp.messages

    from evfleet.clock import RealClock, ScaledClock, keep_clock_alive
    from evse_sim.fleet import FleetConfig, FleetRunner

    ocpp.messages.ASYNC_VALIDATION = False  # validate inline: no thread hop per message at fleet scale
    if start == "scenario":
        anchor = scen.start
    elif start == "now":
        anchor = RealClock().now().replace(microsecond=0)
    else:
        try:
            anchor = datetime.fromisoformat(start)
        except ValueError as err:
            raise ValueError(f"--start: {start!r} is not 'scenario', 'now' or an ISO time") from err
        if anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=UTC)
    redis = None
    heartbeat: asyncio.Task[None] | None = None
    if clock_redis:
        clock, redis = await _join_clock(clock_redis, speed, anchor)
        scen = scen.at(clock.now())
        heartbeat = asyncio.create_task(keep_clock_alive(redis, _clock_key(), clock.spec()))
    else:
        clock = ScaledClock(anchor, speed or 1.0)
        scen = scen.at(anchor)
    if provision is not None:
        await _provision(*provision, scen, password, passwords)
    josev_links: list[Any] = []
    runner = FleetRunner(
        scen,
        clock,
        FleetConfig(
            csms,
            password=password,
            passwords=passwords,
            tls_ca=str(tls_ca) if tls_ca else None,
            client_cert_dir=str(client_certs) if client_certs else None,
            ramp_per_s=ramp_per_s,
            tick_real_s=tick,
            tx_updated_interval_s=meter_interval,
            aligned_interval_s=aligned_interval,
            drop_rate_per_h=drop_rate,
            drop_real_s=drop_seconds,
            authorize=authorize,
            max_clock_skew_s=max(CLOCK_SKEW_MIN_S, CLOCK_SKEW_REAL_S * clock.speed),
            ocpp=ocpp_version,
            seed=seed,
        ),
        hlc_factory=hlc_factory(hlc_mode, josev_links),
    )
    if josev_links:
        await open_josev_links(josev_links, quiet)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop)
    display = None if quiet else asyncio.create_task(_live(runner))
    try:
        stats = await runner.run(duration)
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
    from evfleet.keys import Keys
    from evfleet.store.client import connect_redis

    redis = connect_redis(url)
    try:
        for st in scen.stations:
            pwd = passwords.get(st.id, password)
            if not pwd:
                raise ValueError(f"--provision-redis needs a password for {st.id}")
            await provision_station(redis, Keys(), st.id, pwd, site_id=site_id)
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
