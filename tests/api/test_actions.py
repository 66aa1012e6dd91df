"""Actions over the command protocol: payloads sent, outcomes mapped (409 offline, 504 timeout,
502 CALLERROR, 422 invalid), and validation before anything is sent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.api.conftest import FakeNode, Tokens, seed_session, seed_station


@pytest.fixture
async def stations(redis: Redis) -> None:
    """CS1 online on node-a with a live session, CS2 offline."""
    await seed_station(redis, "CS1")
    await seed_station(redis, "CS2", online=False)
    await seed_session(redis, "TX1", "CS1", 1)


PROFILE = {"id": 7, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
           "transactionId": "TX1",
           "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0},
                                                            {"startPeriod": 900, "limit": 8.0,
                                                             "numberPhases": 3}]}]}

CASES: list[tuple[str, str, dict[str, Any], str, dict[str, Any]]] = [
    ("post", "/api/v1/stations/CS1/remote-start", {"id_token": "TAG9", "evse_id": 1, "remote_start_id": 5},
     "RequestStartTransaction", {"idToken": {"idToken": "TAG9", "type": "Central"}, "remoteStartId": 5,
                                 "evseId": 1}),
    ("post", "/api/v1/stations/CS1/remote-stop", {"transaction_id": "TX1"},
     "RequestStopTransaction", {"transactionId": "TX1"}),
    ("post", "/api/v1/sessions/CS1/TX1/stop", None, "RequestStopTransaction", {"transactionId": "TX1"}),
    ("post", "/api/v1/stations/CS1/reset", {"type": "Immediate"}, "Reset", {"type": "Immediate"}),
    ("post", "/api/v1/stations/CS1/availability", {"operational_status": "Inoperative", "evse_id": 1,
                                                   "connector_id": 1},
     "ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 1, "connectorId": 1}}),
    ("post", "/api/v1/stations/CS1/trigger", {"requested_message": "StatusNotification", "evse_id": 1},
     "TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": 1}}),
    ("post", "/api/v1/stations/CS1/charging-profiles", {"evse_id": 1, "charging_profile": PROFILE},
     "SetChargingProfile", {"evseId": 1, "chargingProfile": PROFILE}),
    ("post", "/api/v1/stations/CS1/unlock", {"evse_id": 1}, "UnlockConnector",
     {"evseId": 1, "connectorId": 1}),
    ("delete", "/api/v1/stations/CS1/charging-profiles?evse_id=1&purpose=TxProfile",
     None, "ClearChargingProfile",
     {"chargingProfileCriteria": {"evseId": 1, "chargingProfilePurpose": "TxProfile"}}),
    ("delete", "/api/v1/stations/CS1/charging-profiles?profile_id=7",
     None, "ClearChargingProfile", {"chargingProfileId": 7}),
]


@pytest.mark.parametrize(("method", "path", "body", "action", "payload"), CASES,
                         ids=[c[1].split("/")[-1] for c in CASES])
async def test_action_sends_the_ocpp_call_and_returns_the_answer(
        client: httpx.AsyncClient, tokens: Tokens, stations: None, node: FakeNode,
        method: str, path: str, body: dict[str, Any] | None, action: str, payload: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {"headers": tokens.operator}
    if body is not None:
        kwargs["json"] = body
    r = await client.request(method.upper(), path, **kwargs)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["outcome"] == "result" and doc["status"] == "Accepted" and doc["accepted"] is True
    assert doc["action"] == action and doc["station_id"] == "CS1"
    [req] = node.requests
    assert req["action"] == action and req["station_id"] == "CS1"
    assert req["payload"] == payload
    assert req["timeout_s"] == 2.0 and req["reply_to"] == f"evfleet:reply:{req['request_id']}"


async def test_remote_start_generates_a_remote_start_id(
        client: httpx.AsyncClient, tokens: Tokens, stations: None, node: FakeNode) -> None:
    r = await client.post("/api/v1/stations/CS1/remote-start", json={"id_token": "T"},
                          headers=tokens.operator)
    assert r.status_code == 200
    assert isinstance(node.requests[0]["payload"]["remoteStartId"], int)


async def test_rejected_answer_is_200_with_accepted_false(
        client: httpx.AsyncClient, tokens: Tokens, stations: None, node: FakeNode) -> None:
    node.answer = lambda req: {"outcome": "result", "payload": {"status": "Rejected"}, "error": None}
    r = await client.post("/api/v1/stations/CS1/reset", json={}, headers=tokens.operator)
    assert r.status_code == 200 and r.json()["status"] == "Rejected" and r.json()["accepted"] is False


async def test_offline_station_gets_409_and_nothing_is_sent(
        client: httpx.AsyncClient, tokens: Tokens, stations: None, node: FakeNode) -> None:
    r = await client.post("/api/v1/stations/CS2/reset", json={}, headers=tokens.operator)
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "station_offline" and "CS2 is offline" in err["message"]
    assert err["details"]["outcome"] == "offline"
    assert node.requests == []


async def test_station_timeout_gets_504(client: httpx.AsyncClient, tokens: Tokens, stations: None,
                                        node: FakeNode) -> None:
    node.answer = lambda req: {"outcome": "timeout", "payload": None, "error": None}
    r = await client.post("/api/v1/stations/CS1/trigger", json={"requested_message": "Heartbeat"},
                          headers=tokens.operator)
    assert r.status_code == 504 and r.json()["error"]["code"] == "station_timeout"


async def test_node_that_never_answers_gets_504(client: httpx.AsyncClient, tokens: Tokens, redis: Redis,
                                                deps: Any) -> None:
    await seed_station(redis, "CS9", node="stuck-node")
    import csms.commands as commands
    old, commands.CALLER_GRACE_S = commands.CALLER_GRACE_S, 0.0
    try:
        r = await client.post("/api/v1/stations/CS9/reset?timeout_s=1", json={}, headers=tokens.operator)
    finally:
        commands.CALLER_GRACE_S = old
    assert r.status_code == 504 and "did not answer Reset" in r.json()["error"]["message"]
    assert await redis.llen("evfleet:node:stuck-node:commands") == 1


async def test_station_on_a_dead_node_is_offline(client: httpx.AsyncClient, tokens: Tokens,
                                                 redis: Redis) -> None:
    await seed_station(redis, "CS8", node="dead-node")  # online flag set, but no node heartbeat
    r = await client.post("/api/v1/stations/CS8/reset", json={}, headers=tokens.operator)
    assert r.status_code == 409 and r.json()["error"]["code"] == "station_offline"
    assert await redis.llen("evfleet:node:dead-node:commands") == 0


async def test_call_error_gets_502_with_the_code(client: httpx.AsyncClient, tokens: Tokens, stations: None,
                                                  node: FakeNode) -> None:
    node.answer = lambda req: {"outcome": "call_error", "payload": None,
                               "error": {"code": "NotImplemented", "description": "no smart charging"}}
    r = await client.post("/api/v1/stations/CS1/charging-profiles",
                          json={"evse_id": 1, "charging_profile": PROFILE}, headers=tokens.operator)
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "station_call_error" and "NotImplemented" in err["message"]
    assert err["details"]["error"]["description"] == "no smart charging"


async def test_node_rejecting_the_request_gets_422(client: httpx.AsyncClient, tokens: Tokens,
                                                   stations: None, node: FakeNode) -> None:
    node.answer = lambda req: {"outcome": "invalid", "payload": None,
                               "error": {"code": "FormationViolation", "description": "bad payload"}}
    r = await client.post("/api/v1/stations/CS1/reset", json={}, headers=tokens.operator)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_call"


@pytest.mark.parametrize(("path", "body", "fragment"), [
    ("/api/v1/stations/CS1/reset", {"type": "Sometime"}, "body.type"),
    ("/api/v1/stations/CS1/reset", {"typo": "Immediate"}, "body.typo"),
    ("/api/v1/stations/CS1/availability", {"operational_status": "Operative", "connector_id": 1},
     "connector_id needs evse_id"),
    ("/api/v1/stations/CS1/remote-start", {}, "body.id_token"),
    ("/api/v1/stations/CS1/charging-profiles",
     {"evse_id": 1, "charging_profile": {**PROFILE, "transactionId": None}}, "TxProfile needs transactionId"),
    ("/api/v1/stations/CS1/charging-profiles",
     {"evse_id": 1, "charging_profile": {**PROFILE, "chargingSchedule": [
         {"id": 1, "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 60, "limit": 6}]}]}},
     "startPeriod 0"),
    ("/api/v1/stations/CS1/trigger", {"requested_message": "Nonsense"}, "body.requested_message"),
])
async def test_invalid_action_bodies_get_422_and_nothing_is_sent(
        client: httpx.AsyncClient, tokens: Tokens, stations: None, node: FakeNode,
        path: str, body: dict[str, Any], fragment: str) -> None:
    r = await client.post(path, json=body, headers=tokens.operator)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert fragment in err["message"] + str(err["details"])
    assert node.requests == []


async def test_clear_profile_needs_criteria(client: httpx.AsyncClient, tokens: Tokens, stations: None,
                                            node: FakeNode) -> None:
    r = await client.delete("/api/v1/stations/CS1/charging-profiles", headers=tokens.operator)
    assert r.status_code == 422 and "profile_id" in r.json()["error"]["message"]
    assert node.requests == []


async def test_unknown_station_and_ended_session(client: httpx.AsyncClient, tokens: Tokens, stations: None,
                                                 redis: Redis, node: FakeNode) -> None:
    r = await client.post("/api/v1/stations/NOPE/reset", json={}, headers=tokens.operator)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    await seed_session(redis, "TXE", "CS1", 2, live=False)
    r = await client.post("/api/v1/sessions/CS1/TXE/stop", headers=tokens.operator)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert node.requests == []
