"""Composite schedule and K01 rules of the pure smart-charging module (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evse_sim.evse import EvseSpec, offered_power_w
from evse_sim.smart_charging import (
    ChargingProfile,
    Electrical,
    ProfileError,
    ProfileStore,
    Purpose,
    RateUnit,
    share_station_cap,
)
from evse_sim.smart_charging.composite import profile_segments

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday
ELEC = Electrical(230.0, 3)
HW_W = 22_000.0


def prof(
    pid: int,
    purpose: str,
    level: int,
    periods: list[tuple[int, float]],
    unit: str = "W",
    kind: str = "Absolute",
    start: datetime | None = T0,
    duration: int | None = None,
    **extra: Any,
) -> ChargingProfile:
    """Build a profile from compact arguments (camelCase on the wire, as a CSMS sends it)."""
    sched: dict[str, Any] = {
        "id": pid,
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods],
    }
    if start is not None and kind != "Relative":
        sched["startSchedule"] = start.isoformat()
    if duration is not None:
        sched["duration"] = duration
    data = {
        "id": pid,
        "stackLevel": level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": [sched],
        **extra,
    }
    return ChargingProfile.from_ocpp(data)


def test_stack_level_precedence_and_station_max_cap() -> None:
    store = ProfileStore([1, 2])
    assert store.set_profile(0, prof(1, "TxDefaultProfile", 0, [(0, 16_000)]), {}).accepted
    assert store.set_profile(
        0, prof(2, "TxDefaultProfile", 1, [(0, 8_000), (3600, 12_000)], duration=7200), {}
    ).accepted
    assert store.set_profile(0, prof(3, "ChargingStationMaxProfile", 0, [(0, 10_000)]), {}).accepted
    comp = store.composite(1, T0, 4 * 3600, ELEC, HW_W)
    got = [(p.start_s, p.limit_w) for p in comp.periods]
    # level 1 wins for 2 h (8 kW then 12 kW capped to 10 kW), then level 0 (16 kW capped to 10 kW)
    assert got == [(0, 8_000), (3600, 10_000)]


def test_tx_profile_overrides_default_only_during_its_transaction() -> None:
    store = ProfileStore([1])
    store.set_profile(1, prof(1, "TxDefaultProfile", 0, [(0, 11_000)]), {})
    rejected = store.set_profile(1, prof(2, "TxProfile", 0, [(0, 4_000)]), {1: None})
    assert not rejected.accepted and rejected.reason_code == "TxNotFound"
    ok = store.set_profile(1, prof(2, "TxProfile", 0, [(0, 4_000)]), {1: "tx-1"})
    assert ok.accepted
    assert store.limit_w_at(1, T0, ELEC, HW_W, tx_id="tx-1")[0] == 4_000
    assert store.limit_w_at(1, T0, ELEC, HW_W, tx_id=None)[0] == 11_000
    assert store.end_transaction(1) == [2]
    assert store.limit_w_at(1, T0, ELEC, HW_W, tx_id="tx-1")[0] == 11_000


def test_evse_rules() -> None:
    store = ProfileStore([1])
    station_max = prof(1, "ChargingStationMaxProfile", 0, [(0, 1)])
    assert store.set_profile(1, station_max, {}).reason_code == "InvalidEvse"
    assert store.set_profile(0, prof(2, "TxProfile", 0, [(0, 1)]), {1: "t"}).reason_code == "InvalidEvse"
    assert store.set_profile(7, prof(3, "TxDefaultProfile", 0, [(0, 1)]), {}).reason_code == "UnknownEvse"
    wrong_tx = prof(4, "TxProfile", 0, [(0, 1)], transactionId="other")
    assert store.set_profile(1, wrong_tx, {1: "t"}).reason_code == "TxNotFound"
    assert len(store) == 0


def test_duplicates_replacement_and_rejection() -> None:
    store = ProfileStore([1, 2])
    assert store.set_profile(1, prof(1, "TxDefaultProfile", 2, [(0, 5_000)]), {}).accepted
    dup = store.set_profile(1, prof(9, "TxDefaultProfile", 2, [(0, 6_000)]), {})
    assert not dup.accepted and dup.reason_code == "DuplicateProfile"
    # evse 0 and an EVSE at the same stack level are mutually exclusive (K01.FR.52/53)
    assert not store.set_profile(0, prof(10, "TxDefaultProfile", 2, [(0, 6_000)]), {}).accepted
    # same id replaces
    same_id = store.set_profile(1, prof(1, "TxDefaultProfile", 2, [(0, 7_000)]), {})
    assert same_id.accepted and same_id.replaced_ids == (1,)
    assert store.limit_w_at(1, T0, ELEC, HW_W)[0] == 7_000
    # a TxProfile with the same stack level for the same transaction replaces (K16 updates)
    store.set_profile(2, prof(20, "TxProfile", 1, [(0, 3_000)]), {2: "t2"})
    upd = store.set_profile(2, prof(21, "TxProfile", 1, [(0, 2_000)]), {2: "t2"})
    assert upd.accepted and upd.replaced_ids == (20,)
    assert [i.profile.id for i in store.query(purpose=Purpose.TX)] == [21]


def test_non_overlapping_validity_at_same_level_is_allowed() -> None:
    store = ProfileStore([1])
    a = prof(1, "TxDefaultProfile", 0, [(0, 5_000)], validTo=(T0 + timedelta(hours=1)).isoformat())
    b = prof(2, "TxDefaultProfile", 0, [(0, 9_000)], validFrom=(T0 + timedelta(hours=1)).isoformat())
    assert store.set_profile(1, a, {}).accepted and store.set_profile(1, b, {}).accepted
    comp = store.composite(1, T0, 7200, ELEC, HW_W)
    assert [(p.start_s, p.limit_w) for p in comp.periods] == [(0, 5_000), (3600, 9_000)]


def test_amperes_convert_with_phases_and_voltage() -> None:
    store = ProfileStore([1])
    store.set_profile(1, prof(1, "TxDefaultProfile", 0, [(0, 16.0)], unit="A"), {})
    assert store.limit_w_at(1, T0, ELEC, HW_W)[0] == pytest.approx(16 * 230 * 3)
    single = prof(2, "TxDefaultProfile", 1, [(0, 16.0)], unit="A")
    single_phase = ChargingProfile.from_ocpp(
        {
            **single.to_ocpp(),
            "chargingSchedule": [
                {
                    "id": 2,
                    "chargingRateUnit": "A",
                    "startSchedule": T0.isoformat(),
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0, "numberPhases": 1}],
                }
            ],
        }
    )
    store.set_profile(1, single_phase, {})
    comp = store.composite(1, T0, 60, ELEC, HW_W)
    assert comp.periods[0].limit_w == pytest.approx(16 * 230)
    assert comp.to_ocpp(RateUnit.A)["chargingSchedulePeriod"][0] == {
        "startPeriod": 0,
        "limit": 16.0,
        "numberPhases": 1,
    }


def test_relative_profile_starts_at_transaction_start() -> None:
    store = ProfileStore([1])
    store.set_profile(1, prof(1, "TxDefaultProfile", 0, [(0, 2_000), (1800, 6_000)], kind="Relative"), {})
    tx_start = T0 - timedelta(minutes=20)
    comp = store.composite(1, T0, 3600, ELEC, HW_W, tx_id="t", tx_start=tx_start)
    assert [(p.start_s, p.limit_w) for p in comp.periods] == [(0, 2_000), (600, 6_000)]


def test_recurring_daily_profile_repeats() -> None:
    night = T0.replace(hour=22)
    store = ProfileStore([1])
    p = prof(
        1,
        "TxDefaultProfile",
        0,
        [(0, 3_000), (8 * 3600, 11_000)],
        kind="Recurring",
        start=night,
        recurrencyKind="Daily",
    )
    assert store.set_profile(1, p, {}).accepted
    comp = store.composite(1, T0 + timedelta(days=1), 86_400, ELEC, HW_W)  # next day 08:00 .. 08:00
    got = [(x.start_s, x.limit_w) for x in comp.periods]
    assert got == [(0, 11_000), (14 * 3600, 3_000), (22 * 3600, 11_000)]


def test_before_absolute_start_lower_stack_applies() -> None:
    store = ProfileStore([1])
    store.set_profile(1, prof(1, "TxDefaultProfile", 0, [(0, 9_000)]), {})
    later = T0 + timedelta(minutes=30)
    store.set_profile(1, prof(2, "TxDefaultProfile", 5, [(0, 1_000)], start=later, duration=600), {})
    comp = store.composite(1, T0, 3600, ELEC, HW_W)
    assert [(x.start_s, x.limit_w) for x in comp.periods] == [(0, 9_000), (1800, 1_000), (2400, 9_000)]


def test_bad_shapes_are_rejected_with_reason() -> None:
    with pytest.raises(ProfileError, match="first period"):
        prof(1, "TxDefaultProfile", 0, [(10, 1)])
    with pytest.raises(ProfileError, match="increasing"):
        prof(1, "TxDefaultProfile", 0, [(0, 1), (0, 2)])
    with pytest.raises(ProfileError, match="recurrencyKind"):
        prof(1, "TxDefaultProfile", 0, [(0, 1)], kind="Recurring")
    with pytest.raises(ProfileError, match="startSchedule"):
        prof(1, "TxDefaultProfile", 0, [(0, 1)], start=None)


def test_clear_criteria() -> None:
    store = ProfileStore([1, 2])
    store.set_profile(1, prof(1, "TxDefaultProfile", 0, [(0, 1)]), {})
    store.set_profile(2, prof(2, "TxDefaultProfile", 1, [(0, 1)]), {})
    store.set_profile(0, prof(3, "ChargingStationMaxProfile", 0, [(0, 1)]), {})
    assert store.clear(profile_id=42) == []
    assert store.clear(purpose=Purpose.TX_DEFAULT, stack_level=1) == [2]
    assert store.clear(evse_id=0) == [3]
    assert store.clear() == [1]


def test_min_charging_rate_pauses_below_minimum() -> None:
    spec = EvseSpec.ac(11.0)
    assert offered_power_w(1_000, 1_380, spec) == 0.0
    assert offered_power_w(5_000, 1_380, spec) == 5_000
    assert offered_power_w(50_000, 0, spec) == 11_000


# --- property tests --------------------------------------------------------------------------
purposes = st.sampled_from(["TxDefaultProfile", "TxProfile", "ChargingStationMaxProfile"])
kinds = st.sampled_from(["Absolute", "Relative", "Recurring"])


@st.composite
def profiles(draw: st.DrawFn, pid: int) -> tuple[int, ChargingProfile]:
    """A random valid profile and the EVSE it targets."""
    purpose = draw(purposes)
    kind = "Absolute" if purpose == "TxProfile" and draw(st.booleans()) else draw(kinds)
    if purpose == "TxProfile" and kind == "Recurring":
        kind = "Relative"
    n = draw(st.integers(1, 5))
    starts = sorted(draw(st.sets(st.integers(1, 20_000), min_size=n - 1, max_size=n - 1)))
    unit = draw(st.sampled_from(["A", "W"]))
    hi = 63.0 if unit == "A" else 40_000.0
    limits = draw(st.lists(st.floats(0, hi, allow_nan=False), min_size=n, max_size=n))
    start = T0 + timedelta(seconds=draw(st.integers(-30_000, 30_000)))
    extra: dict[str, Any] = {}
    if kind == "Recurring":
        extra["recurrencyKind"] = draw(st.sampled_from(["Daily", "Weekly"]))
    if draw(st.booleans()):
        extra["validFrom"] = (T0 + timedelta(seconds=draw(st.integers(-20_000, 20_000)))).isoformat()
    duration = draw(st.one_of(st.none(), st.integers(60, 40_000)))
    p = prof(
        pid,
        purpose,
        draw(st.integers(0, 3)),
        list(zip([0, *starts], limits, strict=True)),
        unit=unit,
        kind=kind,
        start=start,
        duration=duration,
        **extra,
    )
    evse = (
        0
        if purpose == "ChargingStationMaxProfile"
        else draw(st.sampled_from([0, 1] if purpose != "TxProfile" else [1]))
    )
    return evse, p


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=6).flatmap(
        lambda ids: st.tuples(*[profiles(i) for i in range(1, len(ids) + 1)])
    ),
    st.integers(0, 86_400),
    st.floats(0, 40_000),
)
def test_composite_never_exceeds_any_applicable_profile(
    items: tuple[tuple[int, ChargingProfile], ...], offset_s: int, ev_wants_w: float
) -> None:
    """At any instant the composite limit <= every profile that wins its purpose, the station max and hw."""
    store = ProfileStore([1])
    for evse, p in items:
        store.set_profile(evse, p, {1: "tx"})
    tx_start = T0 - timedelta(minutes=5)
    comp = store.composite(1, T0, 86_400 + 60, ELEC, HW_W, tx_id="tx", tx_start=tx_start)
    when = T0 + timedelta(seconds=offset_s)
    limit_w = comp.limit_w_at(offset_s)
    assert limit_w <= HW_W + 1e-6
    assert limit_w == pytest.approx(store.limit_w_at(1, when, ELEC, HW_W, "tx", tx_start)[0])
    t = when.timestamp()
    # the highest-stack profile of each purpose in force at t bounds the composite
    top: dict[Purpose, tuple[int, float]] = {}
    for inst in store.installed():
        for seg in profile_segments(inst.profile, ELEC, t, t + 1, tx_start.timestamp()):
            if seg.start_ts <= t < seg.end_ts:
                level = 2 * inst.profile.stack_level + (1 if inst.evse_id else 0)
                if inst.profile.purpose not in top or top[inst.profile.purpose][0] < level:
                    top[inst.profile.purpose] = (level, seg.limit_w)
    if Purpose.STATION_MAX in top:
        assert limit_w <= top[Purpose.STATION_MAX][1] + 1e-6
    governing = top.get(Purpose.TX) or top.get(Purpose.TX_DEFAULT)
    if governing is not None:
        assert limit_w <= governing[1] + 1e-6
    # the EVSE never draws above the composite
    assert offered_power_w(limit_w, 0.0, EvseSpec.ac(22.0)) <= limit_w + 1e-6
    assert min(ev_wants_w, offered_power_w(limit_w, 0.0, EvseSpec.ac(22.0))) <= limit_w + 1e-6


@given(st.dictionaries(st.integers(1, 4), st.floats(0, 50_000), min_size=1), st.floats(0, 100_000))
def test_station_cap_sharing_respects_cap_and_demands(demands: dict[int, float], cap_w: float) -> None:
    shares = share_station_cap(demands, cap_w)
    if sum(demands.values()) > cap_w:
        assert sum(shares.values()) <= cap_w * (1 + 1e-9) + 1e-6
    else:
        assert shares == demands
    for k, v in shares.items():
        assert 0 <= v <= demands[k] + 1e-9


def test_expired_profiles_are_dropped() -> None:
    store = ProfileStore([1])
    p = prof(1, "TxDefaultProfile", 0, [(0, 5_000)], validTo=(T0 + timedelta(hours=1)).isoformat())
    store.set_profile(1, p, {})
    assert store.drop_expired(T0) == [] and len(store) == 1
    assert store.drop_expired(T0 + timedelta(hours=1)) == [1] and len(store) == 0
