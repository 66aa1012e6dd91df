"""evfleet.txprofile: schedule -> OCPP TxProfile (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.v201 import call

from evfleet.compression import done_time, energy_between
from evfleet.txprofile import (
    EvLimits,
    EvseElectrical,
    ProfileError,
    build_sales_tariff,
    build_tx_profile,
    compress_periods,
    energy_report,
    floor1,
    power_to_unit,
    profile_series_w,
    value_at,
)

START = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)


@st.composite
def period_lists(draw: st.DrawFn) -> tuple[list[tuple[int, float]], int]:
    """Random sorted periods starting at 0 and an end time after the last start."""
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.integers(1, 3600), min_size=n - 1, max_size=n - 1))
    starts = [0]
    for g in gaps:
        starts.append(starts[-1] + g)
    limits = draw(st.lists(st.floats(0, 100, allow_nan=False).map(floor1), min_size=n, max_size=n))
    end = starts[-1] + draw(st.integers(1, 3600))
    return list(zip(starts, limits, strict=True)), end


@st.composite
def price_lists(draw: st.DrawFn, end: int) -> list[tuple[int, float]] | None:
    """None (flat) or a random step price series over [0, end]."""
    if draw(st.booleans()):
        return None
    step = draw(st.sampled_from([300, 900, 3600]))
    n = end // step + 1
    values = draw(st.lists(st.sampled_from([0.09, 0.16, 0.24, 0.4]), min_size=n, max_size=n))
    return [(i * step, v) for i, v in enumerate(values)]


@settings(max_examples=400, deadline=None)
@given(period_lists(), st.integers(1, 12), st.data())
def test_compression_never_allows_less_energy_than_planned(data: tuple[list[tuple[int, float]], int],
                                                           max_periods: int, more: st.DataObject) -> None:
    periods, end = data
    prices = more.draw(price_lists(end))
    out = compress_periods(periods, end, max_periods, prices)
    assert 1 <= len(out) <= max_periods
    assert out[0][0] == 0
    assert [s for s, _ in out] == sorted({s for s, _ in out})
    assert {s for s, _ in out} <= {s for s, _ in periods}  # boundaries are the plan's
    assert all(lim <= max(v for _, v in periods) for _, lim in out)  # EV/EVSE caps still hold
    done = done_time(periods, end)
    planned = energy_between(periods, end, 0, done)
    assert energy_between(out, end, 0, done) >= planned - 1e-6  # before the plan's last charge ends


def test_compression_merges_by_cost_and_keeps_energy() -> None:
    # 0-4 h expensive (plan: 0), 4-6 h and 6-8 h cheap (16 and 15.9 A), nothing after 8 h
    periods = [(0, 0.0), (14_400, 16.0), (21_600, 15.9), (28_800, 0.0)]
    prices = [(0, 0.4), (14_400, 0.09), (28_800, 0.24)]
    out = compress_periods(periods, 86_400, 3, prices)
    assert out[0] == (0, 0.0)  # the expensive slot stays closed
    assert energy_between(out, 86_400, 0, 28_800) >= energy_between(periods, 86_400, 0, 28_800)
    # the case: 3 tuples for a plan with a peak gap; the old MIN merge allowed 7.6 of 10.69 kWh
    plan = [(0, 16.0), (1800, 0.0), (5400, 16.0), (9000, 10.0), (12_600, 0.0)]
    out = compress_periods(plan, 86_400, 3, [(0, 0.09), (1800, 0.4), (5400, 0.09)])
    assert len(out) <= 3
    assert energy_between(out, 86_400, 0, 12_600) >= energy_between(plan, 86_400, 0, 12_600)


def test_compression_rejects_zero_periods() -> None:
    with pytest.raises(ValueError):
        compress_periods([(0, 1.0)], 10, 0)


def test_amps_with_phases_and_ev_limits() -> None:
    evse = EvseElectrical(rate_unit="A", phases=3, voltage_v=230, max_power_w=22_000)
    ev = EvLimits(min_current_a=6, max_current_a=16)
    assert power_to_unit(11_040, evse, ev) == 16.0  # 16 A cap
    assert power_to_unit(6_900, evse, ev) == 10.0
    assert power_to_unit(3_000, evse, ev) == 0.0  # 4.3 A < 6 A minimum -> pause, never raised
    assert power_to_unit(30_000, evse, EvLimits()) == floor1(22_000 / 690)


def test_watts_respect_ev_max_power() -> None:
    evse = EvseElectrical(rate_unit="W", phases=3, max_power_w=50_000)
    assert power_to_unit(40_000, evse, EvLimits(max_power_w=30_000)) == 30_000.0
    assert power_to_unit(500.04, evse, EvLimits()) == 500.0


def _schema_validate(payload: dict[str, object]) -> None:
    import json
    import os

    import ocpp

    path = os.path.join(os.path.dirname(ocpp.__file__), "v201", "schemas", "SetChargingProfileRequest.json")
    with open(path) as f:
        schema = json.load(f)
    jsonschema.validate(payload, schema)


def test_tx_profile_shape_is_valid_ocpp() -> None:
    limits = [11.0] * 8 + [0.0] * 8 + [7.0] * 80
    prices = [0.30] * 8 + [0.10] * 8 + [0.20] * 80
    payload = build_tx_profile(
        evse_id=1, transaction_id="tx-1", start=START, step_s=900, limits_kw=limits,
        evse=EvseElectrical(rate_unit="A", phases=3), ev=EvLimits(6, 16, max_schedule_tuples=3),
        profile_id=42, prices=prices)
    _schema_validate(payload)
    call.SetChargingProfile(evse_id=payload["evseId"], charging_profile=payload["chargingProfile"])
    prof = payload["chargingProfile"]
    assert prof["chargingProfilePurpose"] == "TxProfile"
    assert prof["chargingProfileKind"] == "Absolute"
    assert prof["transactionId"] == "tx-1"
    sched = prof["chargingSchedule"][0]
    assert sched["startSchedule"] == "2026-01-05T22:00:00Z"
    assert sched["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 15.9, "numberPhases": 3},
        {"startPeriod": 7200, "limit": 0.0, "numberPhases": 3},
        {"startPeriod": 14400, "limit": 10.1, "numberPhases": 3},
    ]
    assert sched["minChargingRate"] == 6
    tariff = sched["salesTariff"]
    assert len(tariff["salesTariffEntry"]) <= 3
    levels = [e["ePriceLevel"] for e in tariff["salesTariffEntry"]]
    assert levels[1] < levels[2] < levels[0]  # cheap night < mid < expensive evening
    # series back in W never exceeds the planned kW
    start, series = profile_series_w(payload)
    assert start == START
    for i, kw in enumerate(limits):
        assert value_at(series, i * 900 + 1) <= kw * 1000 + 1e-6


def test_tx_profile_needs_transaction() -> None:
    with pytest.raises(ProfileError):
        build_tx_profile(evse_id=1, transaction_id="", start=START, step_s=900, limits_kw=[1.0],
                         evse=EvseElectrical(), ev=EvLimits(), profile_id=1)


def test_sales_tariff_fits_entry_cap_by_coarsening() -> None:
    prices = [0.1, 0.2, 0.3, 0.4] * 6
    tariff = build_sales_tariff(prices, 900, 4)
    assert tariff is not None
    assert len(tariff["salesTariffEntry"]) <= 4
    assert build_sales_tariff([], 900, 4) is None
    assert build_sales_tariff([0.0, 0.0], 900, 4) is None


def test_energy_report_of_a_compressed_profile() -> None:
    # 6.9 kW for 30 min, a 1 h pause at the peak price, then 11 kW for 1 h and 6.9 kW for 1 h; 3 tuples
    limits = [6.9] * 2 + [0.0] * 4 + [11.0] * 4 + [6.9] * 4 + [0.0] * 10
    prices = [0.09] * 2 + [0.40] * 4 + [0.09] * 8 + [0.24] * 10
    now = datetime(2026, 1, 5, 22, 5, tzinfo=UTC)
    evse = EvseElectrical(rate_unit="A", phases=3)
    payload = build_tx_profile(evse_id=1, transaction_id="tx", start=START, step_s=900, limits_kw=limits,
                               evse=evse, ev=EvLimits(max_schedule_tuples=3), profile_id=1, prices=prices,
                               now=now)
    assert len(payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]) <= 3
    planned, allowed = energy_report(start=START, step_s=900, limits_kw=limits, payload=payload,
                                     evse=evse)
    assert planned == pytest.approx(6.9 * 25 / 60 + 11.0 + 6.9, abs=1e-3)  # from now (22:05) on
    assert allowed >= planned - 0.01  # the old MIN merge allowed far less
