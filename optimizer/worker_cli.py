"""`evfleet optimizer`: run the optimizer worker (see optimizer/worker.py).

Configuration (optimizer/settings.py): flags > environment (`EVFLEET_OPTIMIZER_…`, and the shared
`EVFLEET_REDIS_URL`, `EVFLEET_LOG_JSON`, ...) > the `[optimizer]` table of a TOML file (`--config`) >
defaults.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import typer

from evfleet.config import given_flags, load, load_or_exit, option
from optimizer.settings import WorkerSettings

S = WorkerSettings


def worker_settings(config: Path | None = None, **flags: Any) -> WorkerSettings:
    """The worker's settings: flags > environment > `[optimizer]` table > defaults (`evfleet.config`)."""
    return load(WorkerSettings, config, **flags)


def worker_config(s: WorkerSettings) -> Any:
    """The `WorkerConfig` of the resolved settings."""
    from optimizer.worker import WorkerConfig

    return WorkerConfig(
        sites=tuple(s.site), strategy=s.strategy, horizon_steps=s.horizon_steps, step_minutes=s.step_minutes,
        debounce_s=s.debounce_s, max_delay_s=max(5.0, s.debounce_s * 5), solve_timeout_s=s.solve_timeout_s,
        meter_drift_kw=s.meter_drift_kw, stickiness=s.stickiness,
        consumer=s.consumer or f"{os.uname().nodename}-{os.getpid()}", group_lag=s.metrics_port is not None,
    )


def register(app: typer.Typer) -> None:
    """Add `evfleet optimizer` to the root app."""
    app.command("optimizer")(optimizer_worker)


def optimizer_worker(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", envvar="EVFLEET_CONFIG",
                                       help="TOML file with an [optimizer] table"),
    redis_url: str | None = option(S, "redis_url"),
    redis_prefix: str = option(S, "redis_prefix"),
    redis_shards: int | None = option(S, "redis_shards", min=0, max=16384),
    site: list[str] | None = option(S, "site", metavar="SITE"),
    strategy: str = option(S, "strategy"),
    horizon_steps: int = option(S, "horizon_steps", min=1, max=10_000),
    step_minutes: int = option(S, "step_minutes", min=1, max=1440),
    debounce_s: float = option(S, "debounce_s", min=0.0),
    solve_timeout_s: float = option(S, "solve_timeout_s", min=0.1),
    meter_drift_kw: float = option(S, "meter_drift_kw", min=0.0),
    consumer: str | None = option(S, "consumer"),
    stickiness: float = option(S, "stickiness", min=0.0),
    metrics_port: int | None = option(S, "metrics_port", min=0, max=65535),
    metrics_host: str = option(S, "metrics_host"),
    log_level: str = option(S, "log_level"),
    log_json: bool = option(S, "log_json", "--log-json/--log-text"),
) -> None:
    """Consume session events from Redis and write per-EVSE schedules (the optimizer worker)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from evfleet.logs import configure_logging

    values = {k: v for k, v in locals().items() if k not in ("ctx", "config")}
    s = load_or_exit(WorkerSettings, config, **given_flags(ctx, values))
    if not s.redis_url:
        typer.echo("error: --redis-url (or EVFLEET_REDIS_URL, or redis_url in --config) is required",
                   err=True)
        raise typer.Exit(2)
    cfg = worker_config(s)
    configure_logging(s.log_level, s.log_json, node_id=cfg.consumer)
    if s.metrics_port is not None:  # stream lag gauges (evfleet.store.lag), in a thread of its own
        from prometheus_client import start_http_server

        start_http_server(s.metrics_port, s.metrics_host)
    try:
        asyncio.run(_run(s.redis_url, s.redis_prefix, cfg, s.redis_shards))
    except KeyboardInterrupt:
        pass
    except (OSError, RedisConnectionError) as err:
        where = re.sub(r"//[^/@]*@", "//***@", s.redis_url)  # no password in the message
        typer.echo(f"error: cannot reach Redis at {where}: {err}", err=True)
        raise typer.Exit(1) from err


async def _run(redis_url: str, prefix: str, cfg: object, shards: int | None = None) -> None:
    from evfleet.store.client import connect_redis
    from evfleet.store.layout import resolve_keys
    from optimizer.worker import OptimizerWorker, WorkerConfig

    assert isinstance(cfg, WorkerConfig)
    redis = connect_redis(redis_url)
    try:
        await redis.ping()
        await OptimizerWorker(redis, await resolve_keys(redis, prefix, shards), cfg).run()
    finally:
        await redis.aclose()
