"""`evfleet demo`: the closed loop (csms + optimizer + simulated fleet) on an embedded Redis."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from evfleet.app.demo.config import (
    DEFAULT_DURATION,
    DEFAULT_SPEED,
    DEFAULT_STATIONS,
    DemoConfig,
    DemoConfigError,
    parse_duration,
)
from evfleet.isotime import IsoTimeError, parse_iso


def register(app: typer.Typer) -> None:
    """Add `evfleet demo` to the root app."""
    app.command("demo")(demo)


def demo(
    scenario: str = typer.Option("seed001", help="fleet scenario: seed001 (scaled seed 001 fleet) or random"),
    stations: int = typer.Option(DEFAULT_STATIONS, min=1, max=500, help="number of charging stations"),
    speed: float = typer.Option(DEFAULT_SPEED, min=1, max=5000,
                                help="simulated seconds per real second (720: a day in 2 minutes)"),
    strategy: str = typer.Option("cost", help="optimizer strategy (cost, or a baseline such as equal_share)"),
    duration: str = typer.Option(DEFAULT_DURATION, help="simulated time to run: 24h, 6h, 90m, 1d..."),
    no_browser: bool = typer.Option(False, "--no-browser", help="do not open the dashboard in a browser"),
    output: Path = typer.Option(Path("evfleet-report"), "--output", "-o",
                                help="directory for report.json, report.png and demo.log"),
    port: int = typer.Option(0, help="OCPP WebSocket port (0: a free port)"),
    api_port: int = typer.Option(0, help="dashboard/API port (0: 8080 if free, else a free port)"),
    seed: int = typer.Option(1, help="random seed of the fleet"),
    start: str = typer.Option("", help="simulated start, ISO 8601 (default: today, scenario's time of day)"),
    ocpp: str = typer.Option("2.0.1", help="OCPP version of the stations: 2.0.1, 1.6 (OCPP 1.6J) or mixed"),
) -> None:
    """Run the closed loop (embedded Redis, csms + dashboard, optimizer, fleet) and write a report."""
    from rich.console import Console

    from evfleet.clock import RealClock

    console = Console(highlight=False, soft_wrap=True)
    try:
        cfg = DemoConfig(
            scenario=scenario, stations=stations, speed=speed, strategy=strategy,
            duration=parse_duration(duration), start=_parse_start(start), today=RealClock().now().date(),
            open_browser=not no_browser,
            output_dir=output, ocpp_port=port, api_port=api_port, seed=seed, ocpp=ocpp,
        )
        _check_strategy(cfg.strategy)
    except DemoConfigError as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from None
    code = run_bounded(_main(cfg, console))
    raise typer.Exit(code)


def run_bounded(main: Coroutine[Any, Any, int], grace_s: float = 10.0) -> int:
    """Like `asyncio.run`, but a task that ignores cancellation cannot keep the process alive."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=grace_s))
                stuck = [t.get_name() for t in pending if not t.done()]
                if stuck:
                    logging.getLogger("evfleet.demo").error("tasks still running at exit: %s", stuck)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _parse_start(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return parse_iso(text)
    except IsoTimeError as err:
        raise DemoConfigError(f"--start {text!r} is not an ISO 8601 time") from err


def _check_strategy(name: str) -> None:
    try:
        from optimizer.strategies import STRATEGIES
    except ImportError:
        return
    if name not in STRATEGIES:
        raise DemoConfigError(f"unknown --strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def _setup_logging(output: Path) -> Path:
    """Every component's log goes to output/demo.log, so the terminal shows only the demo."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / "demo.log"
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


async def _main(cfg: DemoConfig, console: Any) -> int:
    """Run the demo with Ctrl-C/SIGTERM handling; the exit code."""
    from evfleet.app.demo.components import ComponentError
    from evfleet.app.demo.orchestrator import DemoError, run_demo
    from evfleet.app.demo.report import ReportError

    log_path = _setup_logging(cfg.output_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal(signame: str) -> None:
        if not stop.is_set():
            console.print(f"\n{signame}: stopping (again to abort without the report)...")
            stop.set()
        elif main_task is not None:
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        outcome = await run_demo(cfg, console, stop)
    except asyncio.CancelledError:
        console.print("[yellow]aborted[/]: every component was stopped, no report written")
        return 130
    except DemoConfigError as err:
        console.print(f"[red]error:[/] {err}")
        return 2
    except (DemoError, ComponentError, ReportError) as err:
        logging.getLogger("evfleet.demo").exception("demo failed")
        console.print(f"[red]error:[/] {err}\n(details in {log_path})")
        return 1
    except Exception as err:  # last resort: no traceback on the terminal, full one in the log
        logging.getLogger("evfleet.demo").exception("demo failed")
        console.print(f"[red]error:[/] unexpected {type(err).__name__}: {err}\n(details in {log_path})")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print_summary(console, outcome.report, outcome.report_path, outcome.chart_path)
    return 0


def peak_change(reduction_percent: float) -> str:
    """'peak 12.0 % lower' or 'peak 8.0 % higher' (cheap hours may concentrate load)."""
    word = "lower" if reduction_percent >= 0 else "higher"
    return f"peak {abs(reduction_percent):.1f} % {word}"


def print_summary(console: Any, report: dict[str, Any], report_path: Path, chart_path: Path | None) -> None:
    """The figures of the report as a table."""
    from rich.table import Table

    s = report["summary"]
    cur = s["currency"]
    opt, unc = report["runs"]["optimized"], report["runs"]["uncontrolled"]
    table = Table(title=f"{report['cars']} cars, site limit {report['site_limit_kw']:.0f} kW"
                  + ("" if report.get("complete", True) else " (interrupted: partial window)"))
    table.add_column("")
    table.add_column(f"optimized ({opt['strategy']}, measured)", justify="right")
    table.add_column("uncontrolled (replayed)", justify="right")
    table.add_row("energy cost", f"{opt['energy_cost']:.2f} {cur}", f"{unc['energy_cost']:.2f} {cur}")
    table.add_row("average price", f"{opt['average_price_per_kwh']:.3f} {cur}/kWh",
                  f"{unc['average_price_per_kwh']:.3f} {cur}/kWh")
    table.add_row("peak (15-min)", f"{opt['peak_kw']:.1f} kW", f"{unc['peak_kw']:.1f} kW")
    table.add_row("max site load (1-min)", f"{opt['max_site_load_kw']:.1f} kW",
                  f"{unc['max_site_load_kw']:.1f} kW")
    table.add_row("energy delivered", f"{opt['energy_delivered_kwh']:.1f} kWh",
                  f"{unc['energy_delivered_kwh']:.1f} kWh")
    table.add_row("cars short of their need", str(opt["cars_short"]["count"]),
                  str(unc["cars_short"]["count"]))
    console.print(table)
    if s.get("min_peak_same_cost_kw") is not None:
        console.print(f"peak {opt['peak_kw']:.1f} kW against {s['min_peak_same_cost_kw']:.1f} kW, the lowest "
                      f"peak of the same cars for the same cost ({s['peak_vs_min_peak']:.2f}x)")
    console.print(f"saving: [bold green]{s['saving_percent']:.1f} %[/] ({s['saving']:.2f} {cur}), "
                  f"{peak_change(s['peak_reduction_percent'])}; "
                  f"site limit exceeded: {'[red]yes[/]' if s['optimized_limit_exceeded'] else 'no'}")
    if not s["like_for_like"]:
        console.print(f"[yellow]warning:[/] the optimized run delivered "
                      f"{s['optimized_energy_shortfall_kwh']:.1f} kWh less than uncontrolled and left "
                      f"{opt['cars_short']['count']} cars short: the saving is not like for like")
    chart = chart_path if chart_path is not None else (
        "not drawn: matplotlib is missing (pip install -e '.[demo]'; scripts/demo.sh does)")
    console.print(f"report: {report_path}  chart: {chart}")
