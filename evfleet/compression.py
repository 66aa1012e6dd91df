"""Fit a charging schedule into an EV's `maxScheduleTuples` without losing planned energy (pure).

A plan is a list of periods `(start_s, limit)`; the last one holds until `end_s`. An EV that
accepts only `max_periods` periods gets fewer, longer ones. The rules, in order:

1. **Energy.** The compressed profile allows at least the plan's energy before the plan's last
   charging period ends (`done_s`, never after the EV's departure): merging two periods gives
   them the limit that keeps the energy they allowed before `done_s` (the duration-weighted mean,
   rounded *up* to the 0.1 grid of OCPP limits, never above the higher of the two). So the
   cumulative energy allowed at every remaining period boundary up to `done_s` is at least the
   plan's there, and an EV that draws what it is offered gets its planned energy in time.
2. **Cost.** Merging moves energy between the two periods' time slots; the merge chosen is the
   one that adds the least cost (price x limit x time over the merged slots, from the price series;
   flat when there is none), so a costlier slot is opened only when no cheaper merge is left (one
   period holds one limit: with `max_periods = 1` it necessarily spans every slot). A limit left
   open after `done_s` costs like any other: the EV may not draw it, but it holds site budget.
3. **Shape.** Among equal costs, the merge that changes the least energy (sum of |limit change| x
   duration); after `done_s` the merged limit is the lower one (nothing is planned there).

Limits never exceed the higher of the merged periods', so the EV's maximum still caps every
period. Raising a period above the plan can exceed the site budget the plan was made for; the
csms sends a profile only when its whole series fits the site limit (decreases first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Period = tuple[int, float]
"""(start_s from schedule start, limit) of one charging schedule period."""

DISTORTION_WEIGHT = 1e-9
"""Weight of the shape term next to the cost term (cost decides; shape breaks ties)."""


def merge_equal(periods: Sequence[Period]) -> list[Period]:
    """Drop periods whose limit equals the previous one."""
    out: list[Period] = []
    for start, limit in periods:
        if out and out[-1][1] == limit:
            continue
        out.append((start, limit))
    return out


def ceil1(value: float) -> float:
    """Round up to one decimal (never down), tolerating float noise."""
    return math.ceil(value * 10.0 - 1e-6) / 10.0


def energy_between(periods: Sequence[Period], end_s: float, t0: float, t1: float) -> float:
    """Integral of the limit over [t0, t1] (limit x seconds); the last period holds until `end_s`."""
    total = 0.0
    for i, (start, limit) in enumerate(periods):
        stop = periods[i + 1][0] if i + 1 < len(periods) else max(end_s, t1)
        lo, hi = max(start, t0), min(stop, t1)
        if hi > lo:
            total += limit * (hi - lo)
    return total


def done_time(periods: Sequence[Period], end_s: int) -> int:
    """End of the last period with a positive limit (0 when none)."""
    for i in range(len(periods) - 1, -1, -1):
        if periods[i][1] > 0:
            return periods[i + 1][0] if i + 1 < len(periods) else end_s
    return 0


@dataclass
class _Block:
    start: int
    stop: int
    limit: float
    pre_s: float
    """Seconds of the block before done_s."""
    price_s: float
    """Integral of the price over the block (a limit after done_s still holds site budget)."""


def _price_integral(prices: Sequence[Period] | None, t0: float, t1: float) -> float:
    if t1 <= t0:
        return 0.0
    if not prices:
        return t1 - t0
    return energy_between(prices, max(t1, prices[-1][0] + 1), t0, t1)


def _merged(a: _Block, b: _Block) -> tuple[float, float]:
    """(limit, cost delta + tie term) of merging adjacent blocks a, b."""
    pre = a.pre_s + b.pre_s
    if pre <= 0:
        limit = min(a.limit, b.limit)
    else:
        mean = (a.limit * a.pre_s + b.limit * b.pre_s) / pre
        limit = min(max(a.limit, b.limit), ceil1(mean))
    old = a.limit * a.price_s + b.limit * b.price_s
    new = limit * (a.price_s + b.price_s)
    shape = abs(limit - a.limit) * (a.stop - a.start) + abs(limit - b.limit) * (b.stop - b.start)
    return limit, (new - old) + DISTORTION_WEIGHT * shape


def compress_periods(periods: Sequence[Period], end_s: int, max_periods: int,
                     prices: Sequence[Period] | None = None) -> list[Period]:
    """At most `max_periods` periods that allow at least the plan's energy before it ends (module doc).

    `prices` is the price series on the same time axis `(start_s, price)` (None = flat): merges that
    open costlier slots come last. Raises ValueError for `max_periods < 1`.
    """
    if max_periods < 1:
        raise ValueError(f"max_periods must be >= 1, got {max_periods}")
    out = merge_equal(periods)
    if len(out) <= max_periods:
        return out
    done_s = done_time(out, end_s)
    blocks = []
    for i, (start, limit) in enumerate(out):
        stop = out[i + 1][0] if i + 1 < len(out) else max(end_s, start + 1)
        blocks.append(_Block(start, stop, limit, max(0.0, min(stop, done_s) - start),
                             _price_integral(prices, start, stop)))
    while len(blocks) > max_periods:
        best_i, best_key, best_limit = 0, math.inf, 0.0
        for i in range(len(blocks) - 1):
            limit, key = _merged(blocks[i], blocks[i + 1])
            if key < best_key:
                best_i, best_key, best_limit = i, key, limit
        a, b = blocks[best_i], blocks[best_i + 1]
        blocks[best_i : best_i + 2] = [_Block(a.start, b.stop, best_limit, a.pre_s + b.pre_s,
                                              a.price_s + b.price_s)]
        # neighbours with the same limit become one period (they need no tuple of their own)
        i = 0
        while i + 1 < len(blocks):
            if blocks[i].limit == blocks[i + 1].limit:
                a, b = blocks[i], blocks[i + 1]
                blocks[i : i + 2] = [_Block(a.start, b.stop, a.limit, a.pre_s + b.pre_s,
                                            a.price_s + b.price_s)]
            else:
                i += 1
    return [(b.start, b.limit) for b in blocks]
