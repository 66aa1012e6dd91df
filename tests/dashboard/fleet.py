"""Seed a large fleet's documented Redis state directly (no connections): for scale tests and
benchmarks of the API, live feed and dashboard."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

from evfleet.events import Event, EventType
from evfleet.keys import Keys, tx_ref

STATUSES = ("Available", "Occupied", "Faulted", "Unavailable")


async def seed_fleet(redis: Any, keys: Keys, n_stations: int, now: datetime, *, charging_share: float = 0.6,
                     sites: tuple[str, ...] = ("depot",), seed: int = 1) -> list[str]:
    """Write N stations (2 EVSEs each), live sessions on a share of them, sites and plans; return the
    sessions' tx refs. Like chargers that count, every station names its EVSE n transaction "n"."""
    rng = random.Random(seed)
    tx_ids: list[str] = []
    pipe = redis.pipeline(transaction=False)
    pipe.set(keys.node("bench-node"), json.dumps({"node_id": "bench-node"}), ex=3600)  # "alive" holder
    for site in sites:
        pipe.sadd(keys.sites(), site)
        limit_kw = n_stations * 11.0 / len(sites)
        pipe.hset(keys.site(site), mapping={"name": site.title(), "limit_kw": str(limit_kw),
                                            "updated_at": now.isoformat()})
        pipe.set(keys.site_plan(site), json.dumps({
            "plan_id": "bench", "start": now.isoformat(), "step_s": 900,
            "planned_kw": [rng.uniform(0.3, 0.9) * n_stations * 11.0 / len(sites) for _ in range(96)],
            "limit_kw": n_stations * 11.0 / len(sites), "strategy": "cost", "status": "optimal",
            "objective": 123.4, "computed_at": now.isoformat(), "solve_s": 0.4, "evses": {}}))
    for i in range(n_stations):
        sid = f"CS-{i:04d}"
        site = sites[i % len(sites)]
        online = rng.random() > 0.03
        pipe.sadd(keys.stations(), sid)
        pipe.sadd(keys.site_stations(site), sid)
        pipe.hset(keys.station(sid), mapping={
            "site_id": site, "vendor": "ACME", "model": "AC22", "serial_number": f"SN{i}",
            "firmware_version": "1.4.2", "online": "1" if online else "0", "node": "bench-node",
            "last_seen": now.isoformat(), "connected_at": now.isoformat(), "last_boot": now.isoformat()})
        for eid in (1, 2):
            charging = online and rng.random() < charging_share
            status = "Occupied" if charging else rng.choice(STATUSES[:1] * 8 + STATUSES[2:])
            pipe.hset(keys.station_connectors(sid), f"{eid}/1",
                      json.dumps({"status": status, "updated_at": now.isoformat()}))
            txid = str(eid) if charging else ""
            tx = tx_ref(sid, txid) if charging else ""
            pipe.hset(keys.station_evse(sid, eid), mapping={
                "transaction_id": txid, "tx_ref": tx, "max_power_w": "22000", "phases": "3", "rate_unit": "A",
                "applied_limit_w": "11000", "steerable": "1"})
            if not charging:
                continue
            tx_ids.append(tx)
            start = now - timedelta(minutes=rng.randint(1, 240))
            energy_wh = rng.uniform(1000, 40000)
            pipe.hset(keys.transaction(tx), mapping={
                "station_id": sid, "transaction_id": txid, "tx_ref": tx, "generation": "1",
                "evse_id": str(eid), "connector_id": "1", "id_token": f"TAG{i}",
                "state": "Updated", "charging_state": "Charging", "started_at": start.isoformat(),
                "updated_at": now.isoformat(), "energy_wh": f"{energy_wh:.0f}",
                "power_w": f"{rng.uniform(3000, 11000):.0f}", "current_a": "16",
                "soc": f"{rng.uniform(10, 90):.0f}"})
            pipe.sadd(keys.transactions_active(), tx)
            pipe.sadd(keys.station_active(sid), tx)
            pipe.zadd(keys.transactions_by_start(), {tx: start.timestamp()})
            pipe.set(keys.charging_needs(sid, eid), json.dumps({
                "transaction_id": txid, "tx_ref": tx,
                "departure_time": (now + timedelta(hours=rng.uniform(1, 10))).isoformat(),
                "energy_amount_wh": energy_wh + rng.uniform(5000, 50000)}))
            pipe.set(keys.applied_profile(sid, eid), json.dumps({
                "transaction_id": txid, "tx_ref": tx, "status": "Accepted", "limit_w": 11000,
                "sent_at": now.isoformat()}))
    await pipe.execute()
    return tx_ids


async def status_burst(redis: Any, keys: Keys, station_ids: list[str], status: str, now: datetime) -> None:
    """Set connector 2/1 of every station to `status` and append one event per station."""
    pipe = redis.pipeline(transaction=False)
    for sid in station_ids:
        pipe.hset(keys.station_connectors(sid), "2/1",
                  json.dumps({"status": status, "updated_at": now.isoformat()}))
        pipe.xadd(keys.events(), Event(type=EventType.CONNECTOR_STATUS, station_id=sid, evse_id=2, ts=now,
                                       data={"status": status, "connector_id": 1}).to_fields())
    await pipe.execute()
