"""One default site limit: the csms's `default_site_limit_kw` governs the csms budget, the optimizer's
plan and the API for a site without a limit of its own (real Redis, a real csms node start-up)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis

from csms.api.app import build_deps, create_app
from csms.api.tokens import TokenStore
from csms.app import running_csms
from csms.settings import CsmsSettings
from csms.store.port_redis import RedisStateStore
from csms.store.provisioning import publish_site_defaults
from evfleet.clock import RealClock
from evfleet.events import Event, EventType
from evfleet.keys import Keys
from evfleet.store.sites import budget_kw, limit_in_force, margin_kw
from optimizer.worker import OptimizerWorker, WorkerConfig

K = Keys("evfleet")


async def _seed_depot(redis: Redis, n: int = 3) -> None:
    """A site with no limit of its own; n EVs wanting more than 40 kW for two hours (66 kW unlimited)."""
    now = datetime.now(UTC)
    await redis.sadd(K.sites(), "depot", "yard")
    await redis.hset(K.site("depot"), mapping={"name": "depot"})
    await redis.hset(K.site("yard"), mapping={"name": "yard", "limit_kw": "20.0"})
    for i in range(1, n + 1):
        sid, tx = f"CP-{i}", f"CP-{i}:1"
        await redis.sadd(K.stations(), sid)
        await redis.sadd(K.site_stations("depot"), sid)
        await redis.hset(K.station(sid), mapping={"site_id": "depot", "online": "1"})
        await redis.hset(K.station_evse(sid, 1), mapping={"max_power_w": "22080", "transaction_id": "1",
                                                          "tx_ref": tx})
        await redis.sadd(K.transactions_active(), tx)
        await redis.sadd(K.station_active(sid), tx)
        await redis.hset(K.transaction(tx), mapping={
            "station_id": sid, "transaction_id": "1", "tx_ref": tx, "evse_id": "1", "state": "Started",
            "id_token": f"T{i}", "started_at": now.isoformat(), "energy_wh": "0"})
        await redis.set(K.charging_needs(sid, 1), json.dumps({
            "transaction_id": "1", "tx_ref": tx, "departure_time": (now + timedelta(hours=2)).isoformat(),
            "energy_amount_wh": 60_000, "ev_max_current_a": 32}))


def test_limit_in_force_prefers_own_then_published_then_fallback() -> None:
    assert limit_in_force("50", "40", 100.0) == (50.0, True, 40.0)
    assert limit_in_force(None, "40", 100.0) == (40.0, False, 40.0)
    assert limit_in_force("", None, 100.0) == (100.0, False, 100.0)
    assert limit_in_force("nan", "-3", 100.0) == (100.0, False, 100.0)  # never a bad stored value
    assert limit_in_force("0", "40", 100.0) == (0.0, True, 40.0)  # a limit of 0 holds every EVSE


async def test_csms_default_governs_budget_plan_and_api(redis_url: str, redis: Redis) -> None:
    await _seed_depot(redis)
    settings = CsmsSettings(redis_url=redis_url, host="127.0.0.1", port=0, node_id="node-40",
                            api_enabled=False, default_site_limit_kw=40.0)
    async with running_csms(settings, services=()):
        pass  # start-up publishes the default
    assert await redis.hget(K.site_defaults(), "site_limit_kw") == "40.0"
    # the sites held to the default are re-planned at once: one site.limit event, none for `yard`
    events = [Event.from_fields(f) for _, f in await redis.xrange(K.events())]
    limits = [(e.site_id, e.data) for e in events if e.type is EventType.SITE_LIMIT]
    assert ("depot", {"limit_kw": 40.0, "source": "default"}) in limits
    assert "yard" not in {site for site, _ in limits}

    # the csms budget (smart-charging store port)
    assert await RedisStateStore(redis, K).site_limit_kw("depot") == "40.0"
    assert await RedisStateStore(redis, K).site_limit_kw("yard") == "20.0"

    # the optimizer, left at its own fallback of 100 kW, plans the depot within 40 kW
    worker = OptimizerWorker(redis, K, WorkerConfig(debounce_s=0.1, max_delay_s=0.5, block_ms=50),
                             clock=RealClock())
    assert worker.cfg.default_limit_kw == 100.0
    plan = await worker.solve_site("depot")
    assert plan is not None
    site_plan = json.loads(await redis.get(K.site_plan("depot")))
    assert site_plan["limit_kw"] == 40.0
    assert 39.0 <= max(site_plan["planned_kw"]) <= 40.0 + 1e-6  # the limit binds: 66 kW were wanted
    per_step = [sum(col) for col in zip(*site_plan["evses"].values(), strict=True)]
    assert max(per_step) <= 40.0 + 1e-6

    # the API (its own fallback 100 kW) states the default in force
    deps = build_deps(redis, K, RealClock(), auth=True, default_limit_kw=100.0, call_timeout_s=2.0)
    token, _ = await TokenStore(redis, K, RealClock()).create("alice", "viewer")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(deps)),
                                 base_url="http://api") as client:
        r = await client.get("/api/v1/sites/depot", headers={"Authorization": f"Bearer {token}"})
    await deps.hub.stop()
    assert r.status_code == 200, r.text
    site = r.json()
    assert site["limit_note"] == "no limit set (planned with default 40 kW)"
    assert site["limit_kw"] == site["default_limit_kw"] == 40.0 and site["limit_set"] is False


async def test_republishing_emits_only_on_change(redis: Redis) -> None:
    await _seed_depot(redis, n=1)
    assert await publish_site_defaults(redis, K, 100.0, "a") == (None, [])  # what readers assumed
    assert await publish_site_defaults(redis, K, 100.0, "b") == (100.0, [])
    assert await redis.xlen(K.events()) == 0
    before, sites = await publish_site_defaults(redis, K, 30.0, "c")
    assert (before, sites) == (100.0, ["depot"])  # `yard` has its own limit
    assert await redis.hget(K.site_defaults(), "node") == "c"
    with pytest.raises(ValueError, match="> 0"):
        await publish_site_defaults(redis, K, float("nan"), "d")
    assert await redis.hget(K.site_defaults(), "site_limit_kw") == "30.0"


def test_the_margin_comes_off_the_limit_in_force() -> None:
    assert budget_kw(40.0, margin_kw("11.0")) == 29.0
    assert budget_kw(40.0, margin_kw(None)) == budget_kw(40.0, margin_kw("nan")) == 40.0  # never garbage
    assert budget_kw(5.0, margin_kw("11")) == 0.0  # never negative


async def test_a_site_margin_is_planned_by_no_one_and_rebudgets_every_site(redis: Redis) -> None:
    await _seed_depot(redis)
    await redis.hset(K.site("depot"), "limit_kw", "40.0")
    assert await publish_site_defaults(redis, K, 100.0, "a") == (None, [])
    before, sites = await publish_site_defaults(redis, K, 100.0, "a", margin_kw=11.0)
    assert (before, sites) == (100.0, ["depot", "yard"])  # a new margin changes every site's budget
    events = [Event.from_fields(f) for _, f in await redis.xrange(K.events())]
    assert {(e.site_id, e.data["source"], e.data["margin_kw"]) for e in events} == {
        ("depot", "margin", 11.0), ("yard", "margin", 11.0)}
    assert await publish_site_defaults(redis, K, 100.0, "b", margin_kw=11.0) == (100.0, [])
    with pytest.raises(ValueError, match=">= 0"):
        await publish_site_defaults(redis, K, 100.0, "c", margin_kw=-1.0)
    assert await redis.hget(K.site_defaults(), "site_margin_kw") == "11.0"
    worker = OptimizerWorker(redis, K, WorkerConfig(debounce_s=0.1, max_delay_s=0.5, block_ms=50),
                             clock=RealClock())
    assert await worker.solve_site("depot") is not None
    site_plan = json.loads(await redis.get(K.site_plan("depot")))
    assert site_plan["limit_kw"] == 29.0  # 40 kW - 11 kW: the margin is not planned
    assert max(sum(col) for col in zip(*site_plan["evses"].values(), strict=True)) <= 29.0 + 1e-6
