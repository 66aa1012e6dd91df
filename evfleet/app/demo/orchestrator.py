"""`evfleet demo` at the edge: start every component, run the simulated window, stop, report.

One process, one asyncio loop, one `ScaledClock` handed to every component (and published
in the `evfleet:clock` hash). Order of start: embedded Redis, provisioning (site limit,
prices, stations), csms with its dashboard, optimizer worker, simulated fleet. Order of
stop is the reverse; the report is computed from what is left in Redis before Redis stops.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
import time
import webbrowser
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from csms.store.embedded import EmbeddedRedis, free_port, port_free
from evfleet.app.demo import components
from evfleet.app.demo.chart import render_chart
from evfleet.app.demo.collect import LiveStatus, MeasuredTransaction, read_live_status, read_transactions
from evfleet.app.demo.config import DemoConfig, DemoConfigError
from evfleet.app.demo.outcome import DemoRuns, compute_runs
from evfleet.app.demo.progress import DemoProgress
from evfleet.clock import ScaledClock
from evfleet.keys import Keys

log = logging.getLogger("evfleet.demo")

STATUS_PERIOD_S = 0.5  # real seconds between progress updates
STATUS_TIMEOUT_S = 3.0  # a status read taking longer is skipped


class DemoError(RuntimeError):
    """The demo could not run (a component failed to start or crashed); the message says which."""


@dataclass(frozen=True)
class DemoOutcome:
    """Where the report went and what it says."""

    report_path: Path
    chart_path: Path | None
    report: dict[str, Any]
    interrupted: bool
    wall_s: float


def choose_port(requested: int, preferred: int | None, option: str) -> int:
    """`requested` (which must be free), else `preferred` when free, else any free port."""
    if requested:
        if not port_free(requested):
            raise DemoConfigError(f"{option} {requested} is already in use")
        return requested
    return preferred if preferred and port_free(preferred) else free_port()


def open_browser(url: str, console: Console) -> None:
    """Open the dashboard in a graphical browser if there is one; never fail."""
    graphical = sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if not graphical:  # a console browser would take over the terminal
        console.print("(no graphical display: open the URL above yourself)")
        return
    try:
        if not webbrowser.open(url, new=2):
            console.print("(no browser found: open the URL above yourself)")
    except Exception as err:  # webbrowser raises assorted errors on odd systems; never fatal
        log.warning("could not open a browser: %s", err)
        console.print("(could not open a browser: open the URL above yourself)")


async def _wait_window(end: datetime, clock: ScaledClock, stop: asyncio.Event, status_fn: Any,
                       progress: DemoProgress, watched: list[asyncio.Task[None]]) -> bool:
    """Run until the simulated window ends (False) or `stop` is set (True); raise if a component died."""
    while True:
        for task in watched:
            if task.done():
                exc = task.exception() if not task.cancelled() else None
                raise DemoError(f"{task.get_name()} stopped unexpectedly"
                                + (f": {type(exc).__name__}: {exc}" if exc else ""))
        now = clock.now()
        try:
            status: LiveStatus = await asyncio.wait_for(status_fn(), STATUS_TIMEOUT_S)
            progress.update(now, status)
        except Exception as err:  # a slow or failed Redis read must not stop or hang the demo
            log.warning("progress status read failed: %s: %s", type(err).__name__, err)
        if now >= end:
            return False
        try:
            async with asyncio.timeout(STATUS_PERIOD_S):
                await stop.wait()
            return True
        except TimeoutError:
            pass


async def run_demo(cfg: DemoConfig, console: Console, stop: asyncio.Event) -> DemoOutcome:
    """Run the whole demo; returns where the report is. `stop` set = end early (Ctrl-C/SIGTERM)."""
    t0 = time.monotonic()
    keys = Keys()
    plan = components.build_plan(cfg)
    console.print(f"evfleet demo: scenario [bold]{cfg.scenario}[/], {len(plan.station_ids)} stations, "
                  f"{len(plan.cars)} cars ({sum(c.iso15118 for c in plan.cars)} with ISO 15118 needs), "
                  f"site limit {plan.site_limit_kw:.0f} kW, strategy {cfg.strategy}, "
                  f"{cfg.duration.total_seconds() / 3600:g} h at {cfg.speed:g}x "
                  f"(about {cfg.wall_seconds:.0f} s)")
    window_end = plan.start + cfg.duration
    redis_server = EmbeddedRedis()
    await asyncio.to_thread(redis_server.start)
    interrupted = False
    try:
        redis = components.connect(redis_server.url)
        try:
            clock = ScaledClock(plan.start, cfg.speed)
            await components.provision(redis, keys, cfg, plan, clock)
            async with AsyncExitStack() as stack:
                ocpp_port = choose_port(cfg.ocpp_port, None, "--port")
                api_port = choose_port(cfg.api_port, 8080, "--api-port")
                csms, csms_stop = await components.start_csms(redis_server.url, keys, clock, cfg, plan,
                                                              ocpp_port, api_port)
                stack.push_async_callback(components.stop_csms, csms, csms_stop)
                url = f"http://127.0.0.1:{api_port}/"
                console.print(f"dashboard: [link={url}]{url}[/link]   OCPP: ws://127.0.0.1:{ocpp_port}/ocpp")
                if cfg.open_browser:
                    open_browser(url, console)
                worker = asyncio.create_task(
                    components.run_worker(redis_server.url, keys, clock, cfg, plan),
                    name="optimizer worker")
                stack.push_async_callback(components.stop_task, worker)
                fleet = asyncio.create_task(
                    components.run_fleet(f"ws://127.0.0.1:{ocpp_port}/ocpp", clock, cfg, plan),
                    name="simulated fleet")
                stack.push_async_callback(components.stop_task, fleet)  # stopped first (LIFO)

                async def status() -> LiveStatus:
                    return await read_live_status(redis, keys, plan.site_id, plan.station_ids)

                with DemoProgress(console, plan.start, cfg.duration) as progress:
                    interrupted = await _wait_window(window_end, clock, stop, status, progress,
                                                     [csms, worker, fleet])
                end = min(window_end, clock.now())
                console.print("stopping the fleet, the optimizer and the csms..."
                              if not interrupted else "interrupted: stopping and writing the report...")
            txs = await read_transactions(redis, keys)
        finally:
            await redis.aclose()
    finally:
        await asyncio.to_thread(redis_server.stop)
    runs = _compute(cfg, plan, txs, end)
    report_path, chart_path = write_report(cfg, runs)
    return DemoOutcome(report_path, chart_path, runs.report, interrupted, time.monotonic() - t0)


def _compute(cfg: DemoConfig, plan: components.FleetPlan, txs: list[MeasuredTransaction],
             end: datetime) -> DemoRuns:
    step = cfg.load_step_s
    whole = int((end - plan.start).total_seconds() // step) * step
    if whole < step:
        raise DemoError("the demo ended before one minute of simulated time: nothing to report")

    meta = {
        "scenario": cfg.scenario, "stations": len(plan.station_ids), "speed": cfg.speed,
        "strategy": cfg.strategy, "seed": cfg.seed, "duration_h": cfg.duration.total_seconds() / 3600,
        "complete": end >= plan.start + cfg.duration, "site_id": plan.site_id, **plan.notes,
    }
    return compute_runs(plan.cars, txs, plan.id_tokens, plan.prices, plan.site_limit_kw, plan.start,
                        plan.start + timedelta(seconds=whole), cfg.strategy, meta, load_step_s=step)


def write_report(cfg: DemoConfig, runs: DemoRuns) -> tuple[Path, Path | None]:
    """report.json and report.png into the output directory (no chart without the `demo` extra)."""
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.json"
    report_path.write_text(json.dumps(runs.report, indent=2) + "\n")
    if importlib.util.find_spec("matplotlib") is None:
        return report_path, None
    chart_path = render_chart(runs.optimized, runs.uncontrolled, runs.prices, out / "report.png",
                              title=f"evfleet demo ({cfg.scenario}, {cfg.strategy})",
                              saving_percent=runs.report["summary"]["saving_percent"])
    return report_path, chart_path
