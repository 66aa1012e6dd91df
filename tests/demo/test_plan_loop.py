"""The demo's cars through the worker's re-plan pipeline (pure, no Redis, no OCPP): issue 12's live peak."""

from __future__ import annotations

from evfleet.app.demo.plan_loop import run
from optimizer.snapshot import SnapshotConfig
from optimizer.worker import WorkerConfig


def test_the_demo_peak_is_within_1_1x_the_min_peak_of_the_same_cars_at_the_same_cost() -> None:
    """`evfleet demo`'s default cars (40 stations, seed 1), every car drawing its plan at once: the peak is
    at most 1.1x the lowest peak the same cars could have had for the same cost, nobody leaves short and
    few plans change (1.068x, 57 EVSE re-sends over the day when written; 1.065x and 83 with the peak
    levelled after the EV minimum power, `optimizer.level`, whose moves are the difference). Without the
    live tie-break (objective.tie_break 0, the planner before issue 12's lowest-peak rule) the same day is
    1.12x. About 3 s CPU."""
    r = run(40, 1, SnapshotConfig().tie_break, WorkerConfig().stickiness)
    assert r.ratio <= 1.1, (r.peak_kw, r.min_peak_kw)
    assert r.short_kwh < 0.5
    assert r.plan_changes <= 100
    assert max(r.load_kw) <= 1000.0 * 40 / 278  # the demo's site limit: 1 MW x 40 of seed 001's 278 cars


def test_with_every_need_known_the_peak_is_the_min_peak() -> None:
    """The same day with the cars without ISO 15118 announcing their true energy (not their departure): with
    nothing left to estimate, the peak is the lowest of the same cars at the same cost (1.001x when written,
    39 EVSE re-sends). Without `optimizer.level` the ISO cars' blocks at their 4.14 kW minimum, carried from
    plan to plan by stickiness, kept 35.7 and 40.0 kW steps side by side all night: 1.056x. About 3 s CPU."""
    r = run(40, 1, SnapshotConfig().tie_break, WorkerConfig().stickiness, known_needs=True)
    assert r.ratio <= 1.02, (r.peak_kw, r.min_peak_kw)
    assert r.short_kwh < 0.5
    assert r.plan_changes <= 60


def test_a_slow_loop_buys_nothing_at_the_evening_price() -> None:
    """The same day with every plan reaching the stations 12 simulated minutes late (a 1 s loop at the demo's
    720x): cars plugged in before their first plan draw the demo's reservation. With the reservation at 0 W
    (zero until admitted) nothing is drawn at a price above the night's, and the peak stays within 1.1x
    (1.067x when written). With the demo's earlier reservation (min(EVSE max, site limit / EVSEs) = 3.6 kW)
    the cars without ISO 15118 drew 7.9 kWh at 0.16-0.24 EUR/kWh: 28.43 EUR instead of 27.26 and 1.112x.
    About 3 s CPU."""
    r = run(40, 1, SnapshotConfig().tie_break, WorkerConfig().stickiness, delay_min=12)
    assert r.dear_kwh < 0.1, r.dear_kwh
    assert r.ratio <= 1.1, (r.peak_kw, r.min_peak_kw)
    assert r.short_kwh < 0.5


def test_cars_without_iso15118_estimated_too_high_hold_no_peak() -> None:
    """Seed 3: the 19 cars without ISO 15118 need 124 kWh, and the site's typical energy (the mean of what the
    ISO cars announced) plans them 187. With the whole estimate and no order the night's first hours ran at
    48-50 kW against a min-peak of 41.5 (1.196x, 123 EVSE re-sends). Planned at 0.85 of the estimate
    (`SnapshotConfig.estimate_share`) and charged first (`optimizer.model.highs_lp.estimated_first_cost`),
    so that an estimate too low shows early: 1.128x, 164 re-sends, 0 short when written. About 3 s CPU."""
    r = run(40, 3, SnapshotConfig().tie_break, WorkerConfig().stickiness)
    assert r.ratio <= 1.15, (r.peak_kw, r.min_peak_kw)
    assert r.short_kwh < 0.5
    assert r.plan_changes <= 200


def test_known_departures_tell_the_planner_the_departure_only() -> None:
    """`benchmarks/live_peak.py --known-departures`: a car without ISO 15118 announces its true departure and
    no energy, so the planner estimates only its energy (the site's typical energy) and the cars with ISO
    15118 keep their own needs. No day is run (about 1 s)."""
    from datetime import date

    from evfleet.app.demo import components
    from evfleet.app.demo.config import DemoConfig
    from evfleet.app.demo.plan_loop import Loop, site_state
    from optimizer.snapshot import build_instance

    plan = components.build_plan(DemoConfig(stations=40, seed=4, today=date(2026, 3, 2)))
    now = plan.start.replace(hour=23)
    prices = plan.prices.repeated(3).to_json()
    site = site_state(Loop(list(plan.cars), known_departures=True), now, plan.site_limit_kw, 0.0, prices)
    cars = {c.car_id: c for c in plan.cars}
    silent = [s for s in site.sessions if not cars[s.tx_ref].iso15118]
    assert silent and all(s.needs == {"departure_time": cars[s.tx_ref].departure.isoformat()} for s in silent)
    notes = build_instance(site, now, SnapshotConfig()).notes
    assert all(notes[s.tx_ref] == "departure=needs energy=site_typical" for s in silent)
    estimated = site_state(Loop(list(plan.cars)), now, plan.site_limit_kw, 0.0, prices)
    assert all(s.needs is None for s in estimated.sessions if not cars[s.tx_ref].iso15118)
    iso = {s.tx_ref: s.needs for s in estimated.sessions if cars[s.tx_ref].iso15118}
    assert iso and iso == {s.tx_ref: s.needs for s in site.sessions if cars[s.tx_ref].iso15118}
