"""Store records decode in one place, with the documented defaults; bad stored values never raise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from evfleet.records import (
    DEFAULT_MAX_POWER_W,
    AppliedProfile,
    ChargingNeeds,
    EvsePlan,
    EvseRecord,
    SitePlan,
    StationRecord,
    TransactionRecord,
)


def test_an_evse_that_reported_nothing_gets_the_documented_defaults() -> None:
    rec = EvseRecord.decode({"max_power_w": "0", "tx_ref": "", "transaction_id": ""})
    assert (rec.max_power_w, rec.phases, rec.voltage_v, rec.rate_unit) == (DEFAULT_MAX_POWER_W, 3, 230.0, "A")
    assert rec.steerable and rec.default_limit_w is None and rec.noncompliant_w is None
    assert EvseRecord.decode({}, default_max_power_w=11_000).max_power_w == 11_000


def test_evse_fields_as_stored() -> None:
    rec = EvseRecord.decode({"max_power_w": "7400.0", "phases": "1", "voltage_v": "240", "rate_unit": "W",
                             "steerable": "0", "default_limit_w": "0.0", "noncompliant_w": "5000",
                             "metered_max_w": "7300", "refusals": "2", "retry_after": "1700000000.5",
                             "tx_ref": "CP-1:42", "transaction_id": "42"})
    assert rec == EvseRecord(7400.0, 1, 240.0, "W", False, "42", "CP-1:42", 0.0, 7300.0, 5000.0, 2,
                             1_700_000_000.5)


@pytest.mark.parametrize("bad", ["", "abc", "nan-ish", None])
def test_bad_numbers_read_as_defaults(bad: str | None) -> None:
    fields = {} if bad is None else {"max_power_w": bad, "phases": bad, "voltage_v": bad, "rate_unit": bad}
    rec = EvseRecord.decode(fields)
    assert (rec.max_power_w, rec.phases, rec.voltage_v, rec.rate_unit) == (DEFAULT_MAX_POWER_W, 3, 230.0, "A")


def test_station_and_transaction() -> None:
    st = StationRecord.decode({"online": "1", "site_id": "depot", "last_seen": "2026-01-05T10:00:00Z"})
    assert st.online and st.site_id == "depot" and st.last_seen == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert StationRecord.decode({}) == StationRecord()
    tx = TransactionRecord.decode({"station_id": "CP-1", "evse_id": "2", "state": "Updated",
                                   "started_at": "2026-01-05T10:00:00+00:00", "energy_wh": "1200.5",
                                   "soc": "", "id_token": "T1"})
    assert (tx.evse_id, tx.energy_wh, tx.soc, tx.ended) == (2, 1200.5, None, False)
    assert tx.started_at == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert TransactionRecord.decode({"evse_id": "x", "started_at": "never", "state": "Ended"}).evse_id is None
    assert TransactionRecord.decode({"state": "Ended", "started_at": "never"}).started_at is None


def test_needs_and_applied_profile_documents() -> None:
    needs = ChargingNeeds.decode('{"tx_ref": "CP-1:42", "departure_time": "2026-01-06T06:00:00Z",'
                                 ' "energy_amount_wh": 20000, "ev_max_current_a": 16,'
                                 ' "max_schedule_tuples": 12}')
    assert needs is not None and needs.tx_ref == "CP-1:42" and needs.ev_max_current_a == 16.0
    assert needs.departure_time == datetime(2026, 1, 6, 6, tzinfo=UTC) and needs.max_schedule_tuples == 12
    assert ChargingNeeds.decode("not json") is None and ChargingNeeds.decode(None) is None
    applied = AppliedProfile.decode({"tx_ref": "CP-1:42", "applied_series_w": [[100, 7000], [200, 11000],
                                                                                [300, 3000]]})
    assert applied is not None
    assert applied.max_from(50) == 11_000 and applied.max_from(250) == 11_000
    assert applied.max_from(400) == 3000
    assert AppliedProfile.decode('{"tx_ref": "x"}').max_from(0) is None  # type: ignore[union-attr]


def test_plans_round_trip_and_answer_by_step() -> None:
    start = datetime(2026, 1, 5, 10, tzinfo=UTC)
    plan = SitePlan(plan_id="p1", site_id="s", start=start, step_s=900, planned_kw=[10.0, 20.0],
                    limit_kw=50.0, computed_at=start, evses={"CP-1/1": [7.0, 11.0]},
                    transactions={"CP-1/1": "CP-1:42"}, prices=[0.2, 0.3])
    assert SitePlan.decode(plan.encode()) == plan
    assert plan.planned_kw_at(start.timestamp() + 950) == 20.0
    assert plan.planned_kw_at(start.timestamp() - 1) is None
    assert plan.evse_kw_at("CP-1/1", start.timestamp() + 99_999) == 11.0 and plan.evse_kw_at("x", 0) is None
    assert SitePlan.decode({"start": "never", "step_s": 900}) is None and SitePlan.decode("{") is None
    doc = EvsePlan("p1", "s", "CP-1:42", start, 900, [7.0]).encode()
    assert doc["start"] == "2026-01-05T10:00:00+00:00" and doc["limits_kw"] == [7.0]
