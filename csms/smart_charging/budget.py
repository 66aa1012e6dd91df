"""The site-limit rule and every smart-charging policy that keeps it (pure, no I/O).

This is the one module that states the site limit; the service (`service`, `actions`,
`safety`) only reads state, asks these functions and sends what they return.

The site-limit rule (ARCHITECTURE.md): at every instant the sum over the site's EVSEs of

- the limit the csms applied to a running session (its accepted TxProfile for THAT session),
- offline stations at their last accepted limit for the session (their maximum when none),
- stations that do not obey profiles (refused a profile, or draw more than allowed) at their
  metered maximum (or at what they draw, when that is more),
- idle EVSEs at the TxDefaultProfile they accepted (what a car plugged in now would draw),
  or at their maximum when they hold none,

stays <= the site budget: the site limit minus the site margin (`site_margin_kw`, published
beside the default limit, `evfleet.store.sites.budget_kw`; the optimizer plans with the same
figure). The margin is never handed out: it absorbs a draw nobody allowed (a station that ignores
its limits, e.g. draws its maximum from plug-in while it was allowed 0 W) until the watchdog
(`watchdog.tick`) marks the station non-compliant and the others are lowered. So the site limit
itself holds at every instant as long as the power drawn without permission stays within the
margin; with a margin of the largest EVSE maximum that is any one misbehaving station ("N-1").
With the default margin of 0 such a station takes the site over until it is found
(`noncompliant_after_s` plus a meter interval). How each part holds:

- what one EVSE counts: `counted_series` (the service sums them; the optimizer's snapshot
  counts the same facts as fixed load);
- ordering: `next_batch` sends decreases before increases and counts a change in flight at
  max(old, new), so whatever subset of a batch the stations apply, the sum stays within the
  budget; the caller sends a batch, waits for every answer, updates `applied` and asks again;
- a lower limit: `scale_factor` scales the steerable sessions down by one factor so the sum
  fits at every instant (all decreases);
- churn control (K16): `churn_filter` keeps an applied series only while the targets still fit;
- headroom without a (covering) plan: `csms/smart_charging/provisional.py`, the second pure
  policy that hands out headroom, picks who shares (provisional at the EV's needs, late plan,
  silent optimizer) and gives each a series of water-filled `fair_shares` of what all the others
  count at every instant, so shares + others <= budget; a session held only by a provisional share
  (0 W on a full site) counts as waiting for its plan once no plan came for
  `interim_profile_after_s`, so freed power reaches it while the optimizer is down;
- the EV's own plan (K17): `check_ev_plan` compares it with the limits we sent;
- stations that refuse: budgeted at their maximum, retried after `refusal_backoff_s`.

Reservation policy (docs/smart-charging.md): every steerable EVSE carries a TxDefaultProfile of
`reserve_w(...)` = min(`reserve_kw_per_evse`, site budget / EVSEs, EVSE max); the default setting
is 0 kW ("zero until admitted"): a plug-in draws nothing until the csms admits the session with
a TxProfile (fair share or plan), so no plug-in can take the site over its limit.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from csms.smart_charging import planner
from csms.smart_charging.planner import Series

K = TypeVar("K", bound=Hashable)

REFUSAL_BACKOFF_MAX_S = 3600.0
"""Longest wait before a station that refused profiles is tried again."""


class EvseBudgetState(NamedTuple):
    """The facts about one EVSE that decide what it counts (see module doc). Immutable; a named
    tuple, not a frozen dataclass: a whole-site pass builds one per EVSE, and a frozen dataclass's
    `__init__` (one `object.__setattr__` per field) was most of `EvseInfo.applied` (issue 14)."""

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
        series = e.record_series  # not copied (a whole-site pass counts every EVSE): never changed in place
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

    Exact in O(N + G log G) for G distinct (minimum, cap) pairs: the sum of clamp(L, minimum, cap)
    is piecewise linear in L, with its bends at the minimums and caps; the level is found on the
    segment where the sum reaches the budget (a sweep over the distinct pairs, each weighted by
    how many sessions have it: a site's sessions have few distinct pairs, and a sort of 20,000
    sessions held the event loop for 90 ms per re-share, issue 14), then lowered if rounding
    left the sum above the budget.
    """
    out: dict[K, float] = {}
    planner.drain(fair_shares_steps(budget_w, caps_w, mins_w, out))
    return out


STEP_KEYS = 1000
"""Sessions `fair_shares_steps` handles between two of its steps (about a millisecond)."""


def fair_shares_steps(budget_w: float, caps_w: Mapping[K, float], mins_w: Mapping[K, float] | None,
                      out: dict[K, float]) -> Iterator[None]:
    """`fair_shares` into `out`, a step (a `yield`) after every `STEP_KEYS` sessions of its per-session
    loops, so an async caller can leave the event loop between steps (20,000 sessions were 16-50 ms
    in one stretch, issue 14). Pure: the same arithmetic in the same order as in one go (the sums
    stay one `sum` each), so the shares are the same however the steps are spread."""
    lows = mins_w or {}
    keys = list(caps_w)
    mins: dict[K, float] = {}
    for lo_i in range(0, len(keys), STEP_KEYS):
        for k in keys[lo_i:lo_i + STEP_KEYS]:
            mins[k] = min(max(0.0, lows.get(k, 0.0)), caps_w[k])
        yield
    budget = max(0.0, budget_w)
    paused = _paused(mins, budget)
    out.clear()
    out.update(dict.fromkeys(caps_w, 0.0))
    bounds: dict[tuple[float, float], int] = {}
    for lo_i in range(0, len(keys), STEP_KEYS):
        for k in keys[lo_i:lo_i + STEP_KEYS]:
            if k not in paused:
                pair = (mins[k], caps_w[k])
                bounds[pair] = bounds.get(pair, 0) + 1
        yield
    if not bounds:
        return
    level, before = _level(budget, bounds), math.inf
    for _ in range(64):  # the shares' own sum (the pairs' was n x share): never above the budget
        for lo_i in range(0, len(keys), STEP_KEYS):
            for k in keys[lo_i:lo_i + STEP_KEYS]:
                if k not in paused:
                    out[k] = min(caps_w[k], max(mins[k], level))
            yield
        excess = sum(out.values()) - budget
        if excess <= 0.0 or excess >= before:  # fits, or only minimums left (within 1e-9, `_paused`)
            break
        before, level = excess, _lowered(level, excess, bounds)


def _lowered(level: float, excess_w: float, bounds: Mapping[tuple[float, float], int]) -> float:
    """`level` lowered so the sessions following it (minimum < level <= cap) give back about
    `excess_w` (float rounding of a sum; at least a few ulps of the level)."""
    following = sum(n for (lo, hi), n in bounds.items() if lo < level <= hi)
    return max(0.0, level - max(excess_w / max(1, following), 1e-12 * max(1.0, level)))


def _paused(mins: Mapping[K, float], budget_w: float) -> set[K]:
    """The sessions whose minimum does not fit (`fair_shares`): while the minimums sum above
    `budget_w`, the largest minimum (ties: the largest key as a string) waits."""
    if sum(mins.values()) <= budget_w + 1e-9:
        return set()  # every minimum fits: no sort
    ordered = sorted(mins, key=lambda k: (mins[k], str(k)))
    floor_w, fit = 0.0, 0
    for k in ordered:  # the smallest first: a sum of the admitted, not a difference (no cancellation)
        if floor_w + mins[k] > budget_w + 1e-9:
            break
        floor_w += mins[k]
        fit += 1
    return set(ordered[fit:])


def _level(budget_w: float, bounds: Mapping[tuple[float, float], int]) -> float:
    """The highest level L with sum(n x clamp(L, lo, hi) for (lo, hi), n in `bounds`) <= `budget_w`,
    capped at the largest hi (every lo <= hi, the sum of the n x lo <= budget_w + 1e-9)."""
    top = max(hi for _, hi in bounds)

    def used(level: float) -> float:
        return sum(n * min(hi, max(lo, level)) for (lo, hi), n in bounds.items())

    if used(top) <= budget_w:
        return top
    # bends: at lo n sessions start following L (slope +n), at hi they stop (slope -n)
    bends = sorted([(lo, n) for (lo, hi), n in bounds.items() if lo < hi]
                   + [(hi, -n) for (lo, hi), n in bounds.items() if lo < hi])
    prev, total, slope, level = 0.0, sum(n * lo for (lo, _), n in bounds.items()), 0, 0.0
    for point, step in bends:
        reach = total + slope * (point - prev)
        if reach >= budget_w and slope > 0:
            level = prev + (budget_w - total) / slope
            break
        prev, total, slope = point, reach, slope + step
    else:
        level = prev
    level = max(0.0, min(level, top))
    for _ in range(64):  # float rounding: never hand out more than the budget (steps of a few ulps)
        excess = used(level) - budget_w
        if excess <= 0.0:
            return level
        level = _lowered(level, excess, bounds)
    return 0.0


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

    def __contains__(self, key: object) -> bool:
        """Whether the key's condition holds (its clock runs)."""
        return key in self._since


@dataclass(frozen=True)
class Change(Generic[K]):
    """One profile to send now: the series it applies and whether it is the final target."""

    key: K
    series: Series
    final: bool


def next_batch(applied: Mapping[K, Series], target: Mapping[K, Series], budget_w: float,
               now_s: float, tol_w: float = planner.TOLERANCE_W) -> list[Change[K]]:
    """Changes that are safe to send now (see module doc); empty when nothing more can move.

    Pure decreases go out at once. An increase goes out in the same batch only if the sum,
    counting every in-flight change at max(old, new), stays within `budget_w` at every
    instant; a mixed change that does not fit sends its decreasing half (min(old, new)) first.
    Keys missing from `applied` count as 0 W now.
    """
    pending = [k for k in target if not _same(applied.get(k), target[k], now_s, tol_w)]
    if not pending:
        return []
    all_series = list(applied.values()) + [target[k] for k in pending]
    points = planner.grid(all_series, now_s)
    load = planner.total(list(applied.values()), points)
    batch: list[Change[K]] = []
    increases: list[K] = []
    for key in pending:
        old = applied.get(key) or planner.constant(0.0, now_s)
        if planner.is_below(target[key], old, now_s, tol_w):
            batch.append(Change(key, target[key], True))
        else:
            increases.append(key)
    for key in increases:
        old = applied.get(key) or planner.constant(0.0, now_s)
        new = target[key]
        extra = [max(0.0, n - o)
                 for n, o in zip(planner.sample(new, points), planner.sample(old, points), strict=True)]
        if all(ld + e <= budget_w + tol_w for ld, e in zip(load, extra, strict=True)):
            batch.append(Change(key, new, True))
            load = [ld + e for ld, e in zip(load, extra, strict=True)]
        else:
            lower = planner.pointwise(old, new, now_s, "min")
            if not _same(old, lower, now_s, tol_w):
                batch.append(Change(key, lower, False))
    return batch


def _same(a: Series | None, b: Series, now_s: float, tol_w: float) -> bool:
    if a is None:
        return False
    return planner.max_abs_diff_w(a, b, now_s) <= tol_w


@dataclass(frozen=True)
class ChurnDecision(Generic[K]):
    """Targets after churn control and the keys whose small changes were skipped."""

    target: dict[K, Series]
    skipped: list[K]


def churn_filter(applied: Mapping[K, Series], planned: Mapping[K, Series], budget_w: float,
                 threshold_w: float, now_s: float) -> ChurnDecision[K]:
    """K16: keep the applied series where the plan moves no instant by more than `threshold_w`.

    Skipping is only allowed while the final targets still fit the budget: if they would not,
    the skipped changes that lower a limit somewhere are sent after all.
    """
    target: dict[K, Series] = dict(planned)
    skipped: list[K] = []
    for key, new in planned.items():
        old = applied.get(key)
        if old is not None and planner.max_abs_diff_w(old, new, now_s) <= threshold_w:
            target[key] = old
            skipped.append(key)
    fixed = {k: v for k, v in applied.items() if k not in target}
    points = planner.grid(list(target.values()) + list(fixed.values()), now_s)
    sums = planner.total(list(target.values()) + list(fixed.values()), points)
    if skipped and any(s > budget_w + planner.TOLERANCE_W for s in sums):
        for key in list(skipped):
            if not planner.is_below(applied[key], planned[key], now_s, 0.0):
                target[key] = planned[key]
                skipped.remove(key)
    return ChurnDecision(target, skipped)


def scale_factor(fixed_load_w: Sequence[float], movable_load_w: Sequence[float], budget_w: float,
                 tol_w: float = planner.TOLERANCE_W) -> float | None:
    """One factor in [0, 1] for the movable (steerable) load so fixed + factor * movable fits
    `budget_w` at every sampled instant; None when it already fits (nothing to lower)."""
    pairs = list(zip(fixed_load_w, movable_load_w, strict=True))
    if all(f + m <= budget_w + tol_w for f, m in pairs):
        return None
    factor = min((max(0.0, budget_w - f) / m) if m > 0 else 1.0 for f, m in pairs)
    return max(0.0, min(1.0, factor))


def fair_share_w(budget_w: float, other_load_w: float, new_count: int, max_w: float,
                 fallback_w: float | None = None) -> float:
    """Interim limit for each of `new_count` EVSEs: an equal share of the remaining headroom.

    Capped by the EVSE maximum and by `fallback_w` when set; never negative.
    """
    if new_count <= 0:
        return 0.0
    share = max(0.0, budget_w - other_load_w) / new_count
    limit = min(share, max_w)
    if fallback_w is not None:
        limit = min(limit, fallback_w)
    return max(0.0, limit)


@dataclass(frozen=True)
class K17Result:
    """Outcome of checking an EV's own plan against the limits we sent."""

    within_limits: bool
    worst_excess_w: float
    at_s: float | None


def check_ev_plan(ev_plan: Series, sent: Series, now_s: float, tol_w: float,
                  edge_s: float = 3.0) -> K17Result:
    """K17: does the EV's plan stay at or below our limits from `now_s` on?

    Compared on every interval between change points of either series (at its middle);
    intervals of at most `edge_s` seconds are ignored: ISO 15118-2 schedule times are whole
    seconds relative to the EV's time base, so a change point may move by up to a second or so.
    """
    points = planner.grid([ev_plan, sent], now_s)
    ends = [*points[1:], points[-1] + 2 * edge_s + 2.0]
    worst, at = 0.0, None
    for a, b in zip(points, ends, strict=True):
        if b - a <= edge_s:
            continue
        mid = (a + b) / 2
        excess = planner.value_at(ev_plan, mid) - planner.value_at(sent, mid)
        if excess > worst:
            worst, at = excess, a
    return K17Result(worst <= tol_w, worst, at if worst > tol_w else None)
