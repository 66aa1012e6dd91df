"""The typed operator API: malformed JSON is a 400, the events cursor, CRUD of stations, sites and
id tokens, and response bodies with numbers as numbers (real Redis, the ASGI app)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis

from csms.events import Event, EventType
from tests.api.conftest import KEYS, Tokens, seed_site


@pytest.mark.parametrize("body", [b"{", b"{'limit_kw': 5}", b"limit_kw=5", b'{"limit_kw": 5,}'])
async def test_malformed_json_is_400_with_the_error_body(client: httpx.AsyncClient, tokens: Tokens,
                                                          redis: Redis, body: bytes) -> None:
    await seed_site(redis, "depot", 50.0)
    r = await client.put("/api/v1/sites/depot/limit", content=body,
                         headers={**tokens.operator, "Content-Type": "application/json"})
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


async def test_events_cursor_pages_forward_without_gaps(client: httpx.AsyncClient, tokens: Tokens,
                                                        redis: Redis) -> None:
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
    page = (await client.get(f"/api/v1/events?after={page['next']}&station_id=CS1",
                             headers=tokens.viewer)).json()
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
    params = {"from": (t0 + timedelta(minutes=10)).isoformat(),
              "to": (t0 + timedelta(minutes=40)).isoformat()}
    r = await client.get("/api/v1/events", params=params, headers=tokens.viewer)
    assert r.status_code == 200, r.text
    assert [e["data"]["n"] for e in r.json()["items"]] == [3, 2, 1]  # `from` inclusive, `to` exclusive
    r = await client.get("/api/v1/events", params={**params, "after": "0-0"}, headers=tokens.viewer)
    assert [e["data"]["n"] for e in r.json()["items"]] == [1, 2, 3]
    for bad in ({"from": "yesterday"}, {"from": "2026-03-02T12:00:00"}, {"after": "abc"},
                {"to": t0.isoformat(), "from": (t0 + timedelta(hours=1)).isoformat()},
                {"after": "0-0", "before": "5-0"}):
        r = await client.get("/api/v1/events", params=bad, headers=tokens.viewer)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["message"], bad


async def test_events_cursor_edges(client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    await _event(redis, 0, datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    top = f"{2**64 - 1}-{2**64 - 1}"
    for params, n_items in (({"after": top}, 0), ({"before": "0-0"}, 0), ({"before": "0-1"}, 0),
                            ({"before": top}, 1), ({"after": "0-0"}, 1)):
        r = await client.get("/api/v1/events", params=params, headers=tokens.viewer)
        assert r.status_code == 200, (params, r.text)
        assert len(r.json()["items"]) == n_items, params
    r = await client.get("/api/v1/events", params={"after": f"{2**64}-0"}, headers=tokens.viewer)
    assert r.status_code == 422 and "out of range" in r.json()["error"]["message"], r.text
