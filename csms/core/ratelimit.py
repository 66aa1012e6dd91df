"""Per-connection message-rate limiting, pure: a token bucket fed with monotonic times.

Public names: `TokenBucket`, `RateDecision`.

Rate limiting protects this process from real sockets, so it runs on real (monotonic) time
supplied by the caller, not on the simulated clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RateDecision:
    """`wait_s` before processing the message; `disconnect` if the station keeps flooding."""

    wait_s: float
    disconnect: bool
    throttled_in_row: int


FREE = RateDecision(0.0, False, 0)
"""The decision of every message within the rate (one shared object: no allocation per message, so
nothing per message outlives it in the young generation; issue 14)."""


class TokenBucket:
    """`rate_per_s` sustained, `burst` at once; after `disconnect_after` throttled messages in a
    row (no message found a free token in between) the connection should be closed if the
    station is also pipelining (the adapter checks that)."""

    def __init__(self, rate_per_s: float, burst: int, disconnect_after: int, now: float) -> None:
        if rate_per_s <= 0 or burst < 1 or disconnect_after < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and disconnect_after >= 1 required")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.disconnect_after = disconnect_after
        self.tokens = float(burst)
        self.last = now
        self.throttled_in_row = 0

    def take(self, now: float) -> RateDecision:
        """Account one message arriving at `now` (the caller then sleeps `wait_s`)."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate_per_s)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.throttled_in_row = 0
            return FREE
        self.throttled_in_row += 1
        wait_s = (1.0 - self.tokens) / self.rate_per_s
        # the message is served once the token has been earned
        self.tokens -= 1.0
        return RateDecision(wait_s, self.throttled_in_row > self.disconnect_after, self.throttled_in_row)
