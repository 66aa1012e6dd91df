"""What each EVSE counts against the site limit, and the fail-safe decisions (pure, no I/O).

The site-limit rule (ARCHITECTURE.md): at every instant the sum over the site's EVSEs of

- the limit the csms applied to a running session (its accepted TxProfile for THAT session),
- offline stations at their last accepted limit for the session (their maximum when none),
- stations that do not obey profiles (refused a profile, or draw more than allowed) at their
  metered maximum (or at what they draw, when that is more),
- idle EVSEs at the TxDefaultProfile they accepted (what a car plugged in now would draw),
  or at their maximum when they hold none,

stays <= the site limit. `counted_series` says what one EVSE counts; the service sums them.

Reservation policy (docs/smart-charging.md): every steerable EVSE carries a TxDefaultProfile of
`reserve_w(...)` = min(`reserve_kw_per_evse`, site limit / EVSEs, EVSE max); the default setting
is 0 kW ("zero until admitted"): a plug-in draws nothing until the csms admits the session with
a TxProfile (fair share or plan), so no plug-in can take the site over its limit.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from csms.smart_charging import planner
from csms.smart_charging.planner import Series

K = TypeVar("K", bound=Hashable)

REFUSAL_BACKOFF_MAX_S = 3600.0
"""Longest wait before a station that refused profiles is tried again."""


@dataclass(frozen=True)
class EvseBudgetState:
    """The facts about one EVSE that decide what it counts (see module doc)."""

    transaction_id: str
    online: bool
    steerable: bool
    max_power_w: float
    metered_max_w: float = 0.0
    """Highest power ever metered on the EVSE (a refusing station is budgeted at this if higher)."""
    record_tx: str = ""
    """transaction_id of the last accepted-profile record."""
    record_series: Series | None = None
    default_w: float | None = None
    """Limit of the TxDefaultProfile the station accepted (None = none installed)."""
    noncompliant_w: float | None = None
    """Power drawn above the accepted limit (set while the EVSE is non-compliant)."""


def counted_series(e: EvseBudgetState, now_s: float) -> Series:
    """The series one EVSE counts against the site limit from `now_s` on (module doc)."""
    top_w = max(e.max_power_w, e.metered_max_w)
    if not e.steerable:
        series = planner.constant(top_w, now_s)
    elif not e.transaction_id:
        series = planner.constant(min(e.default_w, top_w) if e.default_w is not None else top_w, now_s)
    elif e.record_tx == e.transaction_id and e.record_series:
        series = list(e.record_series)
    elif e.default_w is not None:  # the session draws at most the station's default until admitted
        series = planner.constant(min(e.default_w, top_w), now_s)
    else:
        series = planner.constant(top_w, now_s)
    if e.noncompliant_w is not None:
        series = planner.pointwise(series, planner.constant(e.noncompliant_w, now_s), now_s, "max")
    return series


def reserve_w(reserve_per_evse_w: float, site_limit_w: float, evse_count: int, max_power_w: float) -> float:
    """The TxDefaultProfile limit of an EVSE under the reservation policy (never negative)."""
    share = site_limit_w / evse_count if evse_count > 0 else site_limit_w
    return max(0.0, min(reserve_per_evse_w, share, max_power_w))


def refusal_backoff_s(refusals: int, base_s: float) -> float:
    """Seconds to wait before trying a refusing station again (doubling, capped at an hour)."""
    return float(min(REFUSAL_BACKOFF_MAX_S, base_s * (2 ** max(0, refusals - 1))))


def fair_shares(budget_w: float, caps_w: Mapping[K, float], mins_w: Mapping[K, float] | None = None,
                ) -> dict[K, float]:
    """Water-filling: one level L for all, each gets clamp(L, its minimum, its cap).

    Sessions whose minimum (the EV's minimum charging power) does not fit get 0 (paused), the
    largest minimums first, so no session is held below its minimum while another gets more
    than the level. Sum of shares <= `budget_w`.
    """
    mins = {k: min(max(0.0, (mins_w or {}).get(k, 0.0)), caps_w[k]) for k in caps_w}
    budget = max(0.0, budget_w)
    admitted = sorted(caps_w, key=lambda k: (mins[k], str(k)))
    while admitted and sum(mins[k] for k in admitted) > budget + 1e-9:
        admitted.pop()  # the largest minimum that does not fit waits (paused)
    out: dict[K, float] = dict.fromkeys(caps_w, 0.0)
    if not admitted:
        return out
    lo, hi = 0.0, max(caps_w[k] for k in admitted)

    def used(level: float) -> float:
        return sum(min(caps_w[k], max(mins[k], level)) for k in admitted)

    if used(hi) <= budget:
        lo = hi
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            if used(mid) <= budget:
                lo = mid
            else:
                hi = mid
    for k in admitted:
        out[k] = min(caps_w[k], max(mins[k], lo))
    return out


class Persistence:
    """Tracks since when a condition holds per key; `lasting` once it held for `after_s`."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._since: dict[Hashable, float] = {}

    def update(self, key: Hashable, holds: bool, now_s: float) -> bool:
        """Record the condition at `now_s`; True if it has held continuously for > `after_s`."""
        if not holds:
            self._since.pop(key, None)
            return False
        since = self._since.setdefault(key, now_s)
        return now_s - since > self.after_s

    def forget(self, key: Hashable) -> None:
        """Drop a key (its condition is no longer tracked)."""
        self._since.pop(key, None)
