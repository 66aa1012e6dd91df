"""`evfleet demo`: the closed loop (csms + optimizer + simulated fleet) on an embedded Redis."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import typer

from evfleet.app.demo.config import DemoConfig, DemoConfigError, DemoSettings
from evfleet.config import given_flags, load_or_exit, option


def register(app: typer.Typer) -> None:
    """Add `evfleet demo` to the root app."""
    app.command("demo")(demo)


S = DemoSettings


def demo(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", envvar="EVFLEET_CONFIG",
                                       help="TOML configuration file ([demo] table or top level)"),
    scenario: str = option(S, "scenario"),
    stations: int = option(S, "stations", min=1, max=500),
    speed: float = option(S, "speed", min=1, max=5000),
    strategy: str = option(S, "strategy"),
    duration: str = option(S, "duration"),
    no_browser: bool = option(S, "no_browser"),
    output: Path = option(S, "output", "--output", "-o"),
    ocpp_port: int = option(S, "ocpp_port"),
    api_port: int = option(S, "api_port"),
    seed: int = option(S, "seed"),
    start: str = option(S, "start"),
    ocpp: str = option(S, "ocpp"),
    log_level: str = option(S, "log_level"),
    log_json: bool = option(S, "log_json", "--log-json/--log-text"),
) -> None:
    """Run the closed loop (embedded Redis, csms + dashboard, optimizer, fleet) and write a report."""
    from rich.console import Console

    from evfleet.clock import RealClock

    values = {k: v for k, v in locals().items() if k not in ("ctx", "config")}
    settings = load_or_exit(DemoSettings, config, **given_flags(ctx, values))
    console = Console(highlight=False, soft_wrap=True)
    try:
        cfg = settings.demo_config(RealClock().now().date())
        _check_strategy(cfg.strategy)
    except DemoConfigError as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from None
    code = run_bounded(_main(cfg, console, settings))
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


def _check_strategy(name: str) -> None:
    try:
        from optimizer.strategies import STRATEGIES
    except ImportError:
        return
    if name not in STRATEGIES:
        raise DemoConfigError(f"unknown --strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def _setup_logging(output: Path, settings: DemoSettings) -> Path:
    """Every component's log goes to output/demo.log, so the terminal shows only the demo."""
    from evfleet.logs import configure_logging

    output.mkdir(parents=True, exist_ok=True)
    path = output / "demo.log"
    configure_logging(settings.log_level, settings.log_json, path=path, exclusive=True)
    return path


async def _main(cfg: DemoConfig, console: Any, settings: DemoSettings) -> int:
    """Run the demo with Ctrl-C/SIGTERM handling; the exit code."""
    from evfleet.app.demo.components import ComponentError
    from evfleet.app.demo.orchestrator import DemoError, run_demo
    from evfleet.app.demo.report import ReportError

    log_path = _setup_logging(cfg.output_dir, settings)
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
    if s.get("min_peak_same_cost_kw") is not None and s.get("peak_vs_min_peak") is not None:
        console.print(f"peak {opt['peak_kw']:.1f} kW against {s['min_peak_same_cost_kw']:.1f} kW, the lowest "
                      f"peak of the same cars for the same cost ({s['peak_vs_min_peak']:.2f}x)")
    limit = f"site limit exceeded: {'[red]yes[/]' if s['optimized_limit_exceeded'] else 'no'}"
    if not s.get("measurement_complete", True):
        console.print(f"[red]measurement incomplete:[/] the csms never received the end of "
                      f"{s['transactions_without_end']} sessions whose car left: the stations reported "
                      f"faster than this machine could store (try a lower --speed); the optimized "
                      f"figures miss energy the cars drew")
        console.print(f"saving: not measured; {limit}")
    else:
        console.print(f"saving: [bold green]{s['saving_percent']:.1f} %[/] ({s['saving']:.2f} {cur}), "
                      f"{peak_change(s['peak_reduction_percent'])}; {limit}")
    if not s["like_for_like"]:
        console.print(f"[yellow]warning:[/] the optimized run delivered "
                      f"{s['optimized_energy_shortfall_kwh']:.1f} kWh less than uncontrolled and left "
                      f"{opt['cars_short']['count']} cars short: the saving is not like for like")
    chart = chart_path if chart_path is not None else (
        "not drawn: matplotlib is missing (pip install -e '.[demo]'; scripts/demo.sh does)")
    console.print(f"report: {report_path}  chart: {chart}")
