"""The typed operator API: malformed JSON is a 400, the events cursor, CRUD of stations, sites and
id tokens, and response bodies with numbers as numbers (real Redis, the ASGI app)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis

from csms.core.security import verify_password
from csms.store.provisioning import get_credentials
from evfleet.events import Event, EventType
from tests.api.conftest import KEYS, Tokens, seed_session, seed_site, seed_station


@pytest.mark.parametrize("body", [b"{", b"{'limit_kw': 5}", b"limit_kw=5", b'{"limit_kw": 5,}'])
async def test_malformed_json_is_400_with_the_error_body(
    client: httpx.AsyncClient, tokens: Tokens, redis: Redis, body: bytes
) -> None:
    await seed_site(redis, "depot", 50.0)
    r = await client.put(
        "/api/v1/sites/depot/limit",
        content=body,
        headers={**tokens.operator, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_json"
    assert error["message"].startswith("request body is not valid JSON"), error
    # well-formed JSON with a bad value stays a 422
    r = await client.put("/api/v1/sites/depot/limit", json={"limit_kw": "lots"}, headers=tokens.operator)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert (await client.get("/api/v1/sites/depot", headers=tokens.viewer)).json()["limit_kw"] == 50.0


async def _event(redis: Redis, n: int, ts: datetime, sid: str = "CS1") -> None:
    ev = Event(type=EventType.CONNECTOR_STATUS, station_id=sid, ts=ts, data={"n": n})
    await redis.xadd(KEYS.events(), ev.to_fields())


async def test_events_cursor_pages_forward_without_gaps(
    client: httpx.AsyncClient, tokens: Tokens, redis: Redis
) -> None:
    t0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    for n in range(7):
        await _event(redis, n, t0 + timedelta(minutes=n), "CS1" if n % 2 else "CS2")
    r = await client.get("/api/v1/events?limit=2", headers=tokens.viewer)
    newest = r.json()
    assert [e["data"]["n"] for e in newest["items"]] == [6, 5]
    seen: list[int] = []
    cursor = "0-0"
    for _ in range(10):
        page = (await client.get(f"/api/v1/events?limit=3&after={cursor}", headers=tokens.viewer)).json()
        seen += [e["data"]["n"] for e in page["items"]]
        cursor = page["next"]
        if not page["items"]:
            break
    assert seen == list(range(7))
    assert cursor == newest["next"]  # the newest page's cursor is where forward paging ends
    for n in (7, 8):  # written after the client's last read: the cursor gets them, nothing else
        await _event(redis, n, t0 + timedelta(minutes=n), "CS2")
    page = (await client.get(f"/api/v1/events?after={cursor}", headers=tokens.viewer)).json()
    assert [e["data"]["n"] for e in page["items"]] == [7, 8]
    # filtered paging: station CS1 only, the cursor still moves over the others
    page = (await client.get("/api/v1/events?after=0-0&limit=2&station_id=CS1", headers=tokens.viewer)).json()
    assert [e["data"]["n"] for e in page["items"]] == [1, 3]
    page = (
        await client.get(f"/api/v1/events?after={page['next']}&station_id=CS1", headers=tokens.viewer)
    ).json()
    assert [e["data"]["n"] for e in page["items"]] == [5]
    # backwards: `older` pages to the beginning
    older = newest["older"]
    back: list[int] = []
    while older:
        page = (await client.get(f"/api/v1/events?limit=4&before={older}", headers=tokens.viewer)).json()
        back += [e["data"]["n"] for e in page["items"]]
        older = page["older"]
    assert back == [4, 3, 2, 1, 0]


async def test_events_time_range_filter(client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    t0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    for n in range(6):
        await _event(redis, n, t0 + timedelta(minutes=10 * n))
    params = {
        "from": (t0 + timedelta(minutes=10)).isoformat(),
        "to": (t0 + timedelta(minutes=40)).isoformat(),
    }
    r = await client.get("/api/v1/events", params=params, headers=tokens.viewer)
    assert r.status_code == 200, r.text
    assert [e["data"]["n"] for e in r.json()["items"]] == [3, 2, 1]  # `from` inclusive, `to` exclusive
    r = await client.get("/api/v1/events", params={**params, "after": "0-0"}, headers=tokens.viewer)
    assert [e["data"]["n"] for e in r.json()["items"]] == [1, 2, 3]
    for bad in (
        {"from": "yesterday"},
        {"from": "2026-03-02T12:00:00"},
        {"after": "abc"},
        {"to": t0.isoformat(), "from": (t0 + timedelta(hours=1)).isoformat()},
        {"after": "0-0", "before": "5-0"},
    ):
        r = await client.get("/api/v1/events", params=bad, headers=tokens.viewer)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["message"], bad


async def test_events_cursor_edges(client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    await _event(redis, 0, datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    top = f"{2**64 - 1}-{2**64 - 1}"
    for params, n_items in (
        ({"after": top}, 0),
        ({"before": "0-0"}, 0),
        ({"before": "0-1"}, 0),
        ({"before": top}, 1),
        ({"after": "0-0"}, 1),
    ):
        r = await client.get("/api/v1/events", params=params, headers=tokens.viewer)
        assert r.status_code == 200, (params, r.text)
        assert len(r.json()["items"]) == n_items, params
    r = await client.get("/api/v1/events", params={"after": f"{2**64}-0"}, headers=tokens.viewer)
    assert r.status_code == 422 and "out of range" in r.json()["error"]["message"], r.text


async def test_create_update_delete_station_with_a_password_shown_once(
    client: httpx.AsyncClient, tokens: Tokens, redis: Redis
) -> None:
    await seed_site(redis, "depot", 50.0)
    body = {"station_id": "CS-NEW", "site_id": "depot", "security_profile": 2}
    r = await client.post("/api/v1/stations", json=body, headers=tokens.viewer)
    assert r.status_code == 403 and not await redis.sismember(KEYS.stations(), "CS-NEW")
    r = await client.post("/api/v1/stations", json=body, headers=tokens.operator)
    assert r.status_code == 201, r.text
    doc = r.json()
    password = doc["password"]
    assert len(password) == 24 and password.isalnum()
    assert doc | {"password": None} == {
        "station_id": "CS-NEW",
        "site_id": "depot",
        "security_profile": 2,
        "compat": False,
        "online": False,
        "password": None,
    }
    stored, profile = await get_credentials(redis, KEYS, "CS-NEW")  # type: ignore[misc]
    assert profile == 2 and verify_password(password, stored) and not verify_password("x" * 24, stored)
    raw = json.dumps(await redis.hgetall(KEYS.station_credentials("CS-NEW")))
    assert password not in raw and password not in json.dumps(await redis.hgetall(KEYS.station("CS-NEW")))
    r = await client.get("/api/v1/stations/CS-NEW", headers=tokens.viewer)
    assert r.status_code == 200 and "password" not in r.text and r.json()["site_id"] == "depot"
    # exists: 409, nothing changes
    r = await client.post("/api/v1/stations", json=body, headers=tokens.operator)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
    assert verify_password(password, (await get_credentials(redis, KEYS, "CS-NEW"))[0])  # type: ignore[index]
    # bad input: 422 with a message, nothing stored
    for bad in (
        {"station_id": "bad id"},
        {"station_id": "CS-X", "site_id": "nowhere"},
        {"station_id": "CS-X", "security_profile": 4},
        {"station_id": "CS-X", "password": "mine12345"},
    ):
        r = await client.post("/api/v1/stations", json=bad, headers=tokens.operator)
        assert r.status_code == 422 and r.json()["error"]["message"], (bad, r.text)
        assert not await redis.sismember(KEYS.stations(), "CS-X")
    # update: compat, move site, new password (the old one stops working)
    await seed_site(redis, "yard", 20.0)
    r = await client.patch(
        "/api/v1/stations/CS-NEW", json={"site_id": "yard", "compat": True}, headers=tokens.operator
    )
    assert r.status_code == 200, r.text
    assert r.json()["site_id"] == "yard" and r.json()["compat"] is True and r.json()["password"] is None
    assert await redis.smembers(KEYS.site_stations("depot")) == set()
    assert await redis.smembers(KEYS.site_stations("yard")) == {"CS-NEW"}
    r = await client.patch("/api/v1/stations/CS-NEW", json={"new_password": True}, headers=tokens.operator)
    new_password = r.json()["password"]
    assert len(new_password) == 24 and new_password != password
    stored, profile = await get_credentials(redis, KEYS, "CS-NEW")  # type: ignore[misc]
    assert verify_password(new_password, stored) and not verify_password(password, stored) and profile == 2
    assert (await client.get("/api/v1/stations/CS-NEW", headers=tokens.viewer)).json()["site_id"] == "yard"
    r = await client.patch("/api/v1/stations/CS-NEW", json={"site_id": "nowhere"}, headers=tokens.operator)
    assert r.status_code == 422 and "unknown site" in r.json()["error"]["message"]
    r = await client.patch("/api/v1/stations/NOPE", json={"compat": True}, headers=tokens.operator)
    assert r.status_code == 404
    # a connected station neither moves nor goes away
    await redis.hset(KEYS.station("CS-NEW"), "online", "1")
    r = await client.patch("/api/v1/stations/CS-NEW", json={"site_id": "depot"}, headers=tokens.operator)
    assert r.status_code == 409 and "offline" in r.json()["error"]["message"]
    r = await client.delete("/api/v1/stations/CS-NEW", headers=tokens.operator)
    assert r.status_code == 409 and await redis.sismember(KEYS.stations(), "CS-NEW")
    await redis.hset(KEYS.station("CS-NEW"), "online", "0")
    r = await client.delete("/api/v1/stations/CS-NEW", headers=tokens.operator)
    assert r.status_code == 204
    assert not await redis.sismember(KEYS.stations(), "CS-NEW")
    assert await get_credentials(redis, KEYS, "CS-NEW") is None
    assert (await client.get("/api/v1/stations/CS-NEW", headers=tokens.viewer)).status_code == 404
    assert (await client.delete("/api/v1/stations/CS-NEW", headers=tokens.operator)).status_code == 404


async def test_create_update_delete_site_limit_goes_through_the_event(
    client: httpx.AsyncClient, tokens: Tokens, redis: Redis
) -> None:
    r = await client.post(
        "/api/v1/sites", json={"site_id": "yard", "name": "Bus yard"}, headers=tokens.viewer
    )
    assert r.status_code == 403
    r = await client.post(
        "/api/v1/sites", json={"site_id": "yard", "name": "Bus yard"}, headers=tokens.operator
    )
    assert r.status_code == 201, r.text
    site = r.json()
    assert site["name"] == "Bus yard" and site["limit_set"] is False
    # no limit of its own: planned with the documented default, and said so
    assert site["limit_kw"] == site["default_limit_kw"] == 100.0
    assert site["limit_note"] == "no limit set (planned with default 100 kW)"
    assert await redis.xlen(KEYS.events()) == 0  # no limit, no limit event
    r = await client.post("/api/v1/sites", json={"site_id": "yard"}, headers=tokens.operator)
    assert r.status_code == 409
    r = await client.patch("/api/v1/sites/yard", json={"limit_kw": 42.5}, headers=tokens.operator)
    assert r.status_code == 200 and r.json()["limit_kw"] == 42.5 and r.json()["name"] == "Bus yard", r.text
    assert r.json()["limit_set"] is True and r.json()["limit_note"] == "42.5 kW"
    events = await redis.xrange(KEYS.events())
    assert len(events) == 1 and Event.from_fields(events[0][1]).type == EventType.SITE_LIMIT
    assert Event.from_fields(events[0][1]).data == {"limit_kw": 42.5, "source": "api"}
    r = await client.post("/api/v1/sites", json={"site_id": "pier", "limit_kw": 11}, headers=tokens.operator)
    assert r.status_code == 201 and r.json()["limit_kw"] == 11.0
    assert await redis.xlen(KEYS.events()) == 2
    for path, bad in (
        ("/api/v1/sites", {"site_id": "a b"}),
        ("/api/v1/sites", {"site_id": "x", "limit_kw": 0}),
        ("/api/v1/sites", {"site_id": "x", "limit_kw": "lots"}),
    ):
        r = await client.post(path, json=bad, headers=tokens.operator)
        assert r.status_code == 422 and r.json()["error"]["message"], (bad, r.text)
    r = await client.patch("/api/v1/sites/yard", json={"limit_kw": -1}, headers=tokens.operator)
    assert r.status_code == 422
    assert (await client.get("/api/v1/sites/yard", headers=tokens.viewer)).json()["limit_kw"] == 42.5
    r = await client.patch("/api/v1/sites/nowhere", json={"limit_kw": 5}, headers=tokens.operator)
    assert r.status_code == 404 and not await redis.sismember(KEYS.sites(), "nowhere")
    # a site with stations is not deleted; an empty one is
    r = await client.post(
        "/api/v1/stations", json={"station_id": "CS-Y", "site_id": "yard"}, headers=tokens.operator
    )
    assert r.status_code == 201
    r = await client.delete("/api/v1/sites/yard", headers=tokens.operator)
    assert r.status_code == 409 and "station" in r.json()["error"]["message"]
    assert (await client.delete("/api/v1/stations/CS-Y", headers=tokens.operator)).status_code == 204
    assert (await client.delete("/api/v1/sites/yard", headers=tokens.operator)).status_code == 204
    assert (await client.get("/api/v1/sites/yard", headers=tokens.viewer)).status_code == 404
    assert (await client.delete("/api/v1/sites/default", headers=tokens.operator)).status_code == 409


async def test_id_tokens_create_update_delete(
    client: httpx.AsyncClient, tokens: Tokens, redis: Redis
) -> None:
    r = await client.post(
        "/api/v1/id-tokens", json={"id_token": "TAG-9", "group_id": "fleet"}, headers=tokens.operator
    )
    assert r.status_code == 201 and r.json() == {
        "id_token": "TAG-9",
        "type": "ISO14443",
        "status": "Accepted",
        "group_id": "fleet",
    }
    r = await client.put("/api/v1/id-tokens/TAG-9", json={"status": "Blocked"}, headers=tokens.operator)
    assert r.status_code == 200 and r.json()["status"] == "Blocked"
    assert await redis.hget(KEYS.id_token("TAG-9"), "status") == "Blocked"
    r = await client.post("/api/v1/id-tokens", json={"id_token": "TAG 9"}, headers=tokens.operator)
    assert r.status_code == 422
    assert (await client.delete("/api/v1/id-tokens/TAG-9", headers=tokens.viewer)).status_code == 403
    assert (await client.delete("/api/v1/id-tokens/TAG-9", headers=tokens.operator)).status_code == 204
    assert not await redis.sismember(KEYS.id_tokens(), "TAG-9")


async def test_a_limit_for_a_site_id_too_long_for_the_store_is_422_not_500(
    client: httpx.AsyncClient, tokens: Tokens, redis: Redis
) -> None:
    site = "a" * 60  # the path allows 64, the store's site ids end at 48
    r = await client.put(f"/api/v1/sites/{site}/limit", json={"limit_kw": 5}, headers=tokens.operator)
    assert r.status_code == 422 and "invalid site id" in r.json()["error"]["message"], r.text
    assert await redis.xlen(KEYS.events()) == 0 and not await redis.sismember(KEYS.sites(), site)


async def test_openapi_describes_every_json_answer(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    untyped = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if (
                    status.startswith("2")
                    and schema is not None
                    and not ("$ref" in schema or schema.get("type"))
                ):
                    untyped.append(f"{method.upper()} {path} {status}: {schema}")
                if status.startswith(("4", "5")):
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, method, status)
    assert untyped == []
    assert "/api/v1/live" in spec["paths"] and len(spec["paths"]) >= 25


async def test_documents_carry_numbers_not_redis_strings(
    client: httpx.AsyncClient, tokens: Tokens, redis: Redis
) -> None:
    await seed_site(redis, "depot", 50.0)
    await seed_station(redis, "CS1", site="depot")
    await seed_session(redis, "T1", "CS1", power_w=7400, energy_wh=1234.5)
    r = await client.get("/api/v1/transactions/CS1/T1", headers=tokens.viewer)
    assert r.status_code == 200, r.text
    record = r.json()["record"]
    assert record["power_w"] == 7400.0 and record["energy_wh"] == 1234.5 and record["soc"] == 42.0
    assert record["evse_id"] == 1 and record["last_seq_no"] == 3 and record["ended_at"] is None
    station = (await client.get("/api/v1/stations/CS1", headers=tokens.viewer)).json()
    assert station["heartbeat_interval_s"] == 300 and station["evses"][0]["max_power_w"] == 22000.0
    assert station["sessions"][0]["power_kw"] == 7.4
    site = (await client.get("/api/v1/sites/depot", headers=tokens.viewer)).json()
    assert site["limit_kw"] == 50.0 and site["power_kw"] == 7.4 and site["optimizer"]["objective"] == 12.5
    session = (await client.get("/api/v1/sessions/CS1/T1", headers=tokens.viewer)).json()
    assert session["energy_kwh"] == 1.2345 and session["meter"][0]["power_w"] == 7400


async def test_events_type_filter_is_an_enum(client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    await _event(redis, 0, datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    r = await client.get("/api/v1/events?type=connector.status", headers=tokens.viewer)
    assert [e["type"] for e in r.json()["items"]] == ["connector.status"]
    assert (await client.get("/api/v1/events?type=tx.started", headers=tokens.viewer)).json()["items"] == []
    r = await client.get("/api/v1/events?type=connector.stat", headers=tokens.viewer)  # a typo is not "none"
    assert r.status_code == 422 and "type" in r.json()["error"]["message"], r.text
