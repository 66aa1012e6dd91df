"""Both runs of a demo side by side (pure): scenario cars + measured transactions -> report.

The optimized run is measured from what the stations reported (meter values stored by the
csms); the uncontrolled run is the same cars replayed by `replay.py`. Both are costed with
the same price series by `report.py`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from evfleet.app.demo.collect import MeasuredTransaction
from evfleet.app.demo.metering import site_load
from evfleet.app.demo.replay import CarSpec, replay_uncontrolled
from evfleet.app.demo.report import CarRecord, PriceSeries, RunMetrics, build_report, run_metrics

MATCH_EARLY_S = 300.0  # a transaction may start this long before the scenario's arrival (clock skew)


@dataclass(frozen=True)
class DemoRuns:
    """The optimized (measured) and the uncontrolled (replayed) run, and the report document."""

    optimized: RunMetrics
    uncontrolled: RunMetrics
    prices: PriceSeries
    report: dict[str, Any]


def match_transactions(cars: Sequence[CarSpec], txs: Sequence[MeasuredTransaction],
                       id_tokens: Mapping[str, str]) -> dict[str, list[MeasuredTransaction]]:
    """Transactions of each car: by id token when the car has one, else by EVSE and time window."""
    by_token: dict[str, list[MeasuredTransaction]] = {}
    for tx in txs:
        if tx.id_token:
            by_token.setdefault(tx.id_token, []).append(tx)
    used: set[str] = set()
    out: dict[str, list[MeasuredTransaction]] = {}
    for car in sorted(cars, key=lambda c: c.arrival):
        token = id_tokens.get(car.car_id, "")
        found = [tx for tx in by_token.get(token, [])] if token else []
        if not found:
            early = car.arrival - timedelta(seconds=MATCH_EARLY_S)
            found = [tx for tx in txs
                     if tx.transaction_id not in used and tx.station_id == car.station_id
                     and tx.evse_id == car.evse_id and tx.started_at is not None
                     and early <= tx.started_at < car.departure]
        used.update(tx.transaction_id for tx in found)
        out[car.car_id] = found
    return out


def transactions_without_end(cars: Sequence[CarSpec], matches: Mapping[str, list[MeasuredTransaction]],
                             end: datetime) -> list[str]:
    """Transactions of cars that left before `end` whose end the csms never stored.

    The stations report a session's energy in TransactionEvents they send one at a time: a csms
    slower than they report leaves them queued, and what is still queued when the run stops (at
    the latest the Ended of each session) never reaches Redis. Such a run's measured figures are
    short of what the cars drew.
    """
    return sorted(tx.transaction_id for c in cars if c.departure <= end
                  for tx in matches.get(c.car_id, []) if tx.ended_at is None)


def measured_records(cars: Sequence[CarSpec], matches: Mapping[str, list[MeasuredTransaction]],
                     end: datetime) -> list[CarRecord]:
    """One record per scenario car from its measured transactions (0 kWh if it has none)."""
    return [
        CarRecord(car_id=c.car_id, station_id=c.station_id, evse_id=c.evse_id, arrival=c.arrival,
                  departure=c.departure, need_kwh=c.need_kwh,
                  delivered_kwh=sum(tx.delivered_kwh for tx in matches.get(c.car_id, [])),
                  iso15118=c.iso15118, left=c.departure <= end)
        for c in cars
    ]


def min_peak_reference(cars: Sequence[CarSpec], optimized: RunMetrics, prices: PriceSeries, start: datetime,
                       end: datetime) -> float | None:
    """The lowest peak (same step as the run's peak) at which the same cars could have drawn the energy
    they drew, for no more than the optimized run's energy cost (`optimizer.min_peak`); None if unsolvable.

    Equal-cost schedules can differ several-fold in peak: this is the yardstick for the run's peak.
    """
    from optimizer.min_peak import MinPeakError, Session, min_peak

    if end <= start or not cars:
        return None
    step_s = optimized.peak_step_minutes * 60.0
    delivered = {c.car_id: c.delivered_kwh for c in optimized.cars}
    sessions = [Session(c.arrival, min(c.departure, end), delivered.get(c.car_id, 0.0), c.max_kw)
                for c in cars]
    steps = max(1, math.ceil((end - start).total_seconds() / step_s - 1e-9))
    step_prices = [prices.price_at(start + timedelta(seconds=i * step_s)) for i in range(steps)]
    limit_kw = max(optimized.site_limit_kw, optimized.peak_kw)  # what the run itself drew fits
    try:
        return min_peak(sessions, start, end, step_s, step_prices, limit_kw, optimized.energy_cost).peak_kw
    except MinPeakError:
        return None


def compute_runs(cars: Sequence[CarSpec], txs: Sequence[MeasuredTransaction], id_tokens: Mapping[str, str],
                 prices: PriceSeries, site_limit_kw: float, start: datetime, end: datetime,
                 strategy: str, meta: Mapping[str, Any], load_step_s: float = 60.0,
                 limit_tolerance_kw: float = 0.0) -> DemoRuns:
    """Measure the optimized run, replay the uncontrolled one, and build report.json's document.

    Only cars that arrived before `end` take part (both runs use exactly the same set).
    """
    present = [c for c in cars if c.arrival < end]
    matches = match_transactions(present, txs, id_tokens)
    measured_load = site_load((tx.samples for tx in txs), start, end, load_step_s)
    unmatched = sorted(tx.transaction_id for tx in txs
                       if not any(tx in found for found in matches.values()))
    not_ended = transactions_without_end(present, matches, end)
    optimized = run_metrics(
        "optimized", strategy, "measured: meter values the stations reported, stored by the csms in Redis",
        measured_load, measured_records(present, matches, end), prices, site_limit_kw,
        limit_tolerance_kw=limit_tolerance_kw,
        extras={"transactions": len(txs), "unmatched_transactions": unmatched,
                "cars_without_transaction": sorted(c.car_id for c in present if not matches[c.car_id]),
                "transactions_without_end": not_ended})
    replay_load, replay_cars = replay_uncontrolled(present, site_limit_kw, start, end, load_step_s)
    uncontrolled = run_metrics(
        "uncontrolled", "uncontrolled",
        "replayed: same cars, arrivals and needs at full power from arrival, first come first served "
        "under the site limit (simulator battery model, no OCPP, no optimizer)",
        replay_load, replay_cars, prices, site_limit_kw)
    reference = min_peak_reference(present, optimized, prices, start, end)
    report = build_report(optimized, uncontrolled, prices, [c.car_id for c in present],
                          {**dict(meta), "window": {"start": start.isoformat(), "end": end.isoformat()},
                           "cars_after_window": sum(1 for c in cars if c.arrival >= end)},
                          min_peak_kw=reference, transactions_without_end=len(not_ended))
    return DemoRuns(optimized, uncontrolled, prices, report)
