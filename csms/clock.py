"""The one clock every component reads ("One clock" rule in ARCHITECTURE.md).

A `Clock` maps real (monotonic) time to simulated wall-clock time. `RealClock` is the
identity; `ScaledClock` runs `speed` times faster than real time from an anchor, so a
simulated day can pass in minutes. Processes agree on "now" by sharing a `ClockSpec`
(anchor + speed), e.g. through settings or the `evfleet:clock` Redis key.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of "now" and of sleeping in the clock's own (possibly simulated) time."""

    @property
    def speed(self) -> float:
        """How many simulated seconds pass per real second."""
        ...

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def timestamp(self) -> float:
        """Current time as POSIX seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of clock time."""
        ...


@dataclass(frozen=True)
class ClockSpec:
    """Serializable description of a clock: simulated time `sim_anchor` at real time `real_anchor`."""

    sim_anchor: float
    real_anchor: float
    speed: float = 1.0

    def to_dict(self) -> dict[str, str]:
        """Flat string mapping (fits a Redis hash or env variables)."""
        return {
            "sim_anchor": repr(self.sim_anchor),
            "real_anchor": repr(self.real_anchor),
            "speed": repr(self.speed),
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> ClockSpec:
        """Inverse of `to_dict`."""
        return cls(
            sim_anchor=float(data["sim_anchor"]),
            real_anchor=float(data["real_anchor"]),
            speed=float(data["speed"]),
        )


class RealClock:
    """Wall-clock time."""

    speed: float = 1.0

    def now(self) -> datetime:
        """Current UTC time."""
        return datetime.now(UTC)

    def timestamp(self) -> float:
        """Current POSIX time."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep in real time."""
        await asyncio.sleep(max(0.0, seconds))

    def spec(self) -> ClockSpec:
        """A spec that reproduces this clock in another process."""
        now = time.time()
        return ClockSpec(sim_anchor=now, real_anchor=now, speed=1.0)


class ScaledClock:
    """Simulated time running `speed` times faster than real time from a start instant."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0,
                 real_anchor: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        start = start or datetime.now(UTC)
        if start.tzinfo is None:
            raise ValueError("clock start must be timezone-aware")
        self._sim_anchor = start.timestamp()
        self._real_anchor = time.time() if real_anchor is None else real_anchor
        self._speed = float(speed)

    @classmethod
    def from_spec(cls, spec: ClockSpec) -> ScaledClock:
        """Build the clock another process described with `spec()`."""
        return cls(datetime.fromtimestamp(spec.sim_anchor, UTC), spec.speed, spec.real_anchor)

    def spec(self) -> ClockSpec:
        """Anchor and speed, for sharing with other processes."""
        return ClockSpec(self._sim_anchor, self._real_anchor, self._speed)

    @property
    def speed(self) -> float:
        """Simulated seconds per real second."""
        return self._speed

    def timestamp(self) -> float:
        """Simulated POSIX time."""
        return self._sim_anchor + (time.time() - self._real_anchor) * self._speed

    def now(self) -> datetime:
        """Simulated UTC time."""
        return datetime.fromtimestamp(self.timestamp(), UTC)

    def real_seconds(self, sim_seconds: float) -> float:
        """Real seconds that `sim_seconds` of simulated time take."""
        return sim_seconds / self._speed

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of simulated time."""
        await asyncio.sleep(max(0.0, seconds) / self._speed)

    def sleep_until_delta(self, target: datetime) -> timedelta:
        """Simulated time left until `target` (negative if past)."""
        return target - self.now()
