"""`evfleet optimizer`: run the optimizer worker (see optimizer/worker.py).

Configuration precedence: flags > environment (`EVFLEET_…`) > the `[optimizer]` table of a TOML
file (`--config`) > defaults.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import typer

DEFAULTS: dict[str, Any] = {
    "redis_url": None, "redis_prefix": "evfleet", "site": [], "strategy": "cost", "horizon_steps": 96,
    "step_minutes": 15, "debounce_s": 1.0, "solve_timeout_s": 10.0, "meter_drift_kw": 2.0, "consumer": None,
    "stickiness": 1e-3, "log_level": "INFO",
}


class WorkerConfigError(ValueError):
    """The worker's configuration is invalid (message for the operator)."""


def read_config(path: Path | None) -> dict[str, Any]:
    """The `[optimizer]` table (or top-level keys) of a TOML file; {} without a file."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise WorkerConfigError(f"config file not found: {path}") from err
    except tomllib.TOMLDecodeError as err:
        raise WorkerConfigError(f"config file {path} is not valid TOML: {err}") from err
    table = data.get("optimizer", data)
    if not isinstance(table, dict):
        raise WorkerConfigError(f"config file {path}: [optimizer] must be a table")
    unknown = sorted(set(table) - set(DEFAULTS))
    if unknown:
        raise WorkerConfigError(f"config file {path}: unknown keys {', '.join(unknown)}")
    return table


def resolve(flags: dict[str, Any], from_file: dict[str, Any]) -> dict[str, Any]:
    """Merge: explicit flags/env (not None) > file > defaults."""
    out = dict(DEFAULTS)
    out.update(from_file)
    out.update({k: v for k, v in flags.items() if v is not None and v != []})
    return out


def register(app: typer.Typer) -> None:
    """Add `evfleet optimizer` to the root app."""

    @app.command("optimizer")
    def optimizer_worker(
        config: Path | None = typer.Option(None, "--config", envvar="EVFLEET_CONFIG",
                                           help="TOML file with an [optimizer] table"),
        redis_url: str | None = typer.Option(None, "--redis-url", envvar="EVFLEET_REDIS_URL",
                                             help="Redis URL shared with the csms (required)"),
        redis_prefix: str | None = typer.Option(None, "--redis-prefix", envvar="EVFLEET_REDIS_PREFIX",
                                                help="key prefix [default: evfleet]"),
        site: list[str] = typer.Option([], "--site", help="site(s) this worker plans (default: all)"),
        strategy: str | None = typer.Option(None, "--strategy", envvar="EVFLEET_OPTIMIZER_STRATEGY",
                                            help="optimizer strategy or baseline name [default: cost]"),
        horizon_steps: int | None = typer.Option(None, "--horizon-steps", min=1, max=10_000,
                                                 help="[default: 96]"),
        step_minutes: int | None = typer.Option(None, "--step-minutes", min=1, max=1440,
                                                help="[default: 15]"),
        debounce_s: float | None = typer.Option(None, "--debounce-s", min=0.0, help="[default: 1]"),
        solve_timeout_s: float | None = typer.Option(None, "--solve-timeout-s", min=0.1,
                                                     help="[default: 10]"),
        meter_drift_kw: float | None = typer.Option(None, "--meter-drift-kw", min=0.0, help="[default: 2]"),
        consumer: str | None = typer.Option(None, "--consumer", envvar="EVFLEET_OPTIMIZER_CONSUMER",
                                            help="consumer name (default: host-pid)"),
        stickiness: float | None = typer.Option(
            None, "--stickiness", min=0.0,
            help="K16: cost per kWh, relative to the largest price, of moving an EV off its previous plan "
                 "(0 = re-plan from scratch) [default: 0.001]"),
        log_level: str | None = typer.Option(None, "--log-level", envvar="EVFLEET_LOG_LEVEL",
                                             help="[default: INFO]"),
    ) -> None:
        """Consume session events from Redis and write per-EVSE schedules (the optimizer worker)."""
        from redis.exceptions import ConnectionError as RedisConnectionError

        from optimizer.strategies import STRATEGIES
        from optimizer.worker import WorkerConfig

        try:
            v = resolve(dict(redis_url=redis_url, redis_prefix=redis_prefix, site=site, strategy=strategy,
                             horizon_steps=horizon_steps, step_minutes=step_minutes, debounce_s=debounce_s,
                             solve_timeout_s=solve_timeout_s, meter_drift_kw=meter_drift_kw,
                             consumer=consumer, stickiness=stickiness, log_level=log_level),
                         read_config(config))
        except WorkerConfigError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        if not v["redis_url"]:
            typer.echo("error: --redis-url (or EVFLEET_REDIS_URL, or redis_url in --config) is required",
                       err=True)
            raise typer.Exit(2)
        if not str(v["redis_url"]).startswith(("redis://", "rediss://", "unix://")):
            typer.echo("error: --redis-url must start with redis://, rediss:// or unix://", err=True)
            raise typer.Exit(2)
        if v["strategy"] not in STRATEGIES:
            typer.echo(f"error: unknown strategy {v['strategy']!r}; choose one of: {', '.join(STRATEGIES)}",
                       err=True)
            raise typer.Exit(2)
        logging.basicConfig(level=str(v["log_level"]).upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        try:
            cfg = WorkerConfig(
                sites=tuple(v["site"]), strategy=v["strategy"], horizon_steps=int(v["horizon_steps"]),
                step_minutes=int(v["step_minutes"]), debounce_s=float(v["debounce_s"]),
                max_delay_s=max(5.0, float(v["debounce_s"]) * 5), solve_timeout_s=float(v["solve_timeout_s"]),
                meter_drift_kw=float(v["meter_drift_kw"]), stickiness=float(v["stickiness"]),
                consumer=v["consumer"] or f"{os.uname().nodename}-{os.getpid()}",
            )
        except (TypeError, ValueError) as err:
            typer.echo(f"error: invalid worker configuration: {err}", err=True)
            raise typer.Exit(2) from err
        try:
            asyncio.run(_run(str(v["redis_url"]), str(v["redis_prefix"]), cfg))
        except KeyboardInterrupt:
            pass
        except (OSError, RedisConnectionError) as err:
            where = re.sub(r"//[^/@]*@", "//***@", str(v["redis_url"]))  # no password in the message
            typer.echo(f"error: cannot reach Redis at {where}: {err}", err=True)
            raise typer.Exit(1) from err


async def _run(redis_url: str, prefix: str, cfg: object) -> None:
    from evfleet.keys import Keys
    from evfleet.store.client import connect_redis
    from optimizer.worker import OptimizerWorker, WorkerConfig

    assert isinstance(cfg, WorkerConfig)
    redis = connect_redis(redis_url)
    try:
        await redis.ping()
        await OptimizerWorker(redis, Keys(prefix), cfg).run()
    finally:
        await redis.aclose()
