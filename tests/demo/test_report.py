"""Unit tests of the demo's pure report pieces: metrics, metering, the uncontrolled replay, the chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evfleet.app.demo.chart import chart_title, render_chart
from evfleet.app.demo.metering import MeterSample, delivered_wh, site_load
from evfleet.app.demo.replay import CarSpec, replay_uncontrolled
from evfleet.app.demo.report import (
    CarRecord,
    LoadSeries,
    PriceSeries,
    ReportError,
    build_report,
    energy_cost,
    run_metrics,
    saving_percent,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def car(cid: str, arrive_min: float, leave_min: float, need: float, delivered: float = 0.0) -> CarRecord:
    return CarRecord(cid, f"CS-{cid}", 1, at(arrive_min), at(leave_min), need, delivered)


# --- prices and cost ---------------------------------------------------------------------

def test_price_lookup_is_piecewise_constant_and_repeats() -> None:
    prices = PriceSeries(T0, 60, (0.1, 0.3))
    assert prices.price_at(at(0)) == 0.1
    assert prices.price_at(at(59.9)) == 0.1
    assert prices.price_at(at(60)) == 0.3
    assert prices.price_at(at(120)) == 0.1  # repeats after the last step


def test_energy_cost_by_hand() -> None:
    # 10 kW for one hour at 0.1 then 20 kW for one hour at 0.3 = 1 + 6 = 7
    load = LoadSeries(T0, 900, (10.0,) * 4 + (20.0,) * 4)
    assert energy_cost(load, PriceSeries(T0, 60, (0.1, 0.3))) == pytest.approx(7.0)


def test_bad_price_series_is_refused() -> None:
    with pytest.raises(ReportError):
        PriceSeries(T0, 0, (0.1,))
    with pytest.raises(ReportError):
        PriceSeries(T0, 60, ())
    with pytest.raises(ReportError):
        PriceSeries(datetime(2026, 1, 1), 60, (0.1,))


def test_resample_averages_and_refuses_non_multiples() -> None:
    load = LoadSeries(T0, 60, (0.0, 30.0, 60.0, 90.0))
    assert load.resample(120).load_kw == (15.0, 75.0)
    with pytest.raises(ReportError):
        load.resample(90)


def test_saving_percent() -> None:
    assert saving_percent(75.0, 100.0) == pytest.approx(25.0)
    assert saving_percent(5.0, 0.0) == 0.0


# --- run metrics -------------------------------------------------------------------------

def test_run_metrics_peak_limit_short_and_delivered() -> None:
    load = LoadSeries(T0, 60, (10.0,) * 14 + (55.0,) + (10.0,) * 15)  # one 1-min spike of 55 kW
    cars = [car("a", 0, 30, 5.0, 5.0), car("b", 0, 30, 8.0, 3.0), car("c", 0, 90, 8.0, 1.0)]
    cars[2] = CarRecord("c", "CS-c", 1, at(0), at(90), 8.0, 1.0, left=False)
    prices = PriceSeries(T0, 60, (0.2,))
    m = run_metrics("optimized", "cost", "test", load, cars, prices, site_limit_kw=50.0, peak_step_s=900)
    assert m.max_site_load_kw == 55.0
    assert m.limit_exceeded
    assert m.peak_kw == pytest.approx((14 * 10 + 55) / 15)  # 15-min average
    assert m.cars_short == ("b",)  # c is still plugged in, a got its need
    assert m.energy_delivered_kwh == pytest.approx(9.0)
    ok = run_metrics("x", "cost", "test", load, cars, prices, site_limit_kw=50.0, limit_tolerance_kw=5.0)
    assert not ok.limit_exceeded


def test_run_metrics_refuses_bad_input() -> None:
    prices = PriceSeries(T0, 60, (0.2,))
    with pytest.raises(ReportError):
        run_metrics("x", "s", "t", LoadSeries(T0, 60, ()), [], prices, 10.0)
    with pytest.raises(ReportError):
        run_metrics("x", "s", "t", LoadSeries(T0, 60, (1.0,)), [car("a", 0, 1, 1), car("a", 0, 1, 1)],
                    prices, 10.0)
    with pytest.raises(ReportError):
        run_metrics("x", "s", "t", LoadSeries(T0, 60, (1.0,)), [], prices, 0.0)


def test_build_report_accounts_for_every_car_and_states_the_saving() -> None:
    prices = PriceSeries(T0, 60, (0.1, 0.3))
    cars = [car("a", 0, 120, 10.0, 10.0)]
    opt = run_metrics("optimized", "cost", "measured", LoadSeries(T0, 3600, (10.0, 0.0)), cars, prices, 20)
    unc = run_metrics("uncontrolled", "uncontrolled", "replay", LoadSeries(T0, 3600, (0.0, 10.0)),
                      cars, prices, 20)
    report = build_report(opt, unc, prices, ["a"], {"scenario": "test"})
    assert report["summary"]["saving_percent"] == pytest.approx(66.7)
    assert report["runs"]["optimized"]["energy_cost"] == pytest.approx(1.0)
    assert report["runs"]["uncontrolled"]["energy_cost"] == pytest.approx(3.0)
    assert report["runs"]["optimized"]["cars"][0]["id"] == "a"
    assert report["scenario"] == "test"
    assert report["summary"]["like_for_like"]
    short = run_metrics("optimized", "cost", "measured", LoadSeries(T0, 3600, (5.0, 0.0)),
                        [car("a", 0, 120, 10.0, 5.0)], prices, 20)
    unfair = build_report(short, unc, prices, ["a"], {})["summary"]
    assert not unfair["like_for_like"] and unfair["optimized_energy_shortfall_kwh"] == pytest.approx(5.0)
    with pytest.raises(ReportError, match="b"):
        build_report(opt, unc, prices, ["a", "b"], {})


def test_summary_prints_without_a_min_peak_ratio() -> None:
    """A run that drew nothing has a min-peak of 0 kW and no ratio: the summary leaves the line out
    instead of failing (it printed a TypeError traceback after a demo whose cars never charged)."""
    from io import StringIO

    from rich.console import Console

    from evfleet.app.demo.cli import print_summary

    prices = PriceSeries(T0, 60, (0.1, 0.3))
    cars = [car("a", 0, 120, 10.0, 0.0)]
    opt = run_metrics("optimized", "cost", "measured", LoadSeries(T0, 3600, (0.0, 0.0)), cars, prices, 20)
    unc = run_metrics("uncontrolled", "uncontrolled", "replay", LoadSeries(T0, 3600, (0.0, 10.0)),
                      cars, prices, 20)
    out = StringIO()
    for min_peak_kw, line in ((0.0, False), (8.0, True)):
        report = build_report(opt, unc, prices, ["a"], {}, min_peak_kw=min_peak_kw)
        print_summary(Console(file=out, width=120), report, Path("report.json"), None)
        assert ("the lowest peak of the same cars" in out.getvalue()) == line
    assert "0.0 kW against 8.0 kW" in out.getvalue()


# --- metering ----------------------------------------------------------------------------

def test_site_load_spreads_energy_between_readings() -> None:
    # tx1: 6 kWh evenly over 30 min (12 kW) from t=0; tx2: 1 kWh between min 10 and 15 (12 kW)
    tx1 = [MeterSample(at(0), 0.0), MeterSample(at(30), 6000.0)]
    tx2 = [MeterSample(at(15), 1000.0), MeterSample(at(10), 0.0)]  # unordered on purpose
    load = site_load([tx1, tx2], T0, at(60), 300)
    assert len(load.load_kw) == 12
    assert load.load_kw[0] == pytest.approx(12.0)
    assert load.load_kw[2] == pytest.approx(24.0)
    assert load.load_kw[6] == pytest.approx(0.0)
    assert load.energy_kwh() == pytest.approx(7.0)


def test_site_load_handles_readings_straddling_steps_and_window() -> None:
    tx = [MeterSample(at(-5), 0.0), MeterSample(at(5), 2000.0)]  # half before the window
    load = site_load([tx], T0, at(10), 60)
    assert load.energy_kwh() == pytest.approx(1.0)
    assert max(load.load_kw) == pytest.approx(12.0)


def test_delivered_skips_register_resets() -> None:
    samples = [MeterSample(at(0), 100.0), MeterSample(at(1), 600.0), MeterSample(at(2), 0.0),
               MeterSample(at(3), 300.0)]
    assert delivered_wh(samples) == pytest.approx(800.0)


def test_site_load_refuses_empty_window() -> None:
    with pytest.raises(ReportError):
        site_load([], T0, T0, 60)


# --- uncontrolled replay -----------------------------------------------------------------

def spec(cid: str, arrive_min: float, leave_min: float, need_kwh: float, max_kw: float = 11.0,
         initial_soc: float = 0.2, capacity: float = 100.0) -> CarSpec:
    target = initial_soc + need_kwh / capacity  # efficiency 1: battery need = meter need
    return CarSpec(cid, f"CS-{cid}", 1, at(arrive_min), at(leave_min), capacity, initial_soc, target,
                   max_kw, efficiency=1.0)


def test_replay_charges_at_full_power_from_arrival_until_need() -> None:
    load, records = replay_uncontrolled([spec("a", 10, 240, 11.0)], 100.0, T0, at(240), 60)
    assert load.load_kw[:10] == (0.0,) * 10
    assert load.load_kw[10] == pytest.approx(11.0)
    assert load.load_kw[69] == pytest.approx(11.0)
    assert load.load_kw[70] == pytest.approx(0.0)  # 11 kWh at 11 kW = 60 min
    assert records[0].delivered_kwh == pytest.approx(11.0)
    assert records[0].need_kwh == pytest.approx(11.0)
    assert records[0].left


def test_replay_first_come_first_served_under_the_limit() -> None:
    cars = [spec("late", 5, 600, 30.0), spec("early", 0, 600, 30.0), spec("third", 5, 600, 30.0)]
    load, records = replay_uncontrolled(cars, 15.0, T0, at(200), 60)
    assert max(load.load_kw) <= 15.0 + 1e-9
    assert load.load_kw[6] == pytest.approx(15.0)
    delivered = {r.car_id: r.delivered_kwh for r in records}
    assert delivered["early"] == pytest.approx(30.0)
    assert delivered["early"] > delivered["late"] > delivered["third"]


def test_replay_car_leaving_early_is_short_and_end_of_window_is_not_left() -> None:
    cars = [spec("short", 0, 30, 20.0), spec("stays", 0, 900, 5.0)]
    _, records = replay_uncontrolled(cars, 50.0, T0, at(120), 60)
    by_id = {r.car_id: r for r in records}
    assert by_id["short"].delivered_kwh == pytest.approx(5.5)
    assert by_id["short"].left
    assert not by_id["stays"].left


def test_replay_tapers_near_full_and_counts_losses() -> None:
    c = CarSpec("a", "CS-a", 1, at(0), at(600), 60.0, 0.85, 1.0, 11.0, efficiency=0.9)
    assert c.need_kwh == pytest.approx(0.15 * 60 / 0.9)
    load, records = replay_uncontrolled([c], 100.0, T0, at(600), 60)
    assert load.load_kw[0] < 11.0  # above the 80 % knee: tapered
    assert records[0].delivered_kwh == pytest.approx(c.need_kwh, rel=1e-3)


def test_replay_refuses_bad_limit() -> None:
    with pytest.raises(ReportError):
        replay_uncontrolled([], 0.0, T0, at(60))


# --- chart -------------------------------------------------------------------------------

def test_chart_is_a_png(tmp_path: Path) -> None:
    prices = PriceSeries(T0, 60, (0.17, 0.15, 0.25, 0.38) * 6)
    cars = [car("a", 0, 120, 10.0, 10.0)]
    opt = run_metrics("optimized", "cost", "m", LoadSeries(T0, 900, (5.0,) * 8), cars, prices, 20)
    unc = run_metrics("uncontrolled", "uncontrolled", "r", LoadSeries(T0, 900, (10.0,) * 4 + (0.0,) * 4),
                      cars, prices, 20)
    path = render_chart(opt, unc, prices, tmp_path / "out" / "report.png", saving_percent=12.5)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_the_chart_claims_the_saving_the_report_claims_and_none_when_it_claims_none() -> None:
    end = T0 + timedelta(hours=24)
    assert "saving 60.9 %" in chart_title("evfleet demo", 40, 60.94, T0, end)
    unmeasured = chart_title("evfleet demo", 40, None, T0, end)
    assert "saving not measured" in unmeasured and "%" not in unmeasured


def test_replay_matches_the_simulator_ev_model() -> None:
    from evfleet.app.demo.replay import car_spec
    from evse_sim.ev import Ev, EvSpec
    from evse_sim.evse import EvseSpec

    ev = EvSpec("car-1", "TESLA MODEL 3", 57.5, 0.5, 0.95, 11.0, 150.0, at(0), at(600), hlc=True)
    evse = EvseSpec.ac(22.0)
    c = car_spec(ev, "CS-1", 1, evse)
    assert c.max_kw == 11.0 and c.iso15118 and c.need_kwh == pytest.approx(ev.energy_need_kwh / 0.92)
    _, records = replay_uncontrolled([c], 100.0, T0, at(600), 60)
    sim = Ev(ev)
    for _ in range(600):
        sim.charge(evse.max_power_w, 60, dc=False)
    assert records[0].delivered_kwh == pytest.approx(sim.delivered_wh / 1000.0, rel=1e-6)
    assert records[0].delivered_kwh == pytest.approx(c.need_kwh, rel=1e-3)
