"""Options of `evfleet demo`, validated once (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path


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
