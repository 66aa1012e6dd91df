"""Pure core logic: metering, transaction state machine, framing, rate limit, security, needs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csms.core.authorization import authorization_status
from csms.core.charging_needs import charging_needs_record
from csms.core.metering import (
    MeterSample,
    MeterValueError,
    latest_sample,
    normalise_meter_value,
    to_base_unit,
)
from csms.core.ratelimit import TokenBucket
from csms.core.security import (
    BasicAuthError,
    basic_auth_header,
    check_password_policy,
    hash_password,
    parse_basic_auth,
    verify_password,
)
from csms.core.transactions import TxEvent, TxState, decide_transaction_event
from csms.protocol.framing import CallFrame, ErrorCode, FrameError, ResultFrame, parse_frame, schema_violation
from evfleet.events import EventType

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


# --- metering -------------------------------------------------------------------------------
def test_units_normalised_to_wh_and_w() -> None:
    mv = {"timestamp": "2026-01-01T08:00:00Z", "sampledValue": [
        {"value": 12.5, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "kWh"}},
        {"value": 7.2, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
        {"value": 55, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}},
    ]}
    s = normalise_meter_value(mv)
    assert s.energy_wh == 12500.0 and s.power_w == 7200.0 and s.soc == 55.0


def test_default_measurand_is_energy_in_wh_and_multiplier_applies() -> None:
    s = normalise_meter_value({"timestamp": "t", "sampledValue": [
        {"value": 3, "unitOfMeasure": {"unit": "Wh", "multiplier": 3}}]})
    assert s.energy_wh == 3000.0


def test_phase_values_summed_for_power_max_for_current() -> None:
    s = normalise_meter_value({"timestamp": "t", "sampledValue": [
        {"value": 2000, "measurand": "Power.Active.Import", "phase": "L1"},
        {"value": 2100, "measurand": "Power.Active.Import", "phase": "L2"},
        {"value": 2200, "measurand": "Power.Active.Import", "phase": "L3"},
        {"value": 9.0, "measurand": "Current.Import", "phase": "L1"},
        {"value": 10.0, "measurand": "Current.Import", "phase": "L2"},
        {"value": 9.5, "measurand": "Current.Import", "phase": "L3"},
    ]})
    assert s.power_w == 6300.0 and s.current_a == 10.0 and s.phases == 3


def test_phaseless_total_wins_and_inlet_location_ignored() -> None:
    s = normalise_meter_value({"timestamp": "t", "sampledValue": [
        {"value": 7000, "measurand": "Power.Active.Import"},
        {"value": 1000, "measurand": "Power.Active.Import", "phase": "L1"},
        {"value": 99999, "measurand": "Energy.Active.Import.Register", "location": "Inlet"},
    ]})
    assert s.power_w == 7000.0 and s.energy_wh is None


def test_unknown_unit_is_an_error() -> None:
    with pytest.raises(MeterValueError):
        to_base_unit(1.0, "furlongs")


def test_latest_sample_merges_newest_per_measurand() -> None:
    s = latest_sample([
        {"timestamp": "2026-01-01T08:01:00Z", "sampledValue": [{"value": 200}]},
        {"timestamp": "2026-01-01T08:00:00Z", "sampledValue": [
            {"value": 100}, {"value": 40, "measurand": "SoC"}]},
    ])
    assert s is not None and s.energy_wh == 200 and s.soc == 40 and s.ts == "2026-01-01T08:01:00Z"
    assert latest_sample([]) is None


# --- transactions ---------------------------------------------------------------------------
def ev(event_type: TxState, seq: int, minute: int = 0, **kw: object) -> TxEvent:
    return TxEvent(transaction_id="tx1", event_type=event_type, seq_no=seq,
                   timestamp=T0.replace(minute=minute), **kw)  # type: ignore[arg-type]


def apply(events: list[TxEvent]) -> tuple[dict[str, str], list[EventType], set[int]]:
    record: dict[str, str] = {}
    seen: set[int] = set()
    emitted: list[EventType] = []
    for e in events:
        d = decide_transaction_event(record, e.seq_no in seen, e)
        if d.replay:
            continue
        seen.add(e.seq_no)
        record.update(d.fields)
        emitted += d.emit
    return record, emitted, seen


def test_full_lifecycle_emits_started_updated_ended() -> None:
    sample = MeterSample(ts="t", energy_wh=5000.0, power_w=7000.0)
    record, emitted, _ = apply([ev(TxState.STARTED, 0, 0), ev(TxState.UPDATED, 1, 5, sample=sample),
                                ev(TxState.ENDED, 2, 10, stopped_reason="EVDisconnected")])
    assert emitted == [EventType.TX_STARTED, EventType.TX_UPDATED, EventType.TX_ENDED]
    assert record["state"] == "Ended" and record["stopped_reason"] == "EVDisconnected"
    assert record["energy_wh"] == "5000.0" and record["last_seq_no"] == "2"


def test_replay_is_not_reapplied() -> None:
    d = decide_transaction_event({"state": "Started"}, True, ev(TxState.ENDED, 0))
    assert d.replay and not d.fields and not d.emit


def test_second_ended_is_tolerated_without_second_tx_ended() -> None:
    record, emitted, _ = apply([ev(TxState.STARTED, 0), ev(TxState.ENDED, 1, 5), ev(TxState.ENDED, 2, 6)])
    assert emitted.count(EventType.TX_ENDED) == 1
    assert record["ended_at"] == T0.replace(minute=5).isoformat()


def test_late_offline_update_does_not_overwrite_newer_values_or_reopen() -> None:
    new = MeterSample(ts="t", energy_wh=9000.0)
    old = MeterSample(ts="t", energy_wh=1000.0)
    record, _, _ = apply([ev(TxState.STARTED, 0, 0), ev(TxState.ENDED, 2, 30, sample=new),
                          ev(TxState.UPDATED, 1, 10, sample=old, offline=True)])
    assert record["state"] == "Ended" and record["energy_wh"] == "9000.0"


def test_first_event_updated_starts_the_transaction() -> None:
    d = decide_transaction_event({}, False, ev(TxState.UPDATED, 3, 7))
    assert d.first_seen and d.emit == [EventType.TX_STARTED] and d.fields["started_at"]


@given(st.permutations(list(range(6))))
def test_any_delivery_order_gives_same_final_state(order: list[int]) -> None:
    types = [TxState.STARTED, TxState.UPDATED, TxState.UPDATED, TxState.UPDATED, TxState.ENDED, TxState.ENDED]
    events = [ev(types[i], i, i, sample=MeterSample(ts="t", energy_wh=float(i * 100))) for i in range(6)]
    record, emitted, seen = apply([events[i] for i in order] + [events[0], events[3]])  # + replays
    assert record["state"] == "Ended" and record["energy_wh"] == "500.0"
    assert seen == set(range(6)) and emitted.count(EventType.TX_STARTED) == 1
    assert emitted.count(EventType.TX_ENDED) == 1


# --- framing --------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,code,uid", [
    ("not json", ErrorCode.RPC_FRAMEWORK_ERROR, "-1"),
    ('{"a": 1}', ErrorCode.RPC_FRAMEWORK_ERROR, "-1"),
    ("[]", ErrorCode.RPC_FRAMEWORK_ERROR, "-1"),
    ('[7, "m1", "Heartbeat", {}]', ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED, "m1"),
    ('["2", "m1", "Heartbeat", {}]', ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED, "m1"),
    ('[2, 5, "Heartbeat", {}]', ErrorCode.RPC_FRAMEWORK_ERROR, "-1"),
    ('[2, "m1", "Heartbeat"]', ErrorCode.RPC_FRAMEWORK_ERROR, "m1"),
    ('[2, "m1", "Heartbeat", []]', ErrorCode.FORMAT_VIOLATION, "m1"),
])
def test_bad_frames_get_the_right_code(raw: str, code: ErrorCode, uid: str) -> None:
    err = parse_frame(raw)
    assert isinstance(err, FrameError) and err.code is code and err.unique_id == uid and err.reply


def test_good_frames_parse() -> None:
    assert parse_frame('[2,"a","Heartbeat",{}]') == CallFrame("a", "Heartbeat", {})
    assert parse_frame('[3,"a",{"x":1}]') == ResultFrame("a", {"x": 1})
    bad_result = parse_frame('[3,"a"]')
    assert isinstance(bad_result, FrameError) and not bad_result.reply


@given(st.binary(max_size=64))
def test_parser_never_raises(data: bytes) -> None:
    parse_frame(data)


@pytest.mark.parametrize("payload,code", [
    ({"reason": "PowerUp"}, ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION),
    ({"reason": 7, "chargingStation": {"model": "m", "vendorName": "v"}},
     ErrorCode.TYPE_CONSTRAINT_VIOLATION),
    ({"reason": "Bogus", "chargingStation": {"model": "m", "vendorName": "v"}},
     ErrorCode.PROPERTY_CONSTRAINT_VIOLATION),
    ({"reason": "PowerUp", "chargingStation": {"model": "m" * 30, "vendorName": "v"}},
     ErrorCode.PROPERTY_CONSTRAINT_VIOLATION),
    ({"reason": "PowerUp", "extra": 1, "chargingStation": {"model": "m", "vendorName": "v"}},
     ErrorCode.FORMAT_VIOLATION),
])
def test_schema_violations_map_to_ocpp_codes(payload: dict[str, object], code: ErrorCode) -> None:
    err = schema_violation("BootNotification", payload)
    assert err is not None and err.code is code


# --- rate limit -----------------------------------------------------------------------------
def test_token_bucket_burst_then_throttle_then_disconnect() -> None:
    b = TokenBucket(rate_per_s=10, burst=5, disconnect_after=3, now=0.0)
    assert all(b.take(0.0).wait_s == 0 for _ in range(5))
    waits = [b.take(0.0) for _ in range(4)]
    assert [w.disconnect for w in waits] == [False, False, False, True]
    assert waits[0].wait_s == pytest.approx(0.1)


def test_token_bucket_refills_and_resets_flood_counter() -> None:
    b = TokenBucket(rate_per_s=10, burst=2, disconnect_after=1, now=0.0)
    b.take(0.0)
    b.take(0.0)
    assert b.take(0.0).wait_s > 0
    d = b.take(10.0)
    assert d.wait_s == 0 and d.throttled_in_row == 0


# --- security -------------------------------------------------------------------------------
def test_password_hash_round_trip_and_salt() -> None:
    h1, h2 = hash_password("correct-horse", 1000), hash_password("correct-horse", 1000)
    assert h1.salt_hex != h2.salt_hex and h1.hash_hex != h2.hash_hex
    assert verify_password("correct-horse", h1) and not verify_password("wrong-horse", h1)
    assert "correct-horse" not in str(h1.to_fields())


def test_basic_auth_parsing() -> None:
    assert parse_basic_auth(basic_auth_header("CP-1", "pa:ss")) == ("CP-1", "pa:ss")
    for bad in (None, "", "Bearer x", "Basic !!!", "Basic " + "Q1AtMQ=="):  # last: no colon
        with pytest.raises(BasicAuthError):
            parse_basic_auth(bad)


def test_password_policy() -> None:
    check_password_policy("12345678")
    with pytest.raises(ValueError):
        check_password_policy("short")


# --- authorization, needs -------------------------------------------------------------------
def test_authorization_status() -> None:
    assert authorization_status({}, accept_all=False) == "Unknown"
    assert authorization_status({}, accept_all=True) == "Accepted"
    assert authorization_status({"status": "Blocked"}, accept_all=True) == "Blocked"
    assert authorization_status({"status": "weird"}, accept_all=False) == "Invalid"


def test_charging_needs_record_ac_and_dc() -> None:
    ac = charging_needs_record({"evseId": 1, "maxScheduleTuples": 12, "chargingNeeds": {
        "requestedEnergyTransfer": "AC_three_phase", "departureTime": "2026-01-01T17:00:00Z",
        "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": 32,
                                 "evMaxVoltage": 400}}}, "tx1", "now")
    assert ac["energy_amount_wh"] == 20000 and ac["ev_max_current_a"] == 32
    assert ac["max_schedule_tuples"] == 12 and ac["departure_time"] == "2026-01-01T17:00:00Z"
    assert ac["requested_energy_transfer"] == "AC_three_phase"
    dc = charging_needs_record({"evseId": 1, "chargingNeeds": {
        "requestedEnergyTransfer": "DC", "dcChargingParameters": {
            "evMaxCurrent": 200, "evMaxVoltage": 800, "evMaxPower": 150000, "energyAmount": 40000,
            "stateOfCharge": 30}}}, "tx1", "now")
    assert dc["ev_max_power_w"] == 150000 and dc["ev_min_current_a"] is None and dc["state_of_charge"] == 30


def test_answer_payload_is_the_ocpp_library_serialisation() -> None:
    """`answer_payload` skips the library's deep copies for flat results; it must give the same
    payload as the library for every call_result, flat or nested."""
    from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
    from ocpp.v201 import call_result
    from ocpp.v201.datatypes import IdTokenInfoType, StatusInfoType

    from csms.protocol.station import answer_payload

    results = [
        call_result.Heartbeat(current_time="2026-12-06T23:00:00Z"),
        call_result.MeterValues(),
        call_result.TransactionEvent(),
        call_result.TransactionEvent(id_token_info={"status": "Accepted"}),
        call_result.TransactionEvent(total_cost=1.5, charging_priority=2,
                                     id_token_info=IdTokenInfoType(status="Blocked")),
        call_result.BootNotification(current_time="2026-12-06T23:00:00Z", interval=300, status="Accepted",
                                     status_info=StatusInfoType(reason_code="x")),
        call_result.NotifyEVChargingNeeds(status="Accepted"),
    ]
    for result in results:
        assert answer_payload(result) == snake_to_camel_case(remove_nones(serialize_as_dict(result))), result
