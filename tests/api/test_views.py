"""Pure view functions: station status precedence, planned load lookup, session documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from csms.api.views import connectors_view, planned_kw_at, session_summary, session_view, station_status


def _evse(tx: str | None, *statuses: str) -> dict[str, object]:
    return {"transaction_id": tx, "connectors": [{"connector_id": i + 1, "status": s}
                                                 for i, s in enumerate(statuses)]}


@pytest.mark.parametrize(("online", "evses", "expected"), [
    (False, [_evse("TX", "Occupied")], "Offline"),
    (True, [_evse("TX", "Occupied"), _evse(None, "Faulted")], "Faulted"),
    (True, [_evse("TX", "Occupied"), _evse(None, "Available")], "Charging"),
    (True, [_evse(None, "Occupied"), _evse(None, "Reserved")], "Occupied"),
    (True, [_evse(None, "Unavailable"), _evse(None, "Unavailable")], "Unavailable"),
    (True, [_evse(None, "Unavailable"), _evse(None, "Available")], "Available"),
    (True, [], "Unknown"),
])
def test_station_status_precedence(online: bool, evses: list[dict[str, object]], expected: str) -> None:
    assert station_status(online, evses) == expected  # type: ignore[arg-type]


def test_connectors_view_groups_sorts_and_skips_bad_fields() -> None:
    raw = {"2/1": json.dumps({"status": "Faulted"}), "1/2": json.dumps({"status": "Available"}),
           "1/1": "not json", "garbage": "{}"}
    view = connectors_view(raw)
    assert list(view) == [1, 2]
    assert [c["connector_id"] for c in view[1]] == [1, 2] and view[1][0]["status"] == "Unknown"


def test_planned_kw_at_picks_the_current_step() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    plan = {"start": start.isoformat(), "step_s": 900, "planned_kw": [10.0, 20.0, 30.0]}
    assert planned_kw_at(plan, start.timestamp() + 901) == 20.0
    assert planned_kw_at(plan, start.timestamp() - 1) is None
    assert planned_kw_at(plan, start.timestamp() + 2700) is None
    assert planned_kw_at({"start": "bad", "step_s": 900, "planned_kw": [1]}, 0) is None
    assert planned_kw_at(None, 0) is None


def test_session_ignores_per_evse_documents_of_another_transaction() -> None:
    tx = {"station_id": "CS1", "evse_id": "1", "energy_wh": "5000", "power_w": "7400"}
    # same transactionId, another station's (or an earlier) session: not this session's needs
    needs = {"transaction_id": "TX1", "tx_ref": "CS2:TX1", "energy_amount_wh": 10000}
    profile = {"transaction_id": "TX1", "tx_ref": "CS1:TX1", "limit_w": 7400}
    doc = session_view("CS1:TX1", tx, True, "depot", needs=needs, profile=profile)
    assert (doc["station_id"], doc["transaction_id"], doc["generation"]) == ("CS1", "TX1", 1)
    assert doc["charging_needs"] is None and doc["progress"] is None and doc["energy_needed_kwh"] is None
    assert doc["power_kw"] == 7.4 and doc["energy_kwh"] == 5.0
    summary = session_summary(doc)
    assert summary["applied_limit_kw"] == 7.4 and "applied_profile" not in summary


def test_session_progress_is_capped_and_past_sessions_drop_live_documents() -> None:
    tx = {"station_id": "CS1", "evse_id": "1", "energy_wh": "30000"}
    needs = {"transaction_id": "TX1", "tx_ref": "CS1:TX1:2", "energy_amount_wh": 20000,
             "departure_time": "2026-01-01T08:00:00+00:00"}
    doc = session_view("CS1:TX1:2", tx, False, "depot", needs=needs, planned={"tx_ref": "CS1:TX1:2"})
    assert doc["generation"] == 2 and doc["transaction_id"] == "TX1"
    assert doc["progress"] == 1.0 and doc["departure_time"] == "2026-01-01T08:00:00+00:00"
    assert doc["planned_schedule"] is None and doc["live"] is False


def test_resumes_at_is_the_next_planned_step_with_power() -> None:
    from datetime import UTC, datetime

    from csms.api.views import resumes_at, session_summary

    start = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
    plan = {"start": start.isoformat(), "step_s": 900, "limits_kw": [5.0, 0.0, 0.0, 7.0]}
    now = start.timestamp() + 1000  # in step 1 (0 kW)
    assert resumes_at(plan, now) == "2026-12-06T06:45:00+00:00"
    early = start.timestamp() + 10  # step 0 has power: now
    assert resumes_at(plan, early) == datetime.fromtimestamp(early, UTC).isoformat()
    assert resumes_at({**plan, "limits_kw": [0.0, 0.0]}, now) is None
    assert resumes_at({"start": "not a date", "step_s": 900, "limits_kw": [1.0]}, now) is None
    doc = {"tx_ref": "CS-1:1", "planned_schedule": plan,
           "applied_profile": {"limit_w": 0, "status": "Accepted"}}
    assert session_summary(doc, now)["resumes_at"] == "2026-12-06T06:45:00+00:00"
    assert session_summary({**doc, "applied_profile": {"limit_w": 7000}}, now)["resumes_at"] is None
