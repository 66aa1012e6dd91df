"""Options of `evfleet demo`: the settings (flags > `EVFLEET_DEMO_*` > `[demo]` TOML table), validated
once into a `DemoConfig` (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from evfleet.config import CommandSettings


class DemoConfigError(ValueError):
    """An `evfleet demo` option is invalid (the CLI prints the message, no traceback)."""


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_S = {"": 3600.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

DEFAULT_STATIONS = 40
DEFAULT_SPEED = 720.0  # a simulated day in two minutes
DEFAULT_DURATION = "24h"


def parse_duration(text: str) -> timedelta:
    """'24h', '90m', '1.5h', '3600s', '1d' or a bare number of hours -> timedelta of simulated time."""
    match = _DURATION_RE.match(text or "")
    if not match:
        raise DemoConfigError(f"invalid duration {text!r}: use e.g. 24h, 90m, 1d or 3600s")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2).lower()]
    if seconds < 600:
        raise DemoConfigError(f"duration {text!r} is too short: simulate at least 10 minutes")
    if seconds > 7 * 86400:
        raise DemoConfigError(f"duration {text!r} is too long: at most 7 days")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class DemoConfig:
    """Everything one demo run needs to know."""

    scenario: str = "seed001"
    stations: int = DEFAULT_STATIONS
    speed: float = DEFAULT_SPEED
    strategy: str = "cost"
    duration: timedelta = timedelta(hours=24)
    start: datetime | None = None  # None = `today` at the scenario's own time of day
    today: date = date(2026, 3, 2)
    open_browser: bool = True
    output_dir: Path = Path("evfleet-report")
    ocpp_port: int = 0  # 0 = a free port
    api_port: int = 0  # 0 = 8080 if free, else a free port
    seed: int = 1
    meter_interval_s: float = 60.0  # simulated seconds between meter values
    load_step_s: float = 60.0  # resolution of the measured load series
    ocpp: str = "2.0.1"  # OCPP version of the stations: 2.0.1, 1.6 or mixed

    def __post_init__(self) -> None:
        if not 1 <= self.stations <= 500:
            raise DemoConfigError(f"--stations must be within 1..500, got {self.stations}")
        if not 1 <= self.speed <= 5000:
            raise DemoConfigError(f"--speed must be within 1..5000, got {self.speed}")
        for name, port in (("--port", self.ocpp_port), ("--api-port", self.api_port)):
            if not 0 <= port <= 65535:
                raise DemoConfigError(f"{name} must be within 0..65535, got {port}")
        if self.ocpp not in ("2.0.1", "1.6", "mixed"):
            raise DemoConfigError(f"--ocpp must be 2.0.1, 1.6 or mixed, got {self.ocpp!r}")
        if self.start is not None and self.start.tzinfo is None:
            raise DemoConfigError("start must be timezone-aware")

    @property
    def wall_seconds(self) -> float:
        """Real seconds the simulated window takes at `speed`."""
        return self.duration.total_seconds() / self.speed


class DemoSettings(CommandSettings):
    """Every option of `evfleet demo` (env var = `EVFLEET_DEMO_` + upper-case name; `[demo]` table).

    `log_level` and `log_json` are shared with every command (`EVFLEET_LOG_LEVEL`, `EVFLEET_LOG_JSON`);
    they shape `demo.log`, which every component of the demo writes to.
    """

    model_config = SettingsConfigDict(env_prefix="EVFLEET_DEMO_", frozen=True, extra="forbid")
    TABLE: ClassVar[str] = "demo"
    SHARED_ENV: ClassVar[frozenset[str]] = frozenset({"log_level", "log_json"})
    FLAGS: ClassVar[dict[str, str]] = {"ocpp_port": "--port"}

    scenario: str = Field("seed001", description="fleet scenario: seed001 (scaled seed 001 fleet) or random")
    stations: int = Field(DEFAULT_STATIONS, ge=1, le=500, description="number of charging stations")
    speed: float = Field(DEFAULT_SPEED, ge=1, le=5000,
                         description="simulated seconds per real second (720: a day in 2 minutes)")
    strategy: str = Field("cost", description="optimizer strategy (cost, or a baseline such as equal_share)")
    duration: str = Field(DEFAULT_DURATION, description="simulated time to run: 24h, 6h, 90m, 1d...")
    no_browser: bool = Field(False, description="do not open the dashboard in a browser")
    output: Path = Field(Path("evfleet-report"),
                         description="directory for report.json, report.png and demo.log")
    ocpp_port: int = Field(0, ge=0, le=65535, description="OCPP WebSocket port (0: a free port)")
    api_port: int = Field(0, ge=0, le=65535,
                          description="dashboard/API port (0: 8080 if free, else a free port)")
    seed: int = Field(1, description="random seed of the fleet")
    start: str = Field("", description="simulated start, ISO 8601 (default: today, scenario's time of day)")
    ocpp: str = Field("2.0.1", description="OCPP version of the stations: 2.0.1, 1.6 (OCPP 1.6J) or mixed")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="level of demo.log: DEBUG, INFO, WARNING, ERROR")
    log_json: bool = Field(False, description="JSON lines in demo.log")

    def demo_config(self, today: date) -> DemoConfig:
        """The validated `DemoConfig` of these settings; raises DemoConfigError."""
        return DemoConfig(
            scenario=self.scenario, stations=self.stations, speed=self.speed, strategy=self.strategy,
            duration=parse_duration(self.duration), start=parse_start(self.start), today=today,
            open_browser=not self.no_browser, output_dir=self.output, ocpp_port=self.ocpp_port,
            api_port=self.api_port, seed=self.seed, ocpp=self.ocpp,
        )


def parse_start(text: str) -> datetime | None:
    """An ISO 8601 start (naive = UTC), or None for an empty text."""
    from evfleet.isotime import IsoTimeError, parse_iso

    if not text:
        return None
    try:
        return parse_iso(text)
    except IsoTimeError as err:
        raise DemoConfigError(f"--start {text!r} is not an ISO 8601 time") from err
