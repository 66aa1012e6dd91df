"""Writes: site limit and prices (keys + events = the optimizer's input), id token CRUD, validation."""

from __future__ import annotations

import json

import httpx
import pytest
from redis.asyncio import Redis

from evfleet.events import Event, EventType
from tests.api.conftest import KEYS, Tokens, seed_site


async def _events(redis: Redis) -> list[Event]:
    return [Event.from_fields(f) for _, f in await redis.xrange(KEYS.events())]


async def test_set_site_limit_writes_hash_and_event(client: httpx.AsyncClient, tokens: Tokens,
                                                    redis: Redis) -> None:
    r = await client.put("/api/v1/sites/depot/limit", json={"limit_kw": 75.5, "name": "North depot"},
                         headers=tokens.operator)
    assert r.status_code == 200, r.text
    assert r.json()["limit_kw"] == 75.5 and r.json()["name"] == "North depot"
    site = await redis.hgetall(KEYS.site("depot"))
    assert float(site["limit_kw"]) == 75.5 and site["updated_at"]
    assert await redis.sismember(KEYS.sites(), "depot")
    [event] = await _events(redis)
    assert event.type is EventType.SITE_LIMIT and event.site_id == "depot"
    assert event.data == {"limit_kw": 75.5, "source": "api"}


async def test_set_prices_writes_document_and_event(client: httpx.AsyncClient, tokens: Tokens,
                                                    redis: Redis) -> None:
    body = {"start": "2026-01-01T00:00:00Z", "step_minutes": 15, "import_price": [0.3, 0.2, 0.1, 0.25]}
    r = await client.put("/api/v1/sites/depot/prices", json=body, headers=tokens.operator)
    assert r.status_code == 200, r.text
    stored = json.loads(await redis.get(KEYS.site_prices("depot")))
    assert stored == {"start": "2026-01-01T00:00:00+00:00", "step_minutes": 15,
                      "import_price": [0.3, 0.2, 0.1, 0.25], "export_price": [0.0, 0.0, 0.0, 0.0]}
    [event] = await _events(redis)
    assert event.type is EventType.SITE_PRICES and event.data["steps"] == 4
    site = (await client.get("/api/v1/sites/depot", headers=tokens.viewer)).json()
    assert site["prices"]["import_price"] == [0.3, 0.2, 0.1, 0.25]


@pytest.mark.parametrize(("path", "body", "fragment"), [
    ("/api/v1/sites/depot/limit", {"limit_kw": -5}, "greater than 0"),
    ("/api/v1/sites/depot/limit", {"limit_kw": "lots"}, "valid number"),
    ("/api/v1/sites/depot/limit", {}, "body.limit_kw"),
    ("/api/v1/sites/depot/limit", {"limit_kw": 5, "extra": 1}, "body.extra"),
    ("/api/v1/sites/depot/prices", {"start": "2026-01-01T00:00:00", "step_minutes": 15, "import_price": [1]},
     "timezone"),
    ("/api/v1/sites/depot/prices", {"start": "2026-01-01T00:00:00Z", "step_minutes": 15, "import_price": []},
     "import_price"),
    ("/api/v1/sites/depot/prices", {"start": "2026-01-01T00:00:00Z", "step_minutes": 15,
                                    "import_price": [1, 2], "export_price": [1]}, "as many steps"),
    ("/api/v1/sites/bad%20site/limit", {"limit_kw": 5}, "path.site_id"),
])
async def test_invalid_site_input_gets_422_and_changes_nothing(
        client: httpx.AsyncClient, tokens: Tokens, redis: Redis, path: str, body: dict[str, object],
        fragment: str) -> None:
    await seed_site(redis, "depot", 50.0)
    before = await redis.xlen(KEYS.events())
    r = await client.put(path, json=body, headers=tokens.operator)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert fragment in err["message"] + json.dumps(err["details"])
    assert await redis.hget(KEYS.site("depot"), "limit_kw") == "50.0"
    assert await redis.get(KEYS.site_prices("depot")) is None
    assert await redis.xlen(KEYS.events()) == before


async def test_malformed_json_gets_the_error_body(client: httpx.AsyncClient, tokens: Tokens) -> None:
    r = await client.put("/api/v1/sites/depot/limit", content=b"{nope",
                         headers={**tokens.operator, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"  # not JSON: 400, not 422


async def test_bad_query_parameters_and_unknown_routes(client: httpx.AsyncClient, tokens: Tokens) -> None:
    r = await client.get("/api/v1/stations", params={"limit": 0}, headers=tokens.viewer)
    assert r.status_code == 422 and "query.limit" in r.json()["error"]["message"]
    r = await client.get("/api/v1/sessions", params={"state": "sleepy"}, headers=tokens.viewer)
    assert r.status_code == 422
    r = await client.get("/api/v1/nothing", headers=tokens.viewer)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await client.delete("/api/v1/sites", headers=tokens.operator)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_id_token_crud(client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    r = await client.post("/api/v1/id-tokens", json={"id_token": "TAG1", "group_id": "fleet-a"},
                          headers=tokens.operator)
    assert r.status_code == 201
    assert r.json() == {"id_token": "TAG1", "type": "ISO14443", "status": "Accepted", "group_id": "fleet-a"}
    assert await redis.hgetall(KEYS.id_token("TAG1")) == {"type": "ISO14443", "status": "Accepted",
                                                          "group_id": "fleet-a"}
    r = await client.post("/api/v1/id-tokens", json={"id_token": "TAG1"}, headers=tokens.operator)
    assert r.status_code == 409
    r = await client.put("/api/v1/id-tokens/TAG1", json={"status": "Blocked", "type": "Central"},
                         headers=tokens.operator)
    assert r.json()["status"] == "Blocked" and r.json()["group_id"] is None
    await client.put("/api/v1/id-tokens/TAG2", json={}, headers=tokens.operator)
    page = (await client.get("/api/v1/id-tokens", params={"limit": 1, "offset": 1},
                             headers=tokens.viewer)).json()
    assert page["total"] == 2 and [t["id_token"] for t in page["items"]] == ["TAG2"]
    assert (await client.get("/api/v1/id-tokens/TAG1", headers=tokens.viewer)).json()["status"] == "Blocked"
    assert (await client.delete("/api/v1/id-tokens/TAG1", headers=tokens.operator)).status_code == 204
    assert (await client.get("/api/v1/id-tokens/TAG1", headers=tokens.viewer)).status_code == 404
    assert (await client.delete("/api/v1/id-tokens/TAG1", headers=tokens.operator)).status_code == 404
    assert not await redis.exists(KEYS.id_token("TAG1"))
    r = await client.put("/api/v1/id-tokens/TAG3", json={"status": "Sleepy"}, headers=tokens.operator)
    assert r.status_code == 422 and not await redis.exists(KEYS.id_token("TAG3"))
    r = await client.post("/api/v1/id-tokens", json={"id_token": "x" * 40}, headers=tokens.operator)
    assert r.status_code == 422
    assert (await client.delete("/api/v1/id-tokens/TAG2", headers=tokens.viewer)).status_code == 403
