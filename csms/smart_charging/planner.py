"""Power-limit series arithmetic for smart charging, pure (no Redis, no sockets).

A *series* is a piecewise-constant power limit over absolute time: a list of
``(posix_start_s, limit_w)`` sorted by start; the last value continues forever and the first
value also holds before its start (callers start series at or before "now"). Every function
looks only at the window from `now_s` on.

The decisions taken on these series (what each EVSE counts, the send order, churn control,
K17) are in `csms.smart_charging.budget`, the module that states the site-limit rule.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

Series = list[tuple[float, float]]

TOLERANCE_W = 1.0
"""Differences below this many watts are equal (rounding of A limits, float noise)."""


def drain(steps: Iterator[None]) -> None:
    """Run a stepped pure computation (one of the `*_steps` generators) to its end at once."""
    for _ in steps:
        pass


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
        if len(series) == 1:  # a constant (most EVSEs of a site): one start, no generator per series
            if series[0][0] > now_s:
                points.add(series[0][0])
            continue
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


def _equal(a: Series, b: Series) -> bool:
    """The same steps and values (no NaN: a NaN differs from everything, also from itself)."""
    return (a is b or a == b) and all(v == v for _, v in a)


def max_abs_diff_w(a: Series, b: Series, now_s: float) -> float:
    """Largest |a - b| from `now_s` on (0 for equal series, without sampling them: a pass compares
    every EVSE of the site, and most keep their series)."""
    if _equal(a, b):
        return 0.0
    if len(a) == 1 and len(b) == 1:  # two constants (most of a site's): one value each at every point
        return abs(a[0][1] - b[0][1])
    points = grid([a, b], now_s)
    return max(abs(x - y) for x, y in zip(sample(a, points), sample(b, points), strict=True))


def is_below(a: Series, b: Series, now_s: float, tol_w: float = TOLERANCE_W) -> bool:
    """a <= b (+tol) at every instant from `now_s` on."""
    if tol_w >= 0 and _equal(a, b):
        return True
    if len(a) == 1 and len(b) == 1:  # two constants: one value each at every point (no sampling)
        return a[0][1] <= b[0][1] + tol_w
    points = grid([a, b], now_s)
    return all(x <= y + tol_w for x, y in zip(sample(a, points), sample(b, points), strict=True))


def total(series_list: Sequence[Series], points: Sequence[float]) -> list[float]:
    """Sum of several series at `points`.

    A one-step series (a constant from its start on, and before it: see module doc) adds its value
    at every point without being sampled: a whole-site sum over 20,000 EVSEs, most of them
    constants, was 20,000 samplings per pass (issue 14)."""
    sums = [0.0] * len(points)
    flat_w = 0.0
    for series in series_list:
        if len(series) == 1:
            flat_w += series[0][1]
            continue
        for i, v in enumerate(sample(series, points)):
            sums[i] += v
    return [s + flat_w for s in sums] if flat_w else sums
