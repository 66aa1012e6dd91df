"""A <-> W conversion of the shared charging-profile type: per-phase amperes x voltage x phases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evfleet.profile import (
    DEFAULT_PHASES,
    DEFAULT_VOLTAGE_V,
    ChargingProfile,
    Electrical,
    RateUnit,
    a_to_w,
    limit_to_w,
    w_to_a,
    w_to_limit,
)


def test_three_phase_16_a_is_11_kw() -> None:
    assert a_to_w(16.0, 3, 230.0) == pytest.approx(11_040.0)
    assert w_to_a(11_040.0, 3, 230.0) == pytest.approx(16.0)
    assert a_to_w(32.0, 1, 230.0) == pytest.approx(7_360.0)


def test_defaults_and_degenerate_phases() -> None:
    assert (DEFAULT_VOLTAGE_V, DEFAULT_PHASES) == (230.0, 3)
    assert a_to_w(10.0) == pytest.approx(6_900.0)  # None phases: the default 3
    assert a_to_w(10.0, 0, 230.0) == pytest.approx(2_300.0)  # never a division by zero
    assert w_to_a(2_300.0, 0, 230.0) == pytest.approx(10.0)


def test_limits_in_watts_pass_through() -> None:
    assert limit_to_w(7_400.0, "W", 1, 230.0) == 7_400.0
    assert w_to_limit(7_400.0, RateUnit.W) == 7_400.0
    assert limit_to_w(16.0, "A", 3, 230.0) == pytest.approx(11_040.0)
    assert w_to_limit(11_040.0, "A", 3, 230.0) == pytest.approx(16.0)


def test_electrical_uses_the_period_phases_before_its_own() -> None:
    evse = Electrical(voltage_v=230.0, phases=3)
    assert evse.w_per_a() == pytest.approx(690.0)
    assert evse.a_to_w(16.0) == pytest.approx(11_040.0)
    assert evse.a_to_w(16.0, phases=1) == pytest.approx(3_680.0)
    assert evse.w_to_a(3_680.0, phases=1) == pytest.approx(16.0)
    assert evse.limit_to_w(16.0, "W") == 16.0


@given(st.floats(0, 1_000), st.integers(1, 3), st.floats(100, 480))
def test_round_trip(current_a: float, phases: int, voltage_v: float) -> None:
    assert w_to_a(a_to_w(current_a, phases, voltage_v), phases, voltage_v) == pytest.approx(current_a)


def test_profile_value_type_round_trips_the_wire_form() -> None:
    periods = [{"startPeriod": 0, "limit": 16.0, "numberPhases": 3}, {"startPeriod": 900, "limit": 6.0}]
    wire = {"id": 7, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute", "transactionId": "tx-1",
            "chargingSchedule": [{"id": 7, "chargingRateUnit": "A", "startSchedule": "2025-01-15T11:00:00Z",
                                  "chargingSchedulePeriod": periods}]}
    profile = ChargingProfile.from_ocpp(wire)
    assert profile.to_ocpp() == wire
    evse = Electrical(230.0, 1)
    watts = [evse.limit_to_w(p.limit, profile.schedule.rate_unit, p.number_phases)
             for p in profile.schedule.periods]
    assert watts == pytest.approx([11_040.0, 1_380.0])
