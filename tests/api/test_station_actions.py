"""The station page's endpoints: UnlockConnector, GetChargingProfiles with the reports collected
from the event stream, bad input (422 with the error body, nothing sent), and the site power
history read from Redis (the same on two API apps, kept when the app is replaced)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from csms.api.app import build_deps, create_app
from csms.api.power_history import PowerHistory, PowerSample, due, thin
from evfleet.clock import RealClock
from evfleet.events import Event, EventType
from tests.api.conftest import KEYS, FakeNode, Tokens, add_event, seed_site, seed_station


@pytest.fixture
async def stations(redis: Redis) -> None:
    """CS1 online on node-a."""
    await seed_station(redis, "CS1")


def _reporting(redis: Redis, reports: list[tuple[int, bool]]) -> Any:
    """A node answer that accepts GetChargingProfiles and then reports (evse_id, tbc) profiles,
    with a report of another request and of another station in between (to be ignored)."""
    tasks: list[asyncio.Task[None]] = []

    async def report(request_id: int) -> None:
        await asyncio.sleep(0.05)
        await add_event(redis, EventType.PROFILE_REPORTED, "CS1", request_id=request_id + 1, tbc=False,
                        charging_profile=[{"id": 99}])
        await add_event(redis, EventType.PROFILE_REPORTED, "CS9", request_id=request_id, tbc=False,
                        charging_profile=[{"id": 98}])
        for evse_id, tbc in reports:
            ev = Event(type=EventType.PROFILE_REPORTED, station_id="CS1", evse_id=evse_id,
                       ts=datetime.now(UTC), data={"request_id": request_id, "tbc": tbc,
                                                   "charging_limit_source": "CSO",
                                                   "charging_profile": [{"id": evse_id + 10}]})
            await redis.xadd(KEYS.events(), ev.to_fields())

    def answer(req: dict[str, Any]) -> dict[str, Any]:
        tasks.append(asyncio.get_running_loop().create_task(report(req["payload"]["requestId"])))
        return {"outcome": "result", "payload": {"status": "Accepted"}, "error": None}

    return answer


async def test_get_charging_profiles_collects_the_reports_of_its_request(
        client: httpx.AsyncClient, tokens: Tokens, stations: None, node: FakeNode, redis: Redis) -> None:
    node.answer = _reporting(redis, [(0, True), (1, False)])
    r = await client.get("/api/v1/stations/CS1/charging-profiles",
                         params={"purpose": "TxDefaultProfile", "evse_id": 1, "stack_level": 0},
                         headers=tokens.operator)
    assert r.status_code == 200, r.text
    doc = r.json()
    [req] = node.requests
    assert req["action"] == "GetChargingProfiles"
    criteria = {"chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 0}
    assert req["payload"] == {"requestId": doc["ocpp_request_id"], "evseId": 1, "chargingProfile": criteria}
    assert doc["status"] == "Accepted" and doc["complete"] is True
    assert [p["charging_profiles"] for p in doc["profiles"]] == [[{"id": 10}], [{"id": 11}]]
    assert doc["profiles"][0]["charging_limit_source"] == "CSO"
    assert [p["evse_id"] for p in doc["profiles"]] == [0, 1]


async def test_get_charging_profiles_without_profiles_or_without_reports(
        client: httpx.AsyncClient, tokens: Tokens, stations: None, node: FakeNode) -> None:
    node.answer = lambda req: {"outcome": "result", "payload": {"status": "NoProfiles"}, "error": None}
    r = await client.get("/api/v1/stations/CS1/charging-profiles", headers=tokens.operator)
    assert r.status_code == 200 and r.json()["complete"] is True and r.json()["profiles"] == []
    assert r.json()["accepted"] is False and node.requests[0]["payload"]["chargingProfile"] == {}
    node.answer = lambda req: {"outcome": "result", "payload": {"status": "Accepted"}, "error": None}
    r = await client.get("/api/v1/stations/CS1/charging-profiles", params={"wait_s": 0.3},
                         headers=tokens.operator)
    assert r.status_code == 200 and r.json()["complete"] is False  # the station never reported


async def test_unlock_answers(client: httpx.AsyncClient, tokens: Tokens, stations: None,
                              node: FakeNode) -> None:
    node.answer = lambda req: {"outcome": "result", "payload": {"status": "Unlocked"}, "error": None}
    r = await client.post("/api/v1/stations/CS1/unlock", json={"evse_id": 1, "connector_id": 1},
                          headers=tokens.operator)
    assert r.status_code == 200 and r.json()["accepted"] is True and r.json()["status"] == "Unlocked"
    node.answer = lambda req: {"outcome": "timeout", "payload": None,
                               "error": {"code": "Timeout", "description": "no answer"}}
    r = await client.post("/api/v1/stations/CS1/unlock", json={"evse_id": 1}, headers=tokens.operator)
    assert r.status_code == 504 and r.json()["error"]["code"] == "station_timeout"
    node.answer = lambda req: {"outcome": "call_error", "payload": None,
                               "error": {"code": "NotImplemented", "description": "no"}}
    r = await client.get("/api/v1/stations/CS1/charging-profiles", headers=tokens.operator)
    assert r.status_code == 502 and "NotImplemented" in r.json()["error"]["message"]


@pytest.mark.parametrize(("method", "path", "body", "where"), [
    ("POST", "/api/v1/stations/CS1/unlock", {"evse_id": 0}, "evse_id"),
    ("POST", "/api/v1/stations/CS1/unlock", {}, "evse_id"),
    ("POST", "/api/v1/stations/CS1/unlock", {"evse_id": 1, "connector": 1}, "connector"),
    ("GET", "/api/v1/stations/CS1/charging-profiles?purpose=Bogus", None, "purpose"),
    ("GET", "/api/v1/stations/CS1/charging-profiles?wait_s=0", None, "wait_s"),
    ("GET", "/api/v1/stations/CS1/charging-profiles?evse=1", None, "evse"),
])
async def test_bad_station_action_input_is_422_and_nothing_is_sent(
        client: httpx.AsyncClient, tokens: Tokens, stations: None, node: FakeNode,
        method: str, path: str, body: dict[str, Any] | None, where: str) -> None:
    r = await client.request(method, path, json=body, headers=tokens.operator)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error" and where in error["message"]
    assert node.requests == []
    r = await client.request(method, path.replace("CS1", "NOPE"), json={"evse_id": 1},
                             headers=tokens.operator)
    assert r.status_code in (404, 422)


def test_samples_encode_decode_and_thin() -> None:
    sample = PowerSample(1_700_000_000.5, 12.25, None, 40.0)
    assert PowerSample.decode(sample.encode()) == sample
    assert PowerSample.decode("garbage") is None and PowerSample.decode("x|1|2|3") is None
    samples = [PowerSample(float(i), 1.0, 2.0, 3.0) for i in range(10)]
    assert thin(samples, 20) == samples
    assert [x.ts for x in thin(samples, 4)] == [0.0, 3.0, 6.0, 9.0]
    assert thin(samples, 1) == [samples[-1]] and thin(samples, 0) == []
    assert due(100.0, None, 30) and not due(110.0, 100.0, 30) and due(130.0, 100.0, 30)
    assert due(50.0, 100.0, 30)  # a clock that went back (a new simulation) is sampled at once


async def test_power_history_is_read_from_redis_by_any_api_app(
        client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    await seed_site(redis, "depot", 50.0)
    history = PowerHistory(redis, KEYS, retention_s=3600, max_samples=5)
    now = datetime.now(UTC)
    for i in range(8):  # one sample a minute; the count bound keeps the last 5
        t = now - timedelta(minutes=8 - i)
        await history.record([{"site_id": "depot", "power_kw": float(i), "limit_kw": 50.0,
                               "planned_kw_now": None}], t.timestamp())
    await history.record([{"site_id": "depot", "power_kw": 0.0, "limit_kw": 50.0, "planned_kw_now": 1.0}],
                         (now - timedelta(hours=2)).timestamp())  # too old for the retention: dropped
    assert await redis.zcard(KEYS.site_power("depot")) == 5
    r = await client.get("/api/v1/sites/depot/history", headers=tokens.viewer)
    assert r.status_code == 200, r.text
    samples = r.json()["samples"]
    assert [x["power_kw"] for x in samples] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert samples[0]["limit_kw"] == 50.0 and samples[0]["planned_kw"] is None
    # another API app (another node, or this one restarted) answers the same from the store
    other = build_deps(redis, KEYS, RealClock(), auth=True, default_limit_kw=100.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(other)),
                                 base_url="http://api2") as second:
        again = await second.get("/api/v1/sites/depot/history", headers=tokens.viewer)
    assert again.json()["samples"] == samples
    since = (now - timedelta(minutes=3, seconds=30)).isoformat()
    r = await client.get("/api/v1/sites/depot/history", params={"from": since, "max_points": 2},
                         headers=tokens.viewer)
    assert [x["power_kw"] for x in r.json()["samples"]] == [5.0, 7.0]
    r = await client.get("/api/v1/sites/depot/history",
                         params={"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()},
                         headers=tokens.viewer)
    assert r.status_code == 422 and "`to`" in r.json()["error"]["message"]
    r = await client.get("/api/v1/sites/nowhere/history", headers=tokens.viewer)
    assert r.status_code == 404


async def test_a_site_without_a_limit_says_so_with_the_default(
        client: httpx.AsyncClient, tokens: Tokens) -> None:
    r = await client.get("/api/v1/sites/default", headers=tokens.viewer)
    site = r.json()
    assert site["limit_set"] is False and site["limit_kw"] == 100.0 and site["headroom_kw"] == 100.0
    assert site["limit_note"] == "no limit set (planned with default 100 kW)"


async def test_thinning_in_redis_matches_thin(redis: Redis) -> None:
    history = PowerHistory(redis, KEYS, retention_s=10**6, max_samples=1000)
    t0 = datetime.now(UTC).timestamp()
    for i in range(101):
        await history.record([{"site_id": "s", "power_kw": float(i), "limit_kw": None,
                               "planned_kw_now": None}], t0 + i)
    everything = await history.read("s", None, None, 1000)
    assert [x.power_kw for x in everything] == [float(i) for i in range(101)]
    for m in (1, 2, 7, 50, 101, 200):
        assert await history.read("s", None, None, m) == thin(everything, m), m
    assert [x.power_kw for x in await history.read("s", t0 + 10, t0 + 12, 100)] == [10.0, 11.0, 12.0]
