"""Read endpoints against documented Redis state: stations, sessions, transactions, sites, events."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from evfleet.events import EventType
from tests.api.conftest import Tokens, add_event, seed_session, seed_site, seed_station


@pytest.fixture
async def depot(redis: Redis) -> None:
    """Three stations on `depot` (one charging, one offline, one faulted), one ended session."""
    await seed_site(redis, "depot", 50.0)
    await seed_station(redis, "CS1", connectors={"1/1": "Occupied", "2/1": "Available"},
                       evses={1: {}, 2: {}})
    await seed_station(redis, "CS2", online=False)
    await seed_station(redis, "CS3", connectors={"1/1": "Faulted"}, firmware="9.9")
    await seed_station(redis, "OTHER", site="yard")
    await seed_session(redis, "TX1", "CS1", 1, power_w=11000, energy_wh=5000, needs_wh=20000)
    await seed_session(redis, "TX0", "CS2", 1, live=False)


async def test_station_list_has_status_evses_connectors_and_counts(
        client: httpx.AsyncClient, tokens: Tokens, depot: None) -> None:
    r = await client.get("/api/v1/stations", headers=tokens.viewer)
    assert r.status_code == 200
    page = r.json()
    assert page["total"] == 4 and page["limit"] == 100 and page["offset"] == 0
    by_id = {s["station_id"]: s for s in page["items"]}
    assert by_id["CS1"]["status"] == "Charging"
    assert by_id["CS2"]["status"] == "Offline" and by_id["CS2"]["online"] is False
    assert by_id["CS3"]["status"] == "Faulted" and by_id["CS3"]["firmware_version"] == "9.9"
    cs1 = by_id["CS1"]
    assert [e["evse_id"] for e in cs1["evses"]] == [1, 2]
    assert cs1["evses"][0]["transaction_id"] == "TX1" and cs1["evses"][0]["power_kw"] == 11.0
    assert cs1["evses"][1]["connectors"] == [{"connector_id": 1, "status": "Available",
                                              "updated_at": cs1["evses"][1]["connectors"][0]["updated_at"]}]
    assert cs1["last_seen"] and cs1["vendor"] == "ACME"
    assert page["counts"] == {"Charging": 1, "Offline": 1, "Faulted": 1, "Available": 1}


async def test_station_list_filters_and_paginates(client: httpx.AsyncClient, tokens: Tokens,
                                                  depot: None) -> None:
    r = await client.get("/api/v1/stations", params={"site_id": "depot", "limit": 2, "offset": 1},
                         headers=tokens.viewer)
    page = r.json()
    assert page["total"] == 3 and [s["station_id"] for s in page["items"]] == ["CS2", "CS3"]
    r = await client.get("/api/v1/stations", params={"status": "Faulted"}, headers=tokens.viewer)
    assert [s["station_id"] for s in r.json()["items"]] == ["CS3"]
    r = await client.get("/api/v1/stations", params={"q": "oth"}, headers=tokens.viewer)
    assert [s["station_id"] for s in r.json()["items"]] == ["OTHER"]


async def test_station_detail_includes_live_sessions_and_404(
        client: httpx.AsyncClient, tokens: Tokens, depot: None) -> None:
    r = await client.get("/api/v1/stations/CS1", headers=tokens.viewer)
    assert r.status_code == 200
    assert [s["transaction_id"] for s in r.json()["sessions"]] == ["TX1"]
    r = await client.get("/api/v1/stations/NOPE", headers=tokens.viewer)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "unknown station 'NOPE'",
                                  "details": {"station_id": "NOPE"}}}


async def test_sessions_live_ended_all(client: httpx.AsyncClient, tokens: Tokens, depot: None) -> None:
    live = (await client.get("/api/v1/sessions", headers=tokens.viewer)).json()
    assert [s["transaction_id"] for s in live["items"]] == ["TX1"]
    s = live["items"][0]
    assert s["power_kw"] == 11.0 and s["energy_kwh"] == 5.0 and s["soc"] == 42.0
    assert s["energy_needed_kwh"] == 20.0 and s["progress"] == 0.25
    assert s["departure_time"] and s["applied_limit_kw"] == 11.0 and s["plan_status"] == "optimal"
    assert s["site_id"] == "depot" and s["live"] is True
    ended = (await client.get("/api/v1/sessions", params={"state": "ended"}, headers=tokens.viewer)).json()
    assert [s["transaction_id"] for s in ended["items"]] == ["TX0"]
    assert ended["items"][0]["live"] is False and ended["items"][0]["stopped_reason"] == "Local"
    everything = (await client.get("/api/v1/sessions", params={"state": "all", "station_id": "CS2"},
                                   headers=tokens.viewer)).json()
    assert [s["transaction_id"] for s in everything["items"]] == ["TX0"]


async def test_session_detail_has_schedule_profile_needs_and_meter(
        client: httpx.AsyncClient, tokens: Tokens, depot: None) -> None:
    r = await client.get("/api/v1/sessions/CS1/TX1", headers=tokens.viewer)
    assert r.status_code == 200
    doc = r.json()
    assert (doc["station_id"], doc["transaction_id"], doc["generation"], doc["tx_ref"]) == (
        "CS1", "TX1", 1, "CS1:TX1")
    assert doc["planned_schedule"]["limits_kw"] == [11.0, 7.0, 7.0, 3.5]
    assert doc["applied_profile"]["status"] == "Accepted"
    assert "held" not in doc["applied_profile"]  # the watchdog's internal memory stays internal
    assert doc["charging_needs"]["energy_amount_wh"] == 20000
    assert len(doc["meter"]) == 3 and doc["meter"][-1]["soc"] == 42
    assert (await client.get("/api/v1/sessions/CS1/NOPE", headers=tokens.viewer)).status_code == 404
    # a transactionId is the station's own: CS2 has no TX1
    r = await client.get("/api/v1/sessions/CS2/TX1", headers=tokens.viewer)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for generation, code in ((2, 404), (0, 422), (1, 200)):
        r = await client.get(f"/api/v1/sessions/CS1/TX1?generation={generation}", headers=tokens.viewer)
        assert r.status_code == code


async def test_transactions_list_and_detail(client: httpx.AsyncClient, tokens: Tokens, depot: None) -> None:
    page = (await client.get("/api/v1/transactions", headers=tokens.viewer)).json()
    assert page["total"] == 2
    assert {t["transaction_id"]: t["live"] for t in page["items"]} == {"TX1": True, "TX0": False}
    assert {t["station_id"] for t in page["items"]} == {"CS1", "CS2"}
    doc = (await client.get("/api/v1/transactions/CS1/TX1", headers=tokens.viewer)).json()
    assert doc["record"]["station_id"] == "CS1" and doc["events"] == [{"eventType": "Started", "seqNo": 0}]
    assert doc["station_id"] == "CS1" and doc["generation"] == 1 and doc["generations"] == 1
    assert (await client.get("/api/v1/transactions/CS1/NOPE", headers=tokens.viewer)).status_code == 404
    assert (await client.get("/api/v1/transactions/CS2/TX1", headers=tokens.viewer)).status_code == 404


async def test_sites_have_load_limit_plan_and_optimizer(
        client: httpx.AsyncClient, tokens: Tokens, depot: None) -> None:
    page = (await client.get("/api/v1/sites", headers=tokens.viewer)).json()
    by_id = {s["site_id"]: s for s in page["items"]}
    assert set(by_id) == {"default", "depot"}
    depot = by_id["depot"]
    assert depot["limit_kw"] == 50.0 and depot["power_kw"] == 11.0 and depot["headroom_kw"] == 39.0
    assert depot["active_sessions"] == 1 and depot["stations"] == 3
    assert depot["planned_kw_now"] == 20.0
    assert depot["optimizer"]["status"] == "optimal" and depot["optimizer"]["solve_s"] == 0.42
    assert depot["plan"]["planned_kw"] == [20.0, 18.0, 10.0]
    assert by_id["default"]["limit_kw"] == 100.0  # settings default for the default site
    one = await client.get("/api/v1/sites/depot", headers=tokens.viewer)
    assert one.json()["name"] == "Depot"
    assert (await client.get("/api/v1/sites/nowhere", headers=tokens.viewer)).status_code == 404
    hist = await client.get("/api/v1/sites/depot/history", headers=tokens.viewer)
    assert hist.status_code == 200 and hist.json()["site_id"] == "depot"


async def test_events_endpoint_filters(client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    await add_event(redis, EventType.STATION_CONNECTED, "CS1")
    await add_event(redis, EventType.CONNECTOR_STATUS, "CS2", status="Faulted")
    await add_event(redis, EventType.STATION_DISCONNECTED, "CS1")
    r = await client.get("/api/v1/events", params={"limit": 2}, headers=tokens.viewer)
    assert [e["type"] for e in r.json()["items"]] == ["station.disconnected", "connector.status"]
    r = await client.get("/api/v1/events", params={"station_id": "CS2"}, headers=tokens.viewer)
    assert [e["data"] for e in r.json()["items"]] == [{"status": "Faulted"}]
    await add_event(redis, EventType.METER_VALUES, "CS1", "TX1")
    r = await client.get("/api/v1/events", params={"feed": True, "limit": 1}, headers=tokens.viewer)
    assert [e["type"] for e in r.json()["items"]] == ["station.disconnected"]
    r = await client.get("/api/v1/events", params={"limit": 1}, headers=tokens.viewer)
    assert [e["type"] for e in r.json()["items"]] == ["meter.values"]


async def test_events_endpoint_survives_any_stored_payload(client: httpx.AsyncClient, tokens: Tokens,
                                                           redis: Redis) -> None:
    """A payload stored before input checks existed (300 deep, NaN, a bare list) is shown as a note,
    never as a 500 for the whole list."""
    base = {"station_id": "CS1", "evse_id": "", "transaction_id": "", "site_id": "depot",
            "ts": "2026-03-02T17:00:00+00:00"}
    await redis.xadd("evfleet:events", {**base, "type": "data_transfer",
                                        "data": '{"data":' + "[" * 300 + "]" * 300 + "}"})
    await redis.xadd("evfleet:events", {**base, "type": "meter.values", "data": '{"power_w":NaN}'})
    await redis.xadd("evfleet:events", {**base, "type": "report", "data": "[1,2]"})
    r = await client.get("/api/v1/events", headers=tokens.viewer)
    assert r.status_code == 200, r.text
    assert [e["data"] for e in r.json()["items"]] == [
        {"value": [1, 2]}, {"power_w": None}, {"omitted": "nested deeper than 32 levels"}]
    r = await client.get("/api/v1/events", params={"feed": True}, headers=tokens.viewer)
    assert r.status_code == 200
