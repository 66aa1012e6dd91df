"""Exponential backoff with full jitter: the one retry rule of every reconnect and restart loop.

The n-th wait (n = 0, 1, ...) is drawn uniformly from [0, min(max_s, base_s * 2**n)] ("full
jitter"): a crowd of clients that lost the same server spreads its retries over the whole window
instead of coming back together. `reset()` after a success starts again from `base_s`.

Users: the simulated stations' reconnects (evse_sim/station.py), the MQTT bridge's reconnects
(csms/telemetry/bridge.py) and the csms's service supervisor (csms/app.py `supervise`).
Pure (no I/O besides `sleep`); pass a seeded `random.Random` for reproducible waits.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

MAX_DOUBLINGS = 32  # 2**32 * base_s is past any max_s anyone sets; keeps the float finite


@dataclass
class Backoff:
    """The retry state of one loop: `await backoff.sleep()` after each failure."""

    base_s: float = 1.0
    max_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    """Failures since the last `reset()`."""

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.max_s <= 0:
            raise ValueError(f"backoff needs base_s > 0 and max_s > 0, got {self.base_s}, {self.max_s}")

    def cap(self) -> float:
        """The upper end of the next wait: min(max_s, base_s * 2**attempt)."""
        return min(self.max_s, self.base_s * 2 ** min(self.attempt, MAX_DOUBLINGS))

    def next_delay(self) -> float:
        """Draw the next wait in [0, cap()] and count the failure."""
        delay = self.rng.uniform(0.0, self.cap())
        self.attempt += 1
        return delay

    async def sleep(self) -> float:
        """Wait the next delay; returns it (for the log line)."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        """A success: the next failure waits at most `base_s` again."""
        self.attempt = 0
