"""Benchmark: operator API, live feed and MQTT bridge over a 1,000-station fleet (not a test).

    .venv/bin/python benchmarks/api_scale.py --stations 1000 --repeat 10

Starts a private Redis, writes the documented keys of N stations (2 EVSEs each, ~60 % of
EVSEs charging, needs/profiles per session, one site with a plan), then measures in-process
(httpx ASGITransport, so HTTP parsing by uvicorn is not included):

- GET /api/v1/stations?limit=1000, /api/v1/sessions?limit=1000, /api/v1/sites, /metrics;
- one live-feed tick after every station changed (load N station docs + their sessions);
- one MQTT bridge flush with every station, session and site stale (documents -> outbox).

Prints median/max milliseconds and writes JSON (`--output`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


async def _timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


async def run(n_stations: int, repeat: int) -> dict[str, Any]:
    import httpx
    from redis.asyncio import Redis

    from csms.api.app import build_deps, create_app
    from csms.api.tokens import TokenStore
    from csms.store.embedded import EmbeddedRedis
    from csms.telemetry.bridge import MqttBridge
    from evfleet.clock import RealClock
    from evfleet.keys import Keys
    from tests.dashboard.fleet import seed_fleet

    server = EmbeddedRedis().start()
    redis = Redis.from_url(server.url, decode_responses=True)
    keys, clock = Keys("evfleet"), RealClock()
    try:
        tx_ids = await seed_fleet(redis, keys, n_stations, datetime.now(UTC))
        deps = build_deps(redis, keys, clock)
        token, _ = await TokenStore(redis, keys, clock).create("bench", "viewer")
        headers = {"Authorization": f"Bearer {token}"}
        results: dict[str, Any] = {"stations": n_stations, "live_sessions": len(tx_ids)}
        app = create_app(deps)
        app.state.site_metrics.min_interval_s = 0.0  # every GET /metrics reads Redis: what a scrape costs
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://bench") as http:
            for name, path in (("GET stations limit=1000", "/api/v1/stations?limit=1000"),
                               ("GET sessions limit=1000", "/api/v1/sessions?limit=1000"),
                               ("GET sites", "/api/v1/sites"), ("GET /metrics", "/metrics")):
                async def get(path: str = path) -> None:
                    r = await http.get(path, headers=headers)
                    r.raise_for_status()
                results[name] = await _timed(get, repeat)
        hub = deps.hub
        sub = hub.subscribe()

        async def tick() -> None:
            hub._pending.stations.update(f"CS-{i:04d}" for i in range(n_stations))
            hub._pending.sessions.update(tx_ids)
            await hub.flush()
            while not sub.queue.empty():
                sub.queue.get_nowait()
        results["live tick, all stations+sessions changed"] = await _timed(tick, repeat)
        await hub.stop()
        bridge = MqttBridge(deps.reader, deps.writer, "mqtt://127.0.0.1:1", max_messages=100_000)

        async def flush() -> None:
            bridge._stale.stations.update(f"CS-{i:04d}" for i in range(n_stations))
            bridge._stale.sessions.update(tx_ids)
            bridge._stale.all_sites = True
            await bridge.flush()
        results["mqtt flush, everything stale"] = await _timed(flush, repeat)
        results["mqtt messages per full flush"] = len(bridge.outbox)
        return results
    finally:
        await redis.aclose()
        server.stop()


def main() -> None:
    """CLI entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/api_scale.json")
    args = parser.parse_args()
    results = asyncio.run(run(args.stations, args.repeat))
    for key, value in results.items():
        print(f"{key:<45} {value}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
