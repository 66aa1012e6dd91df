"""Site load from what the stations reported: cumulative meter samples in, a load series out.

Each transaction's samples are cumulative energy readings (Energy.Active.Import.Register).
The energy between two consecutive readings is spread evenly over the time between them
and summed into fixed steps; a step's load is its energy divided by its length. An
average never exceeds the instantaneous maximum, so a load series built this way exceeds
the site limit only if the stations really drew more than the limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from evfleet.app.demo.report import LoadSeries, ReportError


@dataclass(frozen=True)
class MeterSample:
    """One cumulative energy reading of a transaction."""

    ts: datetime
    energy_wh: float


def delivered_wh(samples: Sequence[MeterSample]) -> float:
    """Energy between the first and last reading (register resets are skipped)."""
    ordered = sorted(samples, key=lambda s: s.ts)
    total = 0.0
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if cur.energy_wh >= prev.energy_wh:
            total += cur.energy_wh - prev.energy_wh
    return total


def site_load(transactions: Iterable[Sequence[MeterSample]], start: datetime, end: datetime,
              step_s: float) -> LoadSeries:
    """Sum of all transactions' load, averaged over steps of `step_s` from `start` to `end`."""
    if step_s <= 0:
        raise ReportError(f"step must be positive, got {step_s} s")
    span_s = (end - start).total_seconds()
    if span_s <= 0:
        raise ReportError(f"empty window {start.isoformat()} .. {end.isoformat()}")
    n_steps = max(1, int(round(span_s / step_s)))
    energy_kwh = [0.0] * n_steps
    t0 = start.timestamp()
    for samples in transactions:
        ordered = sorted(samples, key=lambda s: s.ts)
        for prev, cur in zip(ordered, ordered[1:], strict=False):
            delta_kwh = (cur.energy_wh - prev.energy_wh) / 1000.0
            if delta_kwh <= 0:
                continue
            _spread(energy_kwh, prev.ts.timestamp() - t0, cur.ts.timestamp() - t0, delta_kwh, step_s)
    step_h = step_s / 3600.0
    return LoadSeries(start, step_s, tuple(e / step_h for e in energy_kwh))


def _spread(bins: list[float], a_s: float, b_s: float, energy_kwh: float, step_s: float) -> None:
    """Add `energy_kwh`, drawn evenly over [a_s, b_s) seconds from the window start, to `bins`."""
    n = len(bins)
    if b_s <= a_s:
        index = int(a_s // step_s)
        if 0 <= index < n:
            bins[index] += energy_kwh
        return
    rate = energy_kwh / (b_s - a_s)
    first = max(0, int(a_s // step_s))
    last = min(n - 1, int(b_s // step_s))
    for index in range(first, last + 1):
        lo = max(a_s, index * step_s)
        hi = min(b_s, (index + 1) * step_s)
        if hi > lo:
            bins[index] += rate * (hi - lo)
