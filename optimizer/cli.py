"""`evfleet optimize`: solve an instance file and write the schedule, or compare all strategies.

Errors are one clear message on stderr and exit code 2 (no traceback): unreadable file, invalid
JSON, an instance that fails validation (the message names the field), an unknown strategy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from evfleet.config import given_flags, load_or_exit, option
from optimizer.settings import OptimizeSettings

if TYPE_CHECKING:
    from optimizer.problem import Instance, Schedule

COMPARE_SERVICE_TIME_MAX_EVS = 100
"""--compare runs the service_time MILP only up to this many EVs (or when it is the instance's kind)."""


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command(name="optimize")(optimize)


S = OptimizeSettings


def optimize(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", envvar="EVFLEET_CONFIG",
                                       help="TOML configuration file ([optimize] table or top level)"),
    input_path: Path | None = option(S, "input", "--input", "-i"),
    output: Path | None = option(S, "output", "--output", "-o"),
    strategy: str | None = option(S, "strategy", "--strategy", "-s"),
    time_limit: float | None = option(S, "time_limit"),
    compare: bool = option(S, "compare"),
    evaluate: str | None = option(S, "evaluate"),
    runs: int = option(S, "runs"),
    log_level: str = option(S, "log_level"),
    log_json: bool = option(S, "log_json", "--log-json/--log-text"),
) -> None:
    """Solve a fleet charging instance (LP/MILP with HiGHS) or compare it against the baselines."""
    from rich.console import Console

    from evfleet.logs import configure_logging

    flags = given_flags(ctx, {k: v for k, v in locals().items() if k not in ("ctx", "config")})
    if "input_path" in flags:  # `input` would shadow the builtin here
        flags["input"] = flags.pop("input_path")
    s = load_or_exit(OptimizeSettings, config, **flags)
    configure_logging(s.log_level, s.log_json)
    err = Console(stderr=True, soft_wrap=True)
    try:
        if s.evaluate is not None:
            evaluate_rolling(read_instance(s.input), s.evaluate, s.runs)
            return
        if s.output is None and not s.compare:
            raise CliError("give --output FILE for the schedule, or --compare for a table")
        inst = read_instance(s.input)
        _run(inst, s.output, s.strategy, s.time_limit, s.compare)
    except CliError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=2) from None


def evaluate_rolling(inst: Instance, mode: str, runs: int) -> None:
    """`--evaluate rolling`: the Monte Carlo of `optimizer.rolling.monte_carlo`, printed as a table."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from optimizer.problem import Robustness
    from optimizer.rolling import monte_carlo
    from optimizer.uncertainty import UncertaintyModel

    if mode != "rolling":
        raise CliError(f"unknown evaluation {mode!r}; the only one is 'rolling'")
    if runs < 1:
        raise CliError("--runs must be >= 1")
    if any(ev.charger is None for ev in inst.evs) or inst.storage or not inst.evs:
        raise CliError("--evaluate rolling needs EVs, each on a fixed charger, and no storage")
    robust = inst.robustness
    if robust == Robustness():
        robust = Robustness(energy_margin=1.0, departure_margin_minutes=60.0)
    res = monte_carlo(inst, runs, np.random.default_rng(0), UncertaintyModel(), robust)
    table = Table(title=f"{len(inst.evs)} EVs, {runs} runs; rolling_robust: {robust}")
    for col in ("strategy", "EV energy cost", "saving kept", "adjusted", "unmet kWh/EV", "p95", "EVs short"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for name, v in res.items():
        table.add_row(
            name,
            f"{v.cost:.2f}",
            f"{100 * v.kept_raw:.1f} %",
            f"{100 * v.kept_adjusted:.1f} %",
            f"{v.unmet_per_car_kwh:.2f}",
            f"{v.unmet_p95_kwh:.2f}",
            f"{100 * v.cars_unmet_share:.1f} %",
        )
    Console(width=160).print(table)


def read_instance(path: Path) -> Instance:
    """Read and validate an instance file; raises CliError with the failing fields named."""
    from pydantic import ValidationError

    from optimizer.problem import Instance

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read instance file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    try:
        return Instance.model_validate(raw)
    except ValidationError as exc:
        raise CliError(f"{path}: invalid instance:\n{format_validation_error(exc)}") from exc


def format_validation_error(exc: Exception) -> str:
    """One line per pydantic error: `field.path: message`."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(instance)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _run(
    inst: Instance, output: Path | None, strategy: str | None, time_limit: float | None, compare: bool
) -> None:
    from rich.console import Console

    from optimizer.solve import solve
    from optimizer.strategies import STRATEGIES

    console = Console() if Console().is_terminal else Console(width=160)
    name = strategy or inst.objective.kind
    if name not in STRATEGIES:
        raise CliError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if time_limit is not None and time_limit <= 0:
        raise CliError("--time-limit must be > 0 seconds")
    if compare:
        schedules = compare_strategies(inst, time_limit)
        console.print(comparison_table(inst, schedules))
        chosen = schedules.get(name) or solve(inst, name, time_limit)
    else:
        chosen = solve(inst, name, time_limit)
        console.print(summary_line(chosen), highlight=False)
    if output is not None:
        write_schedule(chosen, output)
        console.print(f"schedule ({chosen.strategy}, {chosen.status}) written to {output}", highlight=False)


def compare_strategies(inst: Instance, time_limit: float | None) -> dict[str, Schedule]:
    """Every strategy on the instance (service_time only for small instances or when it is the kind)."""
    from optimizer.solve import solve
    from optimizer.strategies import STRATEGIES

    out: dict[str, Schedule] = {}
    for name in STRATEGIES:
        if (
            name == "service_time"
            and inst.objective.kind != "service_time"
            and len(inst.evs) > COMPARE_SERVICE_TIME_MAX_EVS
        ):
            continue
        if name == "profit" and inst.objective.kind == "cost":
            continue  # same model as cost, reported as -cost
        if name == "cost" and inst.objective.kind == "profit":
            continue
        out[name] = solve(inst, name, time_limit)
    return out


def comparison_table(inst: Instance, schedules: dict[str, Schedule]) -> object:
    """A Rich table: one row per strategy, the cost objective and the metrics side by side."""
    from rich.table import Table

    shape = f"{len(inst.evs)} EVs, {inst.steps} x {inst.step_minutes:g} min"
    table = Table(title=f"{shape}, objective {inst.objective.kind}")
    for col in (
        "strategy",
        "status",
        "total cost",
        "energy cost",
        "peak kW",
        "unmet kWh",
        "met %",
        "service h",
        "PV self %",
        "CO2 kg",
        "seconds",
    ):
        table.add_column(col, justify="left" if col in ("strategy", "status") else "right")
    for name, s in schedules.items():
        m = s.metrics
        table.add_row(
            name,
            s.status.value,
            f"{m.total_cost:.2f}",
            f"{m.energy_cost:.2f}",
            f"{m.peak_grid_kw:.1f}",
            f"{m.unmet_kwh:.2f}",
            "-" if m.soc_compliance is None else f"{100 * m.soc_compliance:.0f}",
            f"{m.service_time_h:.2f}",
            "-" if m.pv_self_consumption is None else f"{100 * m.pv_self_consumption:.1f}",
            "-" if m.co2_kg is None else f"{m.co2_kg:.1f}",
            f"{m.build_seconds + m.solve_seconds:.3f}",
        )
    return table


def summary_line(s: Schedule) -> str:
    """One line describing a schedule."""
    m = s.metrics
    obj = "-" if s.objective_value is None else f"{s.objective_value:.4f}"
    text = (
        f"{s.strategy}: {s.status.value}, objective {obj}, energy cost {m.energy_cost:.2f}, "
        f"peak {m.peak_grid_kw:.1f} kW, unmet {m.unmet_kwh:.2f} kWh, "
        f"build {m.build_seconds:.3f} s, solve {m.solve_seconds:.3f} s"
    )
    return f"{text}\n  {s.message}" if s.message else text


def write_schedule(schedule: Schedule, path: Path) -> None:
    """Write a schedule as JSON; raises CliError if the file cannot be written."""
    try:
        path.write_text(schedule.model_dump_json(indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write schedule file {str(path)!r}: {exc.strerror or exc}") from exc
