"""Backoff on failed station logins, per station id and per client IP. Pure: times are passed in.

Public names: `LoginGuard`, `GuardPolicy`.

The policy (see docs/csms.md, "Failed logins"):

- Every credential failure (wrong password *or* unknown station) is answered no earlier than
  `failure_delay_s` after the request arrived, so both take the same time and a station id
  cannot be probed by timing.
- After `free_failures` failures of one station id, or from one IP, within `window_s`, each
  further failure is answered after an exponentially growing delay (`base_delay_s` doubling,
  at most `max_delay_s`): the larger of the id's and the IP's.
- A correct password is never delayed: it is checked first (the check costs microseconds),
  so a stream of wrong guesses for an id cannot lock the real station out.
- An IP with `max_pending_per_ip` delayed failures still waiting for their answer gets HTTP
  429 for new handshakes without a password check. This caps one address's guessing rate at
  `max_pending_per_ip / max_delay_s` once backed off. An (id, IP) pair that logged in
  successfully before is exempt while that id has at most `free_failures` recent failures,
  so a station sharing a NAT address with a misbehaving one keeps connecting.

Memory is bounded: at most `max_keys` failure records and known-good pairs (oldest dropped).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class GuardPolicy:
    """Tunables of `LoginGuard` (from the csms settings)."""

    failure_delay_s: float = 1.0
    free_failures: int = 3
    base_delay_s: float = 2.0
    max_delay_s: float = 60.0
    window_s: float = 600.0
    max_pending_per_ip: int = 20
    max_keys: int = 100_000


@dataclass
class _Failures:
    count: int
    last: float


class LoginGuard:
    """Failure counters and pending-failure counts of one csms node (in memory)."""

    def __init__(self, policy: GuardPolicy | None = None) -> None:
        self.policy = policy or GuardPolicy()
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._good: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._pending: dict[str, int] = {}

    def _count(self, key: str, now: float) -> int:
        rec = self._failures.get(key)
        if rec is None:
            return 0
        if now - rec.last > self.policy.window_s:
            del self._failures[key]
            return 0
        return rec.count

    def _bump(self, key: str, now: float) -> int:
        count = self._count(key, now) + 1
        self._failures[key] = _Failures(count, now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.policy.max_keys:
            self._failures.popitem(last=False)
        return count

    def _backoff(self, failures: int) -> float:
        p = self.policy
        extra = failures - p.free_failures
        if extra <= 0:
            return 0.0
        return min(p.max_delay_s, p.base_delay_s * 2.0 ** min(extra - 1, 30))

    def admit_attempt(self, station_id: str, ip: str, now: float) -> bool:
        """False when a new handshake from `ip` must be refused (429) before any password check."""
        if self._pending.get(ip, 0) < self.policy.max_pending_per_ip:
            return True
        return (station_id, ip) in self._good and \
            self._count(f"id:{station_id}", now) <= self.policy.free_failures

    def failure(self, station_id: str, ip: str, arrived: float, now: float) -> float:
        """Record a failed login; seconds to wait before answering it (from `now`)."""
        by_id = self._bump(f"id:{station_id}", now)
        by_ip = self._bump(f"ip:{ip}", now)
        delay = max(self.policy.failure_delay_s, self._backoff(by_id), self._backoff(by_ip))
        return max(0.0, arrived + delay - now)

    def success(self, station_id: str, ip: str) -> None:
        """Record a successful login: the id's failures are forgotten, the pair is known-good."""
        self._failures.pop(f"id:{station_id}", None)
        self._good[(station_id, ip)] = None
        self._good.move_to_end((station_id, ip))
        while len(self._good) > self.policy.max_keys:
            self._good.popitem(last=False)

    def pending_started(self, ip: str) -> None:
        """A failed handshake from `ip` is now waiting for its delayed answer."""
        self._pending[ip] = self._pending.get(ip, 0) + 1

    def pending_ended(self, ip: str) -> None:
        """The delayed answer was sent (or the client left)."""
        left = self._pending.get(ip, 0) - 1
        if left > 0:
            self._pending[ip] = left
        else:
            self._pending.pop(ip, None)

    def failures(self, key: str, now: float) -> int:
        """Recent failures of `id:{station}` or `ip:{address}` (for tests and metrics)."""
        return self._count(key, now)
