"""Stations that count their transactions ("1", "2", ...) share ids: every session is still planned
and steered (real csms node, real optimizer worker, real OCPP stations over WebSocket, real Redis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tests.loop.harness import SITE, Loop, closed_loop, later


async def _record(lp: Loop, sid: str) -> dict[str, object]:
    raw = await lp.redis.get(lp.keys.applied_profile(sid, 1))
    return json.loads(raw) if raw else {}


async def test_same_transaction_id_on_two_stations_both_planned_and_steered(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0) as lp:
        cps = [await lp.add_station(f"CP-{i}") for i in (1, 2)]
        for i, cp in enumerate(cps, start=1):
            await cp.start_tx("1", token=f"T{i}")
            lp.active[cp.id] = True
            assert await cp.needs(later(4), 15_000 * i) == "Processing"

        async def both_planned() -> bool:
            recs = [await _record(lp, cp.id) for cp in cps]
            return all(r.get("kind") == "plan" and r.get("status") == "Accepted" for r in recs)

        await lp.wait_for(both_planned, what="plan profiles at both stations")
        plan = json.loads(await lp.redis.get(lp.keys.site_plan(SITE)))
        assert plan["transactions"] == {"CP-1/1": "CP-1:1", "CP-2/1": "CP-2:1"}
        for i, cp in enumerate(cps, start=1):
            rec = await _record(lp, cp.id)
            assert rec["tx_ref"] == f"CP-{i}:1" and rec["transaction_id"] == "1"
            # each station gets a TxProfile for its own transaction "1"
            assert cp.profiles[-1]["chargingProfile"]["transactionId"] == "1"
            sched = json.loads(await lp.redis.get(lp.keys.planned_schedule(cp.id, 1)))
            assert sched["tx_ref"] == f"CP-{i}:1" and sum(sched["limits_kw"]) > 0
            loop = await lp.redis.hgetall(lp.keys.session_loop(f"CP-{i}:1"))
            assert loop["needs_received"] == "1" and int(loop["schedules_sent"]) >= 1
        # the two needs differ (15 and 30 kWh): each session is planned on its own needs
        energy = [sum(json.loads(await lp.redis.get(lp.keys.planned_schedule(cp.id, 1)))["limits_kw"]) * 0.25
                  for cp in cps]
        assert energy[1] > energy[0] > 0
        assert sum(cp.limit_w_at(datetime.now(UTC)) for cp in cps) <= 20_000 + 1
        assert lp.violations == [], lp.violations[:3]
