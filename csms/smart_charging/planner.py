"""Smart-charging decisions, pure (no Redis, no sockets): ordering, churn control, K17 checks.

A *series* is a piecewise-constant power limit over absolute time: a list of
``(posix_start_s, limit_w)`` sorted by start; the last value continues forever and the first
value also holds before its start (callers start series at or before "now"). Every function
looks only at the window from `now_s` on.

The ordering rule (ARCHITECTURE.md): the sum of applied limits never exceeds the site limit;
decreases are confirmed before increases are sent. `next_batch` returns the changes that can be
sent *now*, counting a change in flight at the max of its old and new series, so whatever
subset of a batch the stations apply, the sum stays within the budget. The caller sends a
batch, waits for every answer, updates `applied`, and asks again until the batch is empty.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Series = list[tuple[float, float]]

TOLERANCE_W = 1.0
"""Differences below this many watts are equal (rounding of A limits, float noise)."""


def constant(limit_w: float, start_s: float = 0.0) -> Series:
    """A series holding one value."""
    return [(start_s, float(limit_w))]


def from_steps(start_s: float, step_s: float, limits_w: Sequence[float]) -> Series:
    """A series from equal steps (the last step's value continues)."""
    if not limits_w:
        raise ValueError("a series needs at least one value")
    return [(start_s + i * step_s, float(v)) for i, v in enumerate(limits_w)]


def value_at(series: Series, t_s: float) -> float:
    """Value in force at `t_s`."""
    i = bisect.bisect_right([s for s, _ in series], t_s) - 1
    return series[max(0, i)][1]


def grid(series_list: Iterable[Series], now_s: float) -> list[float]:
    """Every instant from `now_s` on where any series may change (plus `now_s`)."""
    points = {now_s}
    for series in series_list:
        points.update(s for s, _ in series if s > now_s)
    return sorted(points)


def sample(series: Series, points: Sequence[float]) -> list[float]:
    """Values of `series` at `points` (sorted)."""
    starts = [s for s, _ in series]
    out = []
    for t in points:
        i = bisect.bisect_right(starts, t) - 1
        out.append(series[max(0, i)][1])
    return out


def pointwise(a: Series, b: Series, now_s: float, op: str) -> Series:
    """min/max of two series from `now_s` on (compact: equal neighbours merged)."""
    points = grid([a, b], now_s)
    fn = min if op == "min" else max
    values = [fn(x, y) for x, y in zip(sample(a, points), sample(b, points), strict=True)]
    out: Series = []
    for t, v in zip(points, values, strict=True):
        if not out or abs(out[-1][1] - v) > 1e-9:
            out.append((t, v))
    return out


def series_to_steps(series: Series, t0_s: float, step_s: float, end_s: float) -> list[float]:
    """Equal steps from `t0_s` to `end_s`, each the MIN of the series over the step (never above it)."""
    out: list[float] = []
    t = t0_s
    while t < end_s or not out:
        inside = [v for s, v in series if t < s < t + step_s]
        out.append(min([value_at(series, t), *inside]))
        t += step_s
    return out


def max_abs_diff_w(a: Series, b: Series, now_s: float) -> float:
    """Largest |a - b| from `now_s` on."""
    points = grid([a, b], now_s)
    return max(abs(x - y) for x, y in zip(sample(a, points), sample(b, points), strict=True))


def is_below(a: Series, b: Series, now_s: float, tol_w: float = TOLERANCE_W) -> bool:
    """a <= b (+tol) at every instant from `now_s` on."""
    points = grid([a, b], now_s)
    return all(x <= y + tol_w for x, y in zip(sample(a, points), sample(b, points), strict=True))


def total(series_list: Sequence[Series], points: Sequence[float]) -> list[float]:
    """Sum of several series at `points`."""
    sums = [0.0] * len(points)
    for series in series_list:
        for i, v in enumerate(sample(series, points)):
            sums[i] += v
    return sums


@dataclass(frozen=True)
class Change(Generic[K]):
    """One profile to send now: the series it applies and whether it is the final target."""

    key: K
    series: Series
    final: bool


def next_batch(applied: Mapping[K, Series], target: Mapping[K, Series], budget_w: float,
               now_s: float, tol_w: float = TOLERANCE_W) -> list[Change[K]]:
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
    points = grid(all_series, now_s)
    load = total(list(applied.values()), points)
    batch: list[Change[K]] = []
    increases: list[K] = []
    for key in pending:
        old = applied.get(key) or constant(0.0, now_s)
        if is_below(target[key], old, now_s, tol_w):
            batch.append(Change(key, target[key], True))
        else:
            increases.append(key)
    for key in increases:
        old = applied.get(key) or constant(0.0, now_s)
        new = target[key]
        extra = [max(0.0, n - o) for n, o in zip(sample(new, points), sample(old, points), strict=True)]
        if all(ld + e <= budget_w + tol_w for ld, e in zip(load, extra, strict=True)):
            batch.append(Change(key, new, True))
            load = [ld + e for ld, e in zip(load, extra, strict=True)]
        else:
            lower = pointwise(old, new, now_s, "min")
            if not _same(old, lower, now_s, tol_w):
                batch.append(Change(key, lower, False))
    return batch


def _same(a: Series | None, b: Series, now_s: float, tol_w: float) -> bool:
    if a is None:
        return False
    return max_abs_diff_w(a, b, now_s) <= tol_w


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
        if old is not None and max_abs_diff_w(old, new, now_s) <= threshold_w:
            target[key] = old
            skipped.append(key)
    fixed = {k: v for k, v in applied.items() if k not in target}
    points = grid(list(target.values()) + list(fixed.values()), now_s)
    sums = total(list(target.values()) + list(fixed.values()), points)
    if skipped and any(s > budget_w + TOLERANCE_W for s in sums):
        for key in list(skipped):
            if not is_below(applied[key], planned[key], now_s, 0.0):
                target[key] = planned[key]
                skipped.remove(key)
    return ChurnDecision(target, skipped)


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
    points = grid([ev_plan, sent], now_s)
    ends = [*points[1:], points[-1] + 2 * edge_s + 2.0]
    worst, at = 0.0, None
    for a, b in zip(points, ends, strict=True):
        if b - a <= edge_s:
            continue
        mid = (a + b) / 2
        excess = value_at(ev_plan, mid) - value_at(sent, mid)
        if excess > worst:
            worst, at = excess, a
    return K17Result(worst <= tol_w, worst, at if worst > tol_w else None)
