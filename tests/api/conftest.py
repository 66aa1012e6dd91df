"""Fixtures for the operator API tests: real Redis, the ASGI app, tokens, seeded state and a
command-protocol node that answers calls from Redis (the station side of docs/redis-schema.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from csms.api.app import build_deps, create_app
from csms.api.deps import ApiDeps
from csms.api.tokens import TokenStore
from evfleet.clock import RealClock
from evfleet.events import Event, EventType
from evfleet.keys import Keys, tx_ref

KEYS = Keys("evfleet")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """Async client on the private, flushed Redis (decoded responses, like the csms)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def deps(redis: Redis) -> ApiDeps:
    """API dependencies with auth on and a short call timeout."""
    return build_deps(redis, KEYS, RealClock(), auth=True, default_limit_kw=100.0, call_timeout_s=2.0,
                      tick_s=0.2)


@pytest.fixture
async def client(deps: ApiDeps) -> AsyncIterator[httpx.AsyncClient]:
    """httpx client on the app through ASGITransport."""
    app = create_app(deps)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        yield c
    await deps.hub.stop()


@dataclass
class Tokens:
    """Bearer headers of a viewer and an operator."""

    viewer: dict[str, str]
    operator: dict[str, str]


@pytest.fixture
async def tokens(redis: Redis) -> Tokens:
    """A viewer and an operator token stored in Redis."""
    store = TokenStore(redis, KEYS, RealClock())
    viewer, _ = await store.create("alice", "viewer")
    operator, _ = await store.create("bob", "operator")
    return Tokens({"Authorization": f"Bearer {viewer}"}, {"Authorization": f"Bearer {operator}"})


def iso(dt: datetime) -> str:
    """ISO string."""
    return dt.isoformat()


async def seed_station(redis: Redis, sid: str, *, site: str = "depot", online: bool = True,
                       node: str = "node-a", connectors: dict[str, str] | None = None,
                       evses: dict[int, dict[str, str]] | None = None, firmware: str = "1.2.3") -> None:
    """Write a station's documented keys as the csms would."""
    now = datetime.now(UTC)
    await redis.sadd(KEYS.stations(), sid)
    await redis.hset(KEYS.station(sid), mapping={
        "site_id": site, "vendor": "ACME", "model": "AC22", "serial_number": f"SN-{sid}",
        "firmware_version": firmware, "last_seen": iso(now), "online": "1" if online else "0",
        "node": node, "connected_at": iso(now), "last_boot": iso(now), "boot_reason": "PowerUp",
        "heartbeat_interval_s": "300"})
    await redis.sadd(KEYS.site_stations(site), sid)
    if online and node != "dead-node":
        await redis.set(KEYS.node(node), json.dumps({"node_id": node}), ex=60)
    for field_, status in (connectors or {"1/1": "Available"}).items():
        await redis.hset(KEYS.station_connectors(sid), field_,
                         json.dumps({"status": status, "updated_at": iso(now)}))
    for eid, mapping in (evses or {1: {}}).items():
        await redis.hset(KEYS.station_evse(sid, eid), mapping={
            "transaction_id": "", "max_power_w": "22000", "phases": "3", "voltage_v": "230",
            "rate_unit": "A", "steerable": "1", **mapping})


async def seed_session(redis: Redis, txid: str, sid: str, eid: int = 1, *, power_w: float = 11000,
                       energy_wh: float = 5000, live: bool = True, needs_wh: float = 20000,
                       started: datetime | None = None) -> None:
    """Write a transaction (station `sid`'s id `txid`), its needs, plan and profile as the
    csms/optimizer would."""
    start = started or datetime.now(UTC) - timedelta(minutes=30)
    ref = tx_ref(sid, txid)
    await redis.hset(KEYS.transaction(ref), mapping={
        "transaction_id": txid, "tx_ref": ref, "generation": "1",
        "station_id": sid, "evse_id": str(eid), "connector_id": "1", "id_token": "TAG1",
        "state": "Updated" if live else "Ended", "charging_state": "Charging" if live else "Idle",
        "started_at": iso(start), "updated_at": iso(datetime.now(UTC)),
        "ended_at": "" if live else iso(datetime.now(UTC)), "stopped_reason": "" if live else "Local",
        "energy_wh": str(energy_wh), "power_w": str(power_w), "current_a": "16", "soc": "42",
        "last_seq_no": "3", "offline_events": "0"})
    await redis.zadd(KEYS.transactions_by_start(), {ref: start.timestamp()})
    await redis.rpush(KEYS.transaction_events(ref), json.dumps({"eventType": "Started", "seqNo": 0}))
    for i in range(3):
        await redis.rpush(KEYS.transaction_meter(ref), json.dumps({
            "ts": iso(start + timedelta(minutes=i)), "energy_wh": 1000 * i, "power_w": power_w,
            "current_a": 16, "soc": 40 + i}))
    if live:
        await redis.sadd(KEYS.transactions_active(), ref)
        await redis.sadd(KEYS.station_active(sid), ref)
        await redis.hset(KEYS.station_evse(sid, eid), mapping={"transaction_id": txid, "tx_ref": ref})
        departure = datetime.now(UTC) + timedelta(hours=4)
        await redis.set(KEYS.charging_needs(sid, eid), json.dumps({
            "transaction_id": txid, "tx_ref": ref, "received_at": iso(start),
            "departure_time": iso(departure),
            "energy_amount_wh": needs_wh, "ev_max_current_a": 32, "max_schedule_tuples": 24}))
        await redis.set(KEYS.planned_schedule(sid, eid), json.dumps({
            "plan_id": "p1", "site_id": "depot", "tx_ref": ref, "start": iso(start), "step_s": 900,
            "limits_kw": [11.0, 7.0, 7.0, 3.5], "strategy": "cost", "status": "optimal",
            "computed_at": iso(start)}))
        await redis.set(KEYS.applied_profile(sid, eid), json.dumps({
            "plan_id": "p1", "transaction_id": txid, "tx_ref": ref, "profile": {"id": 1},
            "status": "Accepted", "sent_at": iso(start),
            "answered_at": iso(start), "limit_w": 11000, "held": "1.0,1.5,0:11000"}))


async def seed_site(redis: Redis, site: str = "depot", limit_kw: float = 50.0, *,
                    plan_kw: list[float] | None = None) -> None:
    """A site hash and an optimizer plan starting now."""
    now = datetime.now(UTC)
    await redis.sadd(KEYS.sites(), site)
    await redis.hset(KEYS.site(site), mapping={"name": site.title(), "limit_kw": str(limit_kw),
                                               "updated_at": iso(now)})
    await redis.set(KEYS.site_plan(site), json.dumps({
        "plan_id": "p1", "start": iso(now - timedelta(seconds=10)), "step_s": 900,
        "planned_kw": plan_kw or [20.0, 18.0, 10.0], "limit_kw": limit_kw, "strategy": "cost",
        "status": "optimal", "objective": 12.5, "computed_at": iso(now), "solve_s": 0.42,
        "evses": {"CS1/1": [11.0, 7.0, 7.0]}}))


async def add_event(redis: Redis, type_: EventType, sid: str = "", txid: str = "", **data: Any) -> None:
    """Append an event to the stream."""
    ev = Event(type=type_, station_id=sid, transaction_id=txid, tx_ref=tx_ref(sid, txid) if txid else "",
               ts=datetime.now(UTC), data=data)
    await redis.xadd(KEYS.events(), ev.to_fields())


@dataclass
class FakeNode:
    """The node side of the command protocol over real Redis: BRPOPs requests and replies."""

    redis: Redis
    node: str = "node-a"
    answer: Callable[[dict[str, Any]], dict[str, Any]] = field(
        default=lambda req: {"outcome": "result", "payload": {"status": "Accepted"}, "error": None})
    requests: list[dict[str, Any]] = field(default_factory=list)
    running: bool = True

    async def serve(self) -> None:
        """Answer requests until `running` is cleared."""
        while self.running:
            item = await self.redis.brpop([KEYS.node_commands(self.node)], timeout=0.1)
            if item is None:
                continue
            req = json.loads(item[1])
            self.requests.append(req)
            reply = {"request_id": req["request_id"], "station_id": req["station_id"],
                     "action": req["action"], "answered_at": iso(datetime.now(UTC)), **self.answer(req)}
            await self.redis.lpush(req["reply_to"], json.dumps(reply))
            await self.redis.expire(req["reply_to"], 60)


@pytest.fixture
async def node(redis_url: str) -> AsyncIterator[FakeNode]:
    """A node answering calls (own Redis connection, since BRPOP blocks it)."""
    conn = Redis.from_url(redis_url, decode_responses=True)
    fake = FakeNode(conn)
    task = asyncio.create_task(fake.serve())
    yield fake
    fake.running = False  # cancelling a blocked BRPOP can hang the client; let it time out
    await asyncio.wait_for(task, 5)
    await conn.aclose()
