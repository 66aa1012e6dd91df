"""The demo's cars through the worker's re-plan pipeline (pure, no Redis, no OCPP): issue 12's live peak."""

from __future__ import annotations

from evfleet.app.demo.plan_loop import run
from optimizer.snapshot import SnapshotConfig
from optimizer.worker import WorkerConfig


def test_the_demo_peak_is_within_1_1x_the_min_peak_of_the_same_cars_at_the_same_cost() -> None:
    """`evfleet demo`'s default cars (40 stations, seed 1), every car drawing its plan at once: the peak is
    at most 1.1x the lowest peak the same cars could have had for the same cost, nobody leaves short and
    few plans change (1.068x, 57 EVSE re-sends over the day when written). Without the live tie-break
    (objective.tie_break 0, the planner before issue 12's lowest-peak rule) the same day is 1.12x.
    About 3 s CPU."""
    r = run(40, 1, SnapshotConfig().tie_break, WorkerConfig().stickiness)
    assert r.ratio <= 1.1, (r.peak_kw, r.min_peak_kw)
    assert r.short_kwh < 0.5
    assert r.plan_changes <= 80
    assert max(r.load_kw) <= 1000.0 * 40 / 278  # the demo's site limit: 1 MW x 40 of seed 001's 278 cars
