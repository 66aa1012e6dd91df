"""/metrics parses with the Prometheus parser and shows OCPP + operator series; the SSE feed
delivers a snapshot and aggregated deltas."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from csms.api.app import build_deps, create_app
from csms.api.deps import ApiDeps
from csms.api.live import Subscriber
from csms.store.embedded import free_port
from evfleet.clock import RealClock
from evfleet.events import EventType
from evfleet.store.client import connect_redis
from tests.api.conftest import KEYS, Tokens, add_event, seed_session, seed_site, seed_station
from tests.api.harness import live_csms
from tests.waiting import until


def _samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


async def test_metrics_show_operator_and_optimizer_series(client: httpx.AsyncClient, redis: Redis) -> None:
    await seed_site(redis, "depot", 50.0)
    await seed_station(redis, "CS1")
    await seed_session(redis, "TX1", "CS1", power_w=11000)
    assert (await client.get("/healthz")).json() == {"ok": True}
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)
    assert samples["evfleet_active_sessions"][0].value == 1
    power = {s.labels["site"]: s.value for s in samples["evfleet_site_power_kw"]}
    assert power == {"default": 0.0, "depot": 11.0}
    assert {s.labels["site"]: s.value for s in samples["evfleet_site_limit_kw"]}["depot"] == 50.0
    assert samples["evfleet_optimizer_solve_seconds"][0].value == 0.42
    status = {s.labels["status"]: s.value for s in samples["evfleet_optimizer_status"]}
    assert status["optimal"] == 1.0 and status["fallback"] == 0.0
    assert samples["evfleet_site_planned_kw"][0].value == 20.0
    # the csms core's OCPP series are in the same registry (families exist before any traffic)
    families = {f.name: f.type for f in text_string_to_metric_families(r.text)}
    assert families["evfleet_connected_stations"] == "gauge"
    assert families["evfleet_ocpp_messages"] == "counter"
    assert families["evfleet_ocpp_handler_seconds"] == "histogram"
    assert any(s.labels["route"] == "/healthz" for s in samples["evfleet_api_requests_total"])


async def test_metrics_from_a_running_node_count_ocpp_messages(redis_url: str) -> None:
    async with live_csms(redis_url, ["CS-M"]) as live, httpx.AsyncClient(base_url=live.api_url) as http:
        text = (await http.get("/metrics")).text
    samples = _samples(text)
    assert any(s.value >= 1 for s in samples["evfleet_connected_stations"])
    boots = [s for s in samples["evfleet_ocpp_messages_total"] if s.labels["action"] == "BootNotification"]
    assert boots and boots[0].value >= 1
    handled = samples["evfleet_ocpp_handler_seconds_count"]
    assert any(s.labels["action"] == "BootNotification" for s in handled)


async def test_metrics_by_name_renders_those_series_and_refuses_what_is_no_metric_name(
    client: httpx.AsyncClient,
) -> None:
    wanted = ["evfleet_connected_stations", "evfleet_ocpp_messages_total"]  # sample names
    r = await client.get("/metrics", params={"name[]": wanted})
    assert r.status_code == 200
    assert {f.name for f in text_string_to_metric_families(r.text)} == {"evfleet_connected_stations",
                                                                        "evfleet_ocpp_messages"}
    for bad in ("", "a b", "1abc", "x" * 201):
        r = await client.get("/metrics", params={"name[]": bad})
        assert r.status_code == 422, bad
        assert r.json()["error"]["code"] == "validation_error"


async def test_live_hub_aggregates_changes_once_per_tick(deps: ApiDeps, redis: Redis) -> None:
    await seed_site(redis, "depot")
    await seed_station(redis, "CS1")
    await seed_station(redis, "CS2")
    await seed_session(redis, "TX1", "CS1")
    hub = deps.hub
    sub: Subscriber = hub.subscribe()
    try:
        await until(lambda: hub.last_id != "$" or hub._ticks > 0, 5)
        for _ in range(20):  # a burst of events for two stations
            await add_event(redis, EventType.METER_VALUES, "CS1", "TX1")
        await add_event(redis, EventType.CONNECTOR_STATUS, "CS2", status="Faulted")
        deltas: list[dict[str, Any]] = []

        async def got_all() -> bool:
            while not sub.queue.empty():
                deltas.append(sub.queue.get_nowait())
            return sum(d["event_count"] for d in deltas) >= 21

        await until(got_all, 5)
        stations = [s["station_id"] for d in deltas for s in d["stations"]]
        assert sorted(set(stations)) == ["CS1", "CS2"] and len(stations) <= 2 * len(deltas)
        assert stations.count("CS1") < 20  # 20 events -> loaded once per tick, not once per event
        sessions = [s for d in deltas for s in d["sessions"]]
        assert sessions and sessions[0]["transaction_id"] == "TX1" and "planned_schedule" not in sessions[0]
        feed = [e["type"] for d in deltas for e in d["events"]]
        assert feed == ["connector.status"]  # meter values stay out of the human feed
        assert any("sites" in d for d in deltas)
    finally:
        hub.unsubscribe(sub)
        await hub.stop()


async def test_slow_subscriber_drops_oldest_and_resyncs() -> None:
    sub = Subscriber(asyncio.Queue(maxsize=2))
    for i in range(4):
        sub.offer({"type": "delta", "n": i})
    first, second = sub.queue.get_nowait(), sub.queue.get_nowait()
    assert (first["n"], second["n"]) == (2, 3) and second["resync"] is True and sub.dropped == 2


async def test_sse_stream_over_tcp_sends_snapshot_then_deltas(redis_url: str) -> None:
    async with live_csms(redis_url, ["CS-L"]) as live, httpx.AsyncClient(base_url=live.api_url) as http:
        r = await http.get("/api/v1/live")
        assert r.status_code == 401
        url = f"/api/v1/live?access_token={live.viewer}"
        async with http.stream("GET", url, timeout=20) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            seen: list[tuple[str, dict[str, Any]]] = []
            event = ""
            live.stations[0].plug_in(1, live.ev())
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    seen.append((event, json.loads(line[6:])))
                    if any(e == "delta" and d["stations"] and d["stations"][0]["status"] == "Charging"
                           for e, d in seen):
                        break
        assert seen[0][0] == "snapshot" and {s["site_id"] for s in seen[0][1]["sites"]} >= {"depot"}
        assert any(e == "delta" and d["sessions"] for e, d in seen)


async def test_sse_needs_a_viewer_token(client: httpx.AsyncClient, tokens: Tokens) -> None:
    r = await client.get("/api/v1/live", params={"access_token": "bad"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_live_hub_does_not_lose_events_written_between_reads(deps: ApiDeps, redis: Redis) -> None:
    hub = deps.hub
    await hub._read(1)  # empty stream: nothing seen yet
    await add_event(redis, EventType.CONNECTOR_STATUS, "CS1", status="Faulted")  # while not blocked
    await hub._read(1)
    assert hub.events_seen == 1 and hub._pending.stations == {"CS1"}


async def test_malformed_stream_entries_are_skipped_not_fatal(deps: ApiDeps, redis: Redis) -> None:
    """One shared reader (live feed and MQTT bridge): a bad entry is passed over, the next one read."""
    from csms.api.reader import read_new_events

    key = deps.hub.reader.keys.events()
    last, events = await read_new_events(redis, key, "$", 1)
    assert events == []
    bad_id = await redis.xadd(key, {"type": "no.such.type", "ts": "2026-01-01T00:00:00+00:00"})
    await add_event(redis, EventType.CONNECTOR_STATUS, "CS9", status="Available")
    last, events = await read_new_events(redis, key, last, 1)
    assert [e.station_id for _id, e in events] == ["CS9"]
    assert last > (bad_id.decode() if isinstance(bad_id, bytes) else bad_id)


def test_grafana_dashboard_uses_only_exported_series() -> None:
    """Every metric a Grafana panel queries is one this process exports."""
    import re
    from pathlib import Path

    import csms.telemetry.bridge  # noqa: F401  (registers the MQTT series)
    from csms.api import metrics

    metrics.load_ocpp_metrics()
    doc = json.loads((Path(__file__).parents[2] / "deploy/grafana/evfleet-dashboard.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    names = {n for e in exprs for n in re.findall(r"evfleet_[a-z_]+", e)}
    exported = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        exported.add(family.name)
        exported.update(s.name for s in family.samples)
        exported.update({family.name + "_total", family.name + "_bucket"})
    assert names - exported == set()
    assert {"evfleet_site_power_kw", "evfleet_optimizer_solve_seconds", "evfleet_ocpp_handler_seconds_bucket",
            "evfleet_connected_stations", "evfleet_mqtt_dropped_total"} <= names


async def test_idle_live_hub_reads_no_events_and_a_new_subscriber_misses_none(
        deps: ApiDeps, redis: Redis) -> None:
    """No subscriber: the stream is not read (only its tail noted); one that subscribes then
    gets what was written after the last idle tick."""
    hub = deps.hub
    await add_event(redis, EventType.CONNECTOR_STATUS, "CS1", status="Faulted")
    await hub._idle(0)
    assert hub.events_seen == 0 and hub.last_id != "$"
    await add_event(redis, EventType.CONNECTOR_STATUS, "CS2", status="Available")
    hub.subscribe()
    await hub._read(1)
    assert hub.events_seen == 1 and hub._pending.stations == {"CS2"}


async def test_healthz_answers_while_every_pooled_connection_is_busy(redis_url: str) -> None:
    """/healthz PINGs Redis on a connection of its own: a node whose shared pool is exhausted (a
    burst of station handlers it works off) is still alive for HAProxy, which at 20,000 stations
    took both busy nodes out of service again and again when the check queued behind them."""
    shared = connect_redis(redis_url, max_connections=1, pool_timeout_s=0.3)
    busy = asyncio.create_task(shared.blpop(["nothing-comes"], timeout=2))  # holds the one connection
    try:
        await asyncio.sleep(0.2)
        with pytest.raises(RedisConnectionError):  # the pool is exhausted for everyone else
            await shared.ping()
        deps = build_deps(shared, KEYS, RealClock(), auth=True, call_timeout_s=2.0)
        app = create_app(deps)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            reply = await c.get("/healthz")
        assert reply.status_code == 200 and reply.json() == {"ok": True}
    finally:
        await busy
        await deps.hub.stop()
        await shared.aclose()


async def test_healthz_is_503_when_redis_does_not_answer() -> None:
    """No Redis behind the node: 503 with the API's error body (a clear answer, not an unhandled 500)."""
    down = connect_redis(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    deps = build_deps(down, KEYS, RealClock(), auth=True, call_timeout_s=2.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(deps)),
                                 base_url="http://api") as c:
        reply = await c.get("/healthz")
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "store_unavailable"
    await down.aclose()
