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
from typing import Any, Protocol


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
        clock = cls(datetime.fromtimestamp(spec.sim_anchor, UTC), spec.speed, spec.real_anchor)
        clock._sim_anchor = spec.sim_anchor  # exact, so `clock.spec() == spec`
        return clock

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


# --- one time source per deployment ----------------------------------------------------------
#
# A simulated clock is shared through one Redis HASH (`Keys.clock()`): its spec, its `owner` and a
# TTL that every process running on it refreshes (`CLOCK_HEARTBEAT_S`). When the last of them stops,
# the key expires within `CLOCK_TTL_S` and every follower returns to real time. A key without a TTL
# (left by an older version, or written by hand) is stale and never joined. `redis` below is a
# `redis.asyncio.Redis` (decoded or not); this module does not import redis.

CLOCK_TTL_S = 15
CLOCK_HEARTBEAT_S = 5.0


class ClockConflict(RuntimeError):
    """The deployment's time source and the one this process was asked to use disagree."""

    def __init__(self, message: str, live_speed: float) -> None:
        super().__init__(message)
        self.live_speed = live_speed


@dataclass(frozen=True)
class SharedClock:
    """What `evfleet:clock` holds now: the spec and who created it; `live` is False for a stale key."""

    spec: ClockSpec
    owner: str
    live: bool


async def read_shared_clock(redis: Any, key: str) -> SharedClock | None:
    """The shared clock in `key`, or None when there is none (or it cannot be read as a clock)."""
    raw = await redis.hgetall(key)
    if not raw:
        return None
    data = {_text(k): _text(v) for k, v in raw.items()}
    try:
        spec = ClockSpec.from_dict(data)
    except (KeyError, ValueError):
        return SharedClock(ClockSpec(0.0, 0.0, 1.0), data.get("owner", "?"), live=False)
    ttl_ms = await redis.pttl(key)
    return SharedClock(spec, data.get("owner", "?"), live=isinstance(ttl_ms, int) and ttl_ms > 0)


async def publish_shared_clock(redis: Any, key: str, spec: ClockSpec, owner: str) -> None:
    """Write `spec` as the deployment's clock, owned by `owner`, with its TTL."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping={**spec.to_dict(), "owner": owner})
        pipe.expire(key, CLOCK_TTL_S)
        await pipe.execute()


def describe(clock: SharedClock) -> str:
    """One phrase naming a shared clock for messages: speed, owner and whether it is live."""
    state = "live" if clock.live else "stale (no heartbeat)"
    return f"a {clock.spec.speed:g}x simulated clock owned by {clock.owner} ({state})"


async def acquire_clock(redis: Any, key: str, speed: float | None, owner: str,
                        start: datetime | None = None) -> tuple[Clock, bool]:
    """The clock this process must run on, and whether it created (and so publishes) it.

    One rule for every process (csms, sim, demo): with no speed asked, join a live shared clock or
    run in real time; with a speed, join the live shared clock of that speed, refuse one of another
    speed, or start (and publish) a new one at `start` (default now). Real time (speed 1) refuses a
    live simulated clock. A stale key is never joined: it is replaced when this process starts a
    clock, and otherwise left for its TTL-less owner to clean up (the caller warns).
    """
    shared = await read_shared_clock(redis, key)
    live = shared if shared is not None and shared.live else None
    if live is not None:
        if speed is None or speed == live.spec.speed:
            return ScaledClock.from_spec(live.spec), False
        raise ClockConflict(f"this Redis already runs {describe(live)}, not the {speed:g}x asked for",
                            live.spec.speed)
    if speed is None or speed == 1.0:
        return RealClock(), False
    clock = ScaledClock(start, speed)
    await publish_shared_clock(redis, key, clock.spec(), owner)
    return clock, True


async def keep_clock_alive(redis: Any, key: str, spec: ClockSpec,
                           interval_s: float = CLOCK_HEARTBEAT_S) -> None:
    """Refresh the shared clock's TTL while this process runs on it (until cancelled).

    Stops refreshing (and returns) if the key now holds another clock: this process then keeps
    its own spec, but no longer keeps a foreign clock alive.
    """
    while True:
        shared = await read_shared_clock(redis, key)
        if shared is None or shared.spec != spec:
            return
        await redis.expire(key, CLOCK_TTL_S)
        await asyncio.sleep(interval_s)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
