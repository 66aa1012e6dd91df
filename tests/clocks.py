"""A clock the test moves by hand (`clock.t = ...`); `sleep` returns at once without moving it."""

from __future__ import annotations

from datetime import datetime


class ManualClock:
    """A clock moved by the test."""

    speed = 1.0

    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        """The time the test set."""
        return self.t

    def timestamp(self) -> float:
        """The time the test set, as a Unix timestamp."""
        return self.t.timestamp()

    async def sleep(self, seconds: float) -> None:
        """Return at once: the test moves the clock."""
        return None
