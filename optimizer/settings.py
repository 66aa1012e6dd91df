"""Settings of `evfleet optimizer` (the worker) and `evfleet optimize` (one instance file).

Precedence: flags > environment > TOML table (`[optimizer]`, `[optimize]`) > defaults, through
`evfleet.config.load`. The worker reads `EVFLEET_OPTIMIZER_<NAME>` (e.g. `EVFLEET_OPTIMIZER_STRATEGY`,
`EVFLEET_OPTIMIZER_CONSUMER`) and shares `EVFLEET_REDIS_URL`, `EVFLEET_REDIS_PREFIX`,
`EVFLEET_LOG_LEVEL` and `EVFLEET_LOG_JSON` with the csms; `optimize` reads `EVFLEET_OPTIMIZE_<NAME>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from evfleet.config import CommandSettings, redis_url_scheme

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
_LOGGING = frozenset({"log_level", "log_json"})


def _known_strategy(value: str | None) -> str | None:
    from optimizer.strategies import STRATEGIES

    if value is not None and value not in STRATEGIES:
        raise ValueError(f"unknown strategy {value!r}; choose one of: {', '.join(STRATEGIES)}")
    return value


class WorkerSettings(CommandSettings):
    """Every option of `evfleet optimizer` (the worker)."""

    model_config = SettingsConfigDict(env_prefix="EVFLEET_OPTIMIZER_", frozen=True, extra="forbid")
    TABLE: ClassVar[str] = "optimizer"
    SHARED_ENV: ClassVar[frozenset[str]] = _LOGGING | {"redis_url", "redis_prefix", "redis_shards"}

    redis_url: str | None = Field(None, description="Redis URL shared with the csms (required)")
    redis_prefix: str = Field("evfleet", description="key prefix")
    redis_shards: int | None = Field(
        None, ge=0, le=16384,
        description="key layout (see `evfleet csms --help`); unset = as recorded in Redis")
    site: list[str] = Field(default_factory=list, description="site(s) this worker plans (default: all)")
    strategy: str = Field("cost", description="optimizer strategy or baseline name")
    horizon_steps: int = Field(96, ge=1, le=10_000, description="planning horizon in steps")
    step_minutes: int = Field(15, ge=1, le=1440, description="length of a step in minutes")
    debounce_s: float = Field(1.0, ge=0.0, description="wait for more events before a re-plan [s]")
    solve_timeout_s: float = Field(10.0, ge=0.1, description="solver time limit per solve [s]")
    meter_drift_kw: float = Field(2.0, ge=0.0, description="metered power this far off the plan "
                                                           "triggers a re-plan [kW]")
    consumer: str | None = Field(None, description="consumer name (default: host-pid)")
    stickiness: float = Field(
        1e-3, ge=0.0, description="K16: cost per kWh, relative to the largest price, of moving an EV off "
                                  "its previous plan (0 = re-plan from scratch)")
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="serve Prometheus /metrics (stream lag) on this port (default: off)")
    metrics_host: str = Field("127.0.0.1", description="address /metrics binds to (with --metrics-port)")
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")
    log_json: bool = Field(False, description="JSON log lines")

    _redis_scheme = field_validator("redis_url")(redis_url_scheme)

    _strategy = field_validator("strategy")(_known_strategy)


class OptimizeSettings(CommandSettings):
    """Every option of `evfleet optimize`."""

    model_config = SettingsConfigDict(env_prefix="EVFLEET_OPTIMIZE_", frozen=True, extra="forbid")
    TABLE: ClassVar[str] = "optimize"
    SHARED_ENV: ClassVar[frozenset[str]] = _LOGGING

    input: Path = Field(description="Instance JSON file (docs/optimizer-format.md).")
    output: Path | None = Field(None, description="Where to write the schedule JSON.")
    strategy: str | None = Field(
        None, description="cost, profit, service_time, uncontrolled, equal_share, edf, llf, smallest_first "
                          "or fcfs (default: the instance's objective kind).")
    time_limit: float | None = Field(None, gt=0, description="Solver time limit per solve, in seconds.")
    compare: bool = Field(False, description="Run every strategy and print one comparison table.")
    evaluate: str | None = Field(
        None, description="rolling: Monte Carlo of rolling re-plans under uncertain departures and needs, "
        "against perfect foresight and uncontrolled charging (docs/optimizer.md, 'Planning under "
        "uncertainty').")
    runs: int = Field(100, ge=1, description="Monte Carlo runs for --evaluate.")
    log_level: LogLevel = Field("WARNING", description="DEBUG, INFO, WARNING, ERROR")
    log_json: bool = Field(False, description="JSON log lines")

    _strategy = field_validator("strategy")(_known_strategy)

    @field_validator("evaluate")
    @classmethod
    def _evaluation(cls, value: str | None) -> str | None:
        if value is not None and value != "rolling":
            raise ValueError(f"unknown evaluation {value!r}; the only one is 'rolling'")
        return value
