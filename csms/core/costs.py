"""What a charging session cost, from its meter samples and the site's price series (pure).

`session_cost` splits the energy between two consecutive meter samples evenly over the time between
them and prices each part at the step of the price series it falls in. `uncontrolled_cost` is what
the same energy would have cost charged at once from the start, at the session's highest power (the
"plug in and charge" baseline the optimizer is measured against). Energy outside the price series is
not priced: both return None then, rather than a number that leaves part of the session out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from csms.core.timeutil import TimestampError, parse_ts


@dataclass(frozen=True)
class PriceSeries:
    """Import prices per step from `start` (currency per kWh)."""

    start: datetime
    step: timedelta
    prices: tuple[float, ...]

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> PriceSeries | None:
        """The stored `site:{id}:prices` document, or None when it is missing or unreadable."""
        try:
            return cls(parse_ts(str(doc["start"])), timedelta(minutes=float(doc["step_minutes"])),
                       tuple(float(p) for p in doc["import_price"]))
        except (KeyError, TypeError, ValueError, TimestampError):
            return None

    @property
    def end(self) -> datetime:
        """End of the last step."""
        return self.start + self.step * len(self.prices)

    def cost(self, begin: datetime, end: datetime, energy_kwh: float) -> float | None:
        """Cost of `energy_kwh` drawn evenly from `begin` to `end`; None if outside the series."""
        if energy_kwh <= 0:
            return 0.0
        if end <= begin:  # an instantaneous jump: priced at the step it happened in
            index = int((begin - self.start) / self.step)
            return energy_kwh * self.prices[index] if 0 <= index < len(self.prices) else None
        if begin < self.start or end > self.end:
            return None
        total, span = 0.0, (end - begin).total_seconds()
        index = int((begin - self.start) / self.step)
        t = begin
        while t < end:
            step_end = min(end, self.start + self.step * (index + 1))
            total += energy_kwh * (step_end - t).total_seconds() / span * self.prices[index]
            t, index = step_end, index + 1
        return total


def session_cost(samples: list[dict[str, Any]], prices: PriceSeries | None) -> float | None:
    """Energy cost of a session from its meter samples ({ts, energy_wh}), oldest first."""
    points = _energy_points(samples)
    if prices is None or len(points) < 2:
        return None if prices is None else 0.0
    total = 0.0
    for (t0, e0), (t1, e1) in zip(points, points[1:], strict=False):
        part = prices.cost(t0, t1, max(0.0, e1 - e0) / 1000.0)
        if part is None:
            return None
        total += part
    return total


def uncontrolled_cost(samples: list[dict[str, Any]], prices: PriceSeries | None,
                      max_power_w: float | None = None) -> float | None:
    """What the session's energy would have cost charged at once from its first sample.

    The power is `max_power_w` when given (the EVSE's maximum), else the highest power the session
    drew (sample `power_w`, or energy over time between samples).
    """
    points = _energy_points(samples)
    if prices is None or len(points) < 2:
        return None if prices is None else 0.0
    energy_wh = max(0.0, points[-1][1] - points[0][1])
    power_w = max_power_w or max([_power(s) for s in samples] + [
        (e1 - e0) * 3600.0 / max(1.0, (t1 - t0).total_seconds())
        for (t0, e0), (t1, e1) in zip(points, points[1:], strict=False)])
    if energy_wh <= 0 or power_w <= 0:
        return 0.0
    begin = points[0][0]
    return prices.cost(begin, begin + timedelta(hours=energy_wh / power_w), energy_wh / 1000.0)


def _energy_points(samples: list[dict[str, Any]]) -> list[tuple[datetime, float]]:
    points = []
    for sample in samples:
        try:
            points.append((parse_ts(str(sample["ts"])), float(sample["energy_wh"])))
        except (KeyError, TypeError, ValueError, TimestampError):
            continue
    points.sort(key=lambda p: p[0])
    return points


def _power(sample: dict[str, Any]) -> float:
    try:
        return float(sample.get("power_w") or 0.0)
    except (TypeError, ValueError):
        return 0.0
