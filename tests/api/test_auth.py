"""Bearer tokens and roles: hashed storage, 401/403 bodies, viewer vs operator, auth off."""

from __future__ import annotations

import hashlib

import httpx
from redis.asyncio import Redis

from csms.api.app import build_deps, create_app
from csms.api.tokens import TokenStore
from evfleet.clock import RealClock
from tests.api.conftest import KEYS, Tokens, seed_site


async def test_missing_and_unknown_token_get_401_with_error_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/stations")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert "bearer" in r.json()["error"]["message"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = await client.get("/api/v1/stations", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "unknown or revoked API token"


async def test_viewer_reads_but_cannot_act(client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    await seed_site(redis)
    assert (await client.get("/api/v1/sites", headers=tokens.viewer)).status_code == 200
    r = await client.put("/api/v1/sites/depot/limit", json={"limit_kw": 10}, headers=tokens.viewer)
    assert r.status_code == 403
    body = r.json()["error"]
    assert body["code"] == "forbidden"
    assert body["details"] == {"role": "viewer", "required": "operator"}
    assert await redis.hget(KEYS.site("depot"), "limit_kw") == "50.0"


async def test_operator_reads_and_acts(client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    await seed_site(redis)
    r = await client.put("/api/v1/sites/depot/limit", json={"limit_kw": 10}, headers=tokens.operator)
    assert r.status_code == 200
    assert r.json()["limit_kw"] == 10.0
    who = await client.get("/api/v1/whoami", headers=tokens.operator)
    assert who.json() == {"name": "bob", "role": "operator", "auth": True}


async def test_tokens_are_stored_hashed_and_revocable(client: httpx.AsyncClient, redis: Redis) -> None:
    store = TokenStore(redis, KEYS, RealClock())
    secret, info = await store.create("ci", "viewer")
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert info.token_hash == digest
    assert await redis.sismember(KEYS.api_tokens(), digest)
    stored = await redis.hgetall(KEYS.api_token(digest))
    assert stored["role"] == "viewer" and stored["name"] == "ci"
    assert secret not in str(stored)  # the secret itself is nowhere in Redis
    for key in await redis.keys("evfleet:*"):
        if await redis.type(key) == "hash":
            assert secret not in str(await redis.hgetall(key))
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/api/v1/whoami", headers=headers)).status_code == 200
    await store.revoke("ci")
    assert (await client.get("/api/v1/whoami", headers=headers)).status_code == 401


async def test_auth_disabled_admits_everyone_as_operator(redis: Redis) -> None:
    deps = build_deps(redis, KEYS, RealClock(), auth=False)
    transport = httpx.ASGITransport(app=create_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        r = await c.get("/api/v1/whoami")
        assert r.status_code == 200 and r.json()["role"] == "operator" and r.json()["auth"] is False
        r = await c.put("/api/v1/sites/yard/limit", json={"limit_kw": 5})
        assert r.status_code == 200


async def test_metrics_docs_and_dashboard_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/")).status_code == 200


def _api_routes() -> list[tuple[str, str, bool]]:
    """(method, path with sample ids, operator-only) for every /api/v1 route of the app."""
    from fastapi.routing import APIRoute

    from csms.api.actions import actions
    from csms.api.admin import admin
    from csms.api.history import history
    from csms.api.routes import act, read

    out = []
    for router, operator in ((read, False), (history, False), (act, True), (actions, True), (admin, True)):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            path = (route.path.replace("{station_id}", "CS1").replace("{transaction_id}", "TX1")
                    .replace("{site_id}", "depot").replace("{id_token}", "TAG1"))
            for method in route.methods:
                out.append((method, path, operator))
    return out


async def test_every_route_needs_a_token_and_actions_need_an_operator(
        client: httpx.AsyncClient, tokens: Tokens, redis: Redis) -> None:
    routes = _api_routes()
    assert len(routes) >= 25
    for method, path, operator in routes:
        r = await client.request(method, path)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["error"]["code"] == "unauthorized"
        if operator:
            r = await client.request(method, path, headers=tokens.viewer, json={})
            assert r.status_code == 403, (method, path, r.status_code)
            assert r.json()["error"]["details"]["required"] == "operator"
    assert await redis.xlen(KEYS.events()) == 0  # nothing was written by refused requests
