"""End to end: csms + optimizer worker + OCPP 2.0.1 stations over a real Redis (issue 4 / issue 7 K15-K17)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from evfleet.txprofile import profile_series_w, value_at
from tests.loop.harness import closed_loop, later


async def _schedule(lp: object, sid: str, txid: str) -> dict[str, object]:
    from tests.loop.harness import Loop

    assert isinstance(lp, Loop)
    raw = await lp.redis.get(lp.keys.planned_schedule(sid, 1))
    doc = json.loads(raw) if raw else {}
    return doc if doc.get("tx_ref") == f"{sid}:{txid}" else {}


async def test_plug_in_with_needs_gets_scheduled_profile_within_site_limit(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0) as lp:
        cp1 = await lp.add_station("CP-1")
        cp2 = await lp.add_station("CP-2")
        await cp1.start_tx("tx-1")
        lp.active["CP-1"] = True
        assert await cp1.needs(later(6), 30_000, max_tuples=5) == "Processing"
        await lp.wait_for(lambda: cp1.profiles, what="a profile at CP-1")

        async def applied_plan() -> tuple[dict[str, object], dict[str, object]] | None:
            # the station's last profile is the plan profile of the current schedule
            held = cp1.profiles[-1]
            sched = await _schedule(lp, "CP-1", "tx-1")
            rec = json.loads(await lp.redis.get(lp.keys.applied_profile("CP-1", 1)) or "{}")
            ok = (sched and rec.get("kind") == "plan" and rec.get("plan_id") == sched.get("plan_id")
                  and rec.get("profile") == held)
            return (sched, held) if ok else None

        # the pair seen together: a later plan (the needs re-plan, after one made at the start) may
        # replace both right after, so the station's list is not read again
        schedule, held = await lp.wait_for(applied_plan, what="the plan profile of the schedule at CP-1")
        # the station's TxProfile follows the optimizer's schedule: never above it, at most 5 periods
        prof = held["chargingProfile"]
        assert prof["chargingProfilePurpose"] == "TxProfile" and prof["chargingProfileKind"] == "Absolute"
        sched = prof["chargingSchedule"][0]
        assert sched["startSchedule"] and sched["chargingRateUnit"] == "A"
        assert 1 <= len(sched["chargingSchedulePeriod"]) <= 5
        assert all(p["limit"] <= 16 for p in sched["chargingSchedulePeriod"])  # EV max current
        start, periods = profile_series_w(held)
        plan_start = datetime.fromisoformat(str(schedule["start"]))
        limits_kw = schedule["limits_kw"]
        assert isinstance(limits_kw, list)
        offset = (plan_start - start).total_seconds()
        for i, kw in enumerate(limits_kw):
            assert value_at(periods, offset + i * 900 + 1) <= kw * 1000 + 1e-6
        assert value_at(periods, offset + 1) >= min(limits_kw[0] * 1000, 11_040) - 70 * 3 * 2 - 1
        # a second EV: both re-planned, sum of applied limits stays within 20 kW throughout
        await cp2.start_tx("tx-2", token="TOKEN-2")
        lp.active["CP-2"] = True
        await cp2.needs(later(3), 20_000, max_tuples=5)
        await lp.wait_for(lambda: cp2.profiles, what="a profile at CP-2")
        await lp.wait_for(lambda: _schedule(lp, "CP-2", "tx-2"))
        # the site limit drops: decreases confirmed before increases, never above the new limit
        await lp.set_limit(12.0)

        async def replanned() -> bool:
            plan = json.loads(await lp.redis.get(lp.keys.site_plan("depot")) or "{}")
            return bool(plan.get("limit_kw") == 12.0)

        await lp.wait_for(replanned, what="a plan for the 12 kW limit")
        await asyncio.sleep(1.0)
        now = datetime.now(UTC)
        assert cp1.limit_w_at(now) + cp2.limit_w_at(now) <= 12_000 + 1
        assert lp.samples > 20
        assert lp.violations == [], lp.violations[:5]
        assert lp.max_sum_w <= 20_000 + 1
        loop1 = await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1"))
        assert loop1["needs_received"] == "1" and int(loop1["schedules_sent"]) >= 1
        events = await lp.redis.xrange(lp.keys.events())
        types = [f["type"] for _, f in events]
        assert "schedule.planned" in types and "profile.sent" in types and "profile.answered" in types
        # plan profiles report the energy they allow next to the plan's (compression keeps it)
        sent = [json.loads(f["data"]) for _, f in events if f["type"] == "profile.sent"]
        reports = [d for d in sent if d.get("kind") == "plan" and "planned_kwh" in d]
        assert reports and all(d["allowed_kwh"] >= 0.95 * d["planned_kwh"] for d in reports), reports


async def test_two_csms_nodes_one_applies_the_site_plan_to_stations_on_both(redis_url: str) -> None:
    import websockets

    from csms.app import running_csms
    from csms.core.security import basic_auth_header
    from csms.settings import CsmsSettings
    from csms.store.provisioning import provision_station
    from tests.loop.harness import PASSWORD, LoopStation

    async with closed_loop(redis_url, limit_kw=20.0) as lp:
        cp1 = await lp.add_station("CP-1")  # held by node "loop-node"
        other = CsmsSettings(redis_url=redis_url, host="127.0.0.1", port=0, node_id="node-b",
                             api_enabled=False, interim_profile_after_s=1.0)
        async with running_csms(other, services=["csms.smart_charging.service:run"]) as node_b:
            await provision_station(lp.redis, lp.keys, "CP-2", PASSWORD, site_id="depot", iterations=1000)
            ws = await websockets.connect(
                node_b.station_url("CP-2"), subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                additional_headers={"Authorization": basic_auth_header("CP-2", PASSWORD)})
            cp2 = LoopStation("CP-2", ws)
            task = asyncio.create_task(cp2.start())
            try:
                await cp2.boot()
                await lp.redis.hset(lp.keys.station_evse("CP-2", 1), mapping={
                    "max_power_w": "11040", "phases": "3", "voltage_v": "230", "rate_unit": "A"})
                assert await lp.redis.hget(lp.keys.station("CP-2"), "node") == "node-b"
                for cp, tx in ((cp1, "tx-1"), (cp2, "tx-2")):
                    await cp.start_tx(tx, token=tx)
                    await cp.needs(later(4), 15_000)
                await lp.wait_for(lambda: cp1.profiles and cp2.profiles, what="profiles at both stations")
                holder = await lp.redis.get(lp.keys.smart_charging_lease("depot"))
                assert holder in ("loop-node", "node-b")
                sent = [f for _, f in await lp.redis.xrange(lp.keys.events()) if f["type"] == "profile.sent"]
                # one node acted: every TxProfile of the site was sent once per change, not twice
                plan_ids = [(json.loads(f["data"])["plan_id"], json.loads(f["data"])["kind"], f["station_id"])
                            for f in sent]
                assert len(plan_ids) == len(set(plan_ids))
                now = datetime.now(UTC)
                assert cp1.limit_w_at(now) + cp2.limit_w_at(now) <= 20_000 + 1
            finally:
                task.cancel()
                await ws.close()


async def test_k15_profile_carries_sales_tariff_from_site_prices(redis_url: str) -> None:
    now = datetime.now(UTC)
    hour0 = now.replace(minute=0, second=0, microsecond=0)
    # expensive for 2 hours, then cheap for 4, then mid
    prices = [0.40, 0.40, 0.10, 0.10, 0.10, 0.10] + [0.25] * 18
    async with closed_loop(redis_url, limit_kw=20.0) as lp:
        await lp.redis.set(lp.keys.site_prices("depot"), json.dumps(
            {"start": hour0.isoformat(), "step_minutes": 60, "import_price": prices}))
        cp = await lp.add_station("CP-1")
        await cp.start_tx("tx-1")
        lp.active["CP-1"] = True
        await cp.needs(later(7), 20_000, max_tuples=6)

        async def tariffed() -> bool:
            rec = json.loads(await lp.redis.get(lp.keys.applied_profile("CP-1", 1)) or "{}")
            return rec.get("kind") == "plan" and bool(cp.profiles) and \
                "salesTariff" in cp.profiles[-1]["chargingProfile"]["chargingSchedule"][0]

        await lp.wait_for(tariffed, what="a plan profile with a sales tariff")
        sched = cp.profiles[-1]["chargingProfile"]["chargingSchedule"][0]
        tariff = sched["salesTariff"]
        assert 1 <= len(tariff["salesTariffEntry"]) <= 6 and len(sched["chargingSchedulePeriod"]) <= 6
        levels = {e["relativeTimeInterval"]["start"]: e["ePriceLevel"] for e in tariff["salesTariffEntry"]}
        start = datetime.fromisoformat(sched["startSchedule"].replace("Z", "+00:00"))

        def level_at(t: datetime) -> int:
            offset = (t - start).total_seconds()
            return [lv for s, lv in sorted(levels.items()) if s <= offset][-1]

        assert level_at(hour0 + timedelta(hours=3)) < level_at(hour0 + timedelta(hours=1, minutes=30))
        # the optimizer charges in the cheap hours: nothing planned while the price is 0.40
        doc = json.loads(await lp.redis.get(lp.keys.planned_schedule("CP-1", 1)))
        plan_start = datetime.fromisoformat(doc["start"])
        for i, kw in enumerate(doc["limits_kw"]):
            t = plan_start + timedelta(seconds=i * doc["step_s"])
            if t < hour0 + timedelta(hours=2):
                assert kw == 0.0
