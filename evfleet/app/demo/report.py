"""The demo's savings report as pure functions: load series, prices and cars in, metrics out.

No Redis, no sockets, no clock: `collect.py` reads what the stations reported and
`replay.py` computes the uncontrolled counterfactual; this module turns both into the
figures of `report.json` (energy cost, peak, energy delivered, cars short of their need,
saving) with the same price series, so the two runs are costed identically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


class ReportError(ValueError):
    """The inputs of the report are inconsistent (empty series, bad step, unknown car...)."""


@dataclass(frozen=True)
class PriceSeries:
    """Import prices per kWh, piecewise constant from `start` in steps of `step_minutes`.

    The series repeats after its last step (a daily tariff covers every day).
    """

    start: datetime
    step_minutes: float
    import_price: tuple[float, ...]
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if self.step_minutes <= 0:
            raise ReportError(f"price step must be positive, got {self.step_minutes} min")
        if not self.import_price:
            raise ReportError("price series is empty")
        if self.start.tzinfo is None:
            raise ReportError("price series start must be timezone-aware")

    def price_at(self, when: datetime) -> float:
        """Price per kWh in force at `when`."""
        offset_min = (when - self.start).total_seconds() / 60.0
        index = math.floor(offset_min / self.step_minutes + 1e-9) % len(self.import_price)
        return self.import_price[index]

    def repeated(self, times: int) -> PriceSeries:
        """The same series `times` times in a row (a daily tariff over several days)."""
        return PriceSeries(self.start, self.step_minutes, self.import_price * times, self.currency)

    def to_json(self) -> dict[str, Any]:
        """The `evfleet:site:{site}:prices` document (docs/redis-schema.md)."""
        return {
            "start": self.start.isoformat(),
            "step_minutes": self.step_minutes,
            "import_price": list(self.import_price),
            "export_price": [0.0] * len(self.import_price),
        }


@dataclass(frozen=True)
class LoadSeries:
    """Site load in kW, average over each step of `step_s` seconds from `start`."""

    start: datetime
    step_s: float
    load_kw: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.step_s <= 0:
            raise ReportError(f"load step must be positive, got {self.step_s} s")

    @property
    def end(self) -> datetime:
        """End of the last step."""
        return self.start + timedelta(seconds=self.step_s * len(self.load_kw))

    def times(self) -> list[datetime]:
        """Start instant of every step."""
        return [self.start + timedelta(seconds=self.step_s * i) for i in range(len(self.load_kw))]

    def energy_kwh(self) -> float:
        """Energy drawn over the whole series."""
        return sum(self.load_kw) * self.step_s / 3600.0

    def resample(self, step_s: float) -> LoadSeries:
        """Averages over coarser steps (`step_s` must be a multiple of this series' step)."""
        ratio = step_s / self.step_s
        factor = round(ratio)
        if factor < 1 or abs(ratio - factor) > 1e-9:
            raise ReportError(f"cannot resample {self.step_s} s steps to {step_s} s")
        out: list[float] = []
        for i in range(0, len(self.load_kw), factor):
            chunk = self.load_kw[i:i + factor]
            out.append(sum(chunk) / factor)
        return LoadSeries(self.start, step_s, tuple(out))


@dataclass(frozen=True)
class CarRecord:
    """One car's session as one run saw it."""

    car_id: str
    station_id: str
    evse_id: int
    arrival: datetime
    departure: datetime
    need_kwh: float
    delivered_kwh: float
    iso15118: bool = True
    left: bool = True  # False = still plugged in when the run ended

    def shortfall_kwh(self) -> float:
        """Energy still missing from its need (0 when met)."""
        return max(0.0, self.need_kwh - self.delivered_kwh)


@dataclass(frozen=True)
class RunMetrics:
    """The figures of one run (optimized or uncontrolled)."""

    name: str
    strategy: str
    source: str
    energy_cost: float
    currency: str
    peak_kw: float
    peak_step_minutes: float
    max_site_load_kw: float
    site_limit_kw: float
    limit_exceeded: bool
    energy_delivered_kwh: float
    cars_short: tuple[str, ...]
    cars: tuple[CarRecord, ...]
    load: LoadSeries
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def average_price(self) -> float:
        """Energy cost per kWh delivered (0 when nothing was delivered)."""
        return self.energy_cost / self.energy_delivered_kwh if self.energy_delivered_kwh > 0 else 0.0


def energy_cost(load: LoadSeries, prices: PriceSeries) -> float:
    """Cost of `load`: sum of kW x hours x price in force at the middle of each step."""
    half = timedelta(seconds=load.step_s / 2)
    step_h = load.step_s / 3600.0
    return sum(kw * step_h * prices.price_at(t + half) for t, kw in zip(load.times(), load.load_kw,
                                                                         strict=True))


def cars_short(cars: Sequence[CarRecord], tolerance_kwh: float) -> list[str]:
    """Ids of cars that left with more than `tolerance_kwh` missing from their need."""
    return [c.car_id for c in cars if c.left and c.shortfall_kwh() > tolerance_kwh]


def run_metrics(name: str, strategy: str, source: str, load: LoadSeries, cars: Sequence[CarRecord],
                prices: PriceSeries, site_limit_kw: float, peak_step_s: float = 900.0,
                limit_tolerance_kw: float = 0.0, short_tolerance_kwh: float = 0.5,
                extras: Mapping[str, Any] | None = None) -> RunMetrics:
    """All figures of one run from its site load, its cars and the shared price series.

    `peak_kw` is the highest average over `peak_step_s` (how a utility bills demand);
    `max_site_load_kw` the highest value at the load series' own resolution, which is
    what `limit_exceeded` is judged on (with `limit_tolerance_kw` for meter rounding).
    """
    if not load.load_kw:
        raise ReportError(f"run {name!r}: empty load series")
    if site_limit_kw <= 0:
        raise ReportError(f"run {name!r}: site limit must be positive, got {site_limit_kw} kW")
    ids = [c.car_id for c in cars]
    if len(set(ids)) != len(ids):
        raise ReportError(f"run {name!r}: duplicate car ids")
    peak_series = load.resample(peak_step_s) if peak_step_s > load.step_s else load
    max_load = max(load.load_kw)
    return RunMetrics(
        name=name, strategy=strategy, source=source,
        energy_cost=energy_cost(load, prices), currency=prices.currency,
        peak_kw=max(peak_series.load_kw), peak_step_minutes=peak_series.step_s / 60.0,
        max_site_load_kw=max_load, site_limit_kw=site_limit_kw,
        limit_exceeded=max_load > site_limit_kw + limit_tolerance_kw,
        energy_delivered_kwh=sum(c.delivered_kwh for c in cars),
        cars_short=tuple(cars_short(cars, short_tolerance_kwh)),
        cars=tuple(sorted(cars, key=lambda c: (c.arrival, c.car_id))),
        load=load, extras=dict(extras or {}),
    )


def saving_percent(optimized_cost: float, baseline_cost: float) -> float:
    """Saving of `optimized_cost` against `baseline_cost` in percent (0 when the baseline is free)."""
    if baseline_cost <= 0:
        return 0.0
    return 100.0 * (baseline_cost - optimized_cost) / baseline_cost


def like_for_like(optimized: RunMetrics, uncontrolled: RunMetrics, tolerance: float = 0.02) -> bool:
    """True when the optimized run delivered (nearly) the energy of the uncontrolled one and left
    no more cars short, so its saving is not just energy it failed to deliver."""
    enough = optimized.energy_delivered_kwh >= (1.0 - tolerance) * uncontrolled.energy_delivered_kwh
    return enough and len(optimized.cars_short) <= len(uncontrolled.cars_short)


def unaccounted_cars(expected_ids: Sequence[str], run: RunMetrics) -> list[str]:
    """Car ids of the scenario that a run has no record of (should be empty)."""
    seen = {c.car_id for c in run.cars}
    return [cid for cid in expected_ids if cid not in seen]


def _car_json(car: CarRecord) -> dict[str, Any]:
    return {
        "id": car.car_id, "station_id": car.station_id, "evse_id": car.evse_id,
        "iso15118": car.iso15118,
        "arrival": car.arrival.isoformat(), "departure": car.departure.isoformat(),
        "need_kwh": round(car.need_kwh, 3), "delivered_kwh": round(car.delivered_kwh, 3),
        "shortfall_kwh": round(car.shortfall_kwh(), 3), "left": car.left,
    }


def run_json(run: RunMetrics) -> dict[str, Any]:
    """One run's section of report.json."""
    return {
        "strategy": run.strategy,
        "source": run.source,
        "energy_cost": round(run.energy_cost, 2),
        "currency": run.currency,
        "average_price_per_kwh": round(run.average_price, 4),
        "peak_kw": round(run.peak_kw, 2),
        "peak_step_minutes": run.peak_step_minutes,
        "max_site_load_kw": round(run.max_site_load_kw, 2),
        "site_limit_kw": run.site_limit_kw,
        "limit_exceeded": run.limit_exceeded,
        "energy_delivered_kwh": round(run.energy_delivered_kwh, 2),
        "cars_short": {"count": len(run.cars_short), "cars": list(run.cars_short)},
        "cars": [_car_json(c) for c in run.cars],
        "load": {"start": run.load.start.isoformat(), "step_s": run.load.step_s,
                 "load_kw": [round(v, 3) for v in run.load.load_kw]},
        **dict(run.extras),
    }


def build_report(optimized: RunMetrics, uncontrolled: RunMetrics, prices: PriceSeries,
                 expected_car_ids: Sequence[str], meta: Mapping[str, Any],
                 min_peak_kw: float | None = None, transactions_without_end: int = 0) -> dict[str, Any]:
    """The whole report.json document; raises if a scenario car is missing from a run.

    `min_peak_kw`: the lowest peak the same cars could have had for the optimized run's cost
    (`outcome.min_peak_reference`); the summary puts the optimized peak against it.
    `transactions_without_end`: sessions whose car left but whose end the csms never stored
    (`outcome.transactions_without_end`): the measurement is then incomplete (`measurement_complete`
    false) and claims no saving (`saving_percent` and `saving` null).
    """
    for run in (optimized, uncontrolled):
        missing = unaccounted_cars(expected_car_ids, run)
        if missing:
            raise ReportError(f"run {run.name!r} has no record of cars {missing}")
    saving = saving_percent(optimized.energy_cost, uncontrolled.energy_cost)
    peak_cut = (100.0 * (uncontrolled.peak_kw - optimized.peak_kw) / uncontrolled.peak_kw
                if uncontrolled.peak_kw > 0 else 0.0)
    missing_kwh = uncontrolled.energy_delivered_kwh - optimized.energy_delivered_kwh
    complete = transactions_without_end == 0
    claimed = round(saving, 1) if complete else None  # an incomplete measurement claims no saving
    return {
        **dict(meta),
        "site_limit_kw": optimized.site_limit_kw,
        "cars": len(expected_car_ids),
        "summary": {
            "saving_percent": claimed,
            "saving": round(uncontrolled.energy_cost - optimized.energy_cost, 2) if complete else None,
            "currency": prices.currency,
            "peak_reduction_percent": round(peak_cut, 1),
            "like_for_like": like_for_like(optimized, uncontrolled),
            "optimized_energy_shortfall_kwh": round(max(0.0, missing_kwh), 2),
            "optimized_energy_cost": round(optimized.energy_cost, 2),
            "uncontrolled_energy_cost": round(uncontrolled.energy_cost, 2),
            "optimized_peak_kw": round(optimized.peak_kw, 2),
            "uncontrolled_peak_kw": round(uncontrolled.peak_kw, 2),
            "min_peak_same_cost_kw": None if min_peak_kw is None else round(min_peak_kw, 2),
            "peak_vs_min_peak": (round(optimized.peak_kw / min_peak_kw, 3)
                                 if min_peak_kw is not None and min_peak_kw > 1e-9 else None),
            "optimized_max_site_load_kw": round(optimized.max_site_load_kw, 2),
            "optimized_limit_exceeded": optimized.limit_exceeded,
            "optimized_energy_delivered_kwh": round(optimized.energy_delivered_kwh, 2),
            "uncontrolled_energy_delivered_kwh": round(uncontrolled.energy_delivered_kwh, 2),
            "optimized_cars_short": len(optimized.cars_short),
            "uncontrolled_cars_short": len(uncontrolled.cars_short),
            "measurement_complete": complete,
            "transactions_without_end": transactions_without_end,
        },
        "prices": {**prices.to_json(), "currency": prices.currency},
        "runs": {
            optimized.name: {**run_json(optimized), "saving_percent": claimed},
            uncontrolled.name: {**run_json(uncontrolled), "saving_percent": 0.0},
        },
    }
