"""Fail-safe interim profiles (K15), K16 churn control, K17 checks, unsteerable chargers (real csms)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from tests.loop.harness import Loop, closed_loop, later


async def _record(lp: Loop, sid: str) -> dict[str, object]:
    raw = await lp.redis.get(lp.keys.applied_profile(sid, 1))
    return json.loads(raw) if raw else {}


async def test_interim_profiles_when_optimizer_is_down_then_plan_follows(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0, worker=False, interim_profile_after_s=0.3) as lp:
        cps = [await lp.add_station(f"CP-{i}") for i in range(1, 4)]
        for i, cp in enumerate(cps, start=1):
            await cp.start_tx(f"tx-{i}", token=f"T{i}")
            lp.active[cp.id] = True
        for cp in cps:
            await lp.wait_for(lambda cp=cp: cp.profiles, what=f"interim profile at {cp.id}")
        now = datetime.now(UTC)
        limits = [cp.limit_w_at(now) for cp in cps]
        assert sum(limits) <= 20_000 + 1, limits  # new sessions charge within the site limit
        assert all(lim > 0 for lim in limits)
        for i in range(1, 4):
            await lp.wait_for(lambda i=i: _kind_is(lp, f"CP-{i}", "interim"), what="interim recorded")
            rec = await _record(lp, f"CP-{i}")
            assert rec["kind"] == "interim" and rec["status"] == "Accepted"
            loop_hash = await lp.redis.hgetall(lp.keys.session_loop(f"CP-{i}:tx-{i}"))
            assert loop_hash["interim_sent"] == "1"
        # the optimizer comes back: the real TxProfiles follow the interim ones
        lp.start_worker()
        for i in range(1, 4):
            await lp.wait_for(lambda i=i: _kind_is(lp, f"CP-{i}", "plan"), what=f"plan profile CP-{i}")
        assert lp.violations == [], lp.violations[:3]


async def _kind_is(lp: Loop, sid: str, kind: str) -> bool:
    return (await _record(lp, sid)).get("kind") == kind


async def test_fallback_limit_caps_interim_profile(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=50.0, worker=False, interim_profile_after_s=0.2,
                           fallback_limit_kw=4.0) as lp:
        cp = await lp.add_station("CP-1")
        await cp.start_tx("tx-1")
        lp.active["CP-1"] = True
        await lp.wait_for(lambda: cp.profiles)
        assert cp.limit_w_at(datetime.now(UTC)) <= 4_000
        first = cp.profiles[-1]["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]
        assert first["limit"] == 5.7  # 4 kW / (3 * 230 V), rounded down


async def test_k16_small_replan_is_not_sent_material_one_is(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0, replan_threshold_kw=0.5) as lp:
        cp = await lp.add_station("CP-1")
        await cp.start_tx("tx-1")
        lp.active["CP-1"] = True
        await cp.needs(later(2), 15_000)
        await lp.wait_for(lambda: _kind_is(lp, "CP-1", "plan"), what="plan profile")
        await asyncio.sleep(0.5)
        sent_before = len(cp.profiles)
        # a re-plan that changes nothing material (same inputs): no new profile, skip counted
        await lp.set_limit(20.0)

        async def skipped() -> bool:
            h = await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1"))
            return int(h.get("replans_skipped", 0)) >= 1

        await lp.wait_for(skipped, what="a skipped re-plan")
        await asyncio.sleep(0.3)
        assert len(cp.profiles) == sent_before
        # the limit drops below what the EV was planned: a material change is sent (renegotiation)
        await lp.set_limit(5.0)
        await lp.wait_for(lambda: len(cp.profiles) > sent_before, what="re-sent profile")
        assert cp.limit_w_at(datetime.now(UTC)) <= 5_000

        async def renegotiated() -> bool:  # recorded once the csms has the station's answer
            h = await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1"))
            return int(h.get("renegotiations", 0)) >= 1

        await lp.wait_for(renegotiated, what="renegotiation counted")


def _k17_count() -> float:
    return REGISTRY.get_sample_value("evfleet_k17_schedule_violations_total") or 0.0


async def test_k17_breach_is_counted_and_profile_resent(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0) as lp:
        cp = await lp.add_station("CP-1")
        await cp.start_tx("tx-1")
        lp.active["CP-1"] = True
        await cp.needs(later(8), 10_000, max_current_a=16)
        await lp.wait_for(lambda: _kind_is(lp, "CP-1", "plan"), what="plan profile")
        await asyncio.sleep(0.3)
        ours = cp.profiles[-1]
        n_before, k17_before = len(cp.profiles), _k17_count()
        # an EV plan that follows our profile (here: 0 A everywhere) is within limits
        now = datetime.now(UTC)
        await cp.ev_schedule([(0, 0.0)], now)

        async def checked(expect: bool) -> bool:
            raw = await lp.redis.get(lp.keys.ev_schedule("CP-1", 1))
            return bool(raw) and json.loads(raw).get("within_limits") is expect

        await lp.wait_for(lambda: checked(True), what="within_limits true")
        assert len(cp.profiles) == n_before
        # an EV plan at 32 A for 10 hours breaks our limits: logged, counted, our profile re-sent
        await cp.ev_schedule([(0, 32.0)], now)
        await lp.wait_for(lambda: checked(False), what="within_limits false")
        await lp.wait_for(lambda: len(cp.profiles) > n_before, what="re-sent profile")
        assert cp.profiles[-1] == ours
        assert _k17_count() == k17_before + 1
        h = await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1"))
        assert h["k17_violations"] == "1" and h["k17_resent"] == "1" and h["ev_plan_within_limits"] == "0"
        assert h["ev_plans_received"] == "2"
        # the EV ignores the re-sent profile and reports the same breach: counted, not re-sent again
        n_after = len(cp.profiles)
        await cp.ev_schedule([(0, 32.0)], datetime.now(UTC))  # its plan after the renegotiation

        async def counted_twice() -> bool:
            h = await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1"))
            return h.get("k17_violations") == "2"

        await lp.wait_for(counted_twice, what="second breach counted")
        await asyncio.sleep(0.3)
        assert len(cp.profiles) == n_after
        assert (await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1")))["k17_resent"] == "1"
        # the operator API shows what the loop did for the session
        import httpx

        from csms.api.app import build_deps, create_app
        from evfleet.clock import RealClock

        deps = build_deps(lp.redis, lp.keys, RealClock(), auth=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(deps)),
                                     base_url="http://api") as api:
            resp = await api.get("/api/v1/sessions/CP-1/tx-1", params={"samples": 0})
        await deps.hub.stop()
        assert resp.status_code == 200, resp.text
        loop = resp.json()["loop"]
        assert loop["needs_received"] == 1 and loop["schedules_sent"] >= 2 and loop["ev_plans_received"] == 3
        assert loop["k17_violations"] == 2 and loop["k17_resent"] == 1
        assert loop["ev_plan_within_limits"] is False
        assert resp.json()["ev_schedule"]["within_limits"] is False


async def test_not_implemented_marks_evse_unsteerable_and_budgets_it_at_max(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0) as lp:
        dumb = await lp.add_station("CP-1")
        dumb.refuse_with = "NotImplemented"
        smart = await lp.add_station("CP-2")
        await dumb.start_tx("tx-1")
        await lp.wait_for(lambda: _steerable(lp, "CP-1"), timeout=15, what="steerable=0")

        async def fixed_load() -> bool:
            plan = json.loads(await lp.redis.get(lp.keys.site_plan("depot")) or "{}")
            return bool(plan.get("fixed_load_kw") == 11.04)

        await lp.wait_for(fixed_load, what="plan budgets CP-1 at its maximum")
        await smart.start_tx("tx-2", token="T2")
        lp.active["CP-2"] = True
        await smart.needs(later(1), 20_000)
        await lp.wait_for(lambda: _kind_is(lp, "CP-2", "plan"), what="plan profile CP-2")
        assert smart.limit_w_at(datetime.now(UTC)) <= 20_000 - 11_040 + 1


async def _steerable(lp: Loop, sid: str) -> bool:
    return await lp.redis.hget(lp.keys.station_evse(sid, 1), "steerable") == "0"


async def test_default_profiles_keep_new_sessions_within_limit_before_any_plan(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0, worker=False, interim_profile_after_s=30.0,
                           reserve_kw_per_evse=8.0) as lp:
        cp1, cp2 = await lp.add_station("CP-1"), await lp.add_station("CP-2")

        def default_a(cp: object) -> float | None:
            from tests.loop.harness import LoopStation

            assert isinstance(cp, LoopStation)
            if not cp.defaults:
                return None
            return float(cp.defaults[-1]["chargingProfile"]["chargingSchedule"][0]
                         ["chargingSchedulePeriod"][0]["limit"])

        # two EVSEs on a 20 kW site: min(8 kW reserve, 10 kW share) = 8 kW = 11.5 A
        await lp.wait_for(lambda: default_a(cp1) == 11.5 and default_a(cp2) == 11.5, what="defaults 11.5 A")
        cp3 = await lp.add_station("CP-3")
        # a third EVSE: 20/3 kW = 9.6 A; the existing defaults are lowered
        await lp.wait_for(lambda: all(default_a(c) == 9.6 for c in (cp1, cp2, cp3)), what="defaults 9.6 A")
        assert cp1.defaults[-1]["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile"
        assert cp1.defaults[-1]["chargingProfile"]["stackLevel"] == 0
        # the record follows the station's Accepted answer, so it may land a moment after the call
        async def recorded_w() -> bool:
            return await lp.redis.hget(lp.keys.station_evse("CP-1", 1), "default_limit_w") == repr(9.6 * 690)

        await lp.wait_for(recorded_w, timeout=5.0, what="default_limit_w 6624 W recorded from the answer")
        for i, cp in enumerate((cp1, cp2, cp3), start=1):
            await cp.start_tx(f"tx-{i}", token=f"T{i}")
            lp.active[cp.id] = True
        await asyncio.sleep(0.5)
        now = datetime.now(UTC)
        # no TxProfile yet (interim after 30 s, optimizer down): the defaults hold the site limit
        assert not any(c.profiles for c in (cp1, cp2, cp3))
        assert sum(c.limit_w_at(now) for c in (cp1, cp2, cp3)) <= 20_000
        assert lp.violations == []


async def test_lower_site_limit_is_enforced_without_the_optimizer(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0, worker=False, interim_profile_after_s=0.2) as lp:
        cps = [await lp.add_station(f"CP-{i}") for i in (1, 2)]
        for i, cp in enumerate(cps, start=1):
            await cp.start_tx(f"tx-{i}", token=f"T{i}")
            lp.active[cp.id] = True
        for i in (1, 2):
            await lp.wait_for(lambda i=i: _kind_is(lp, f"CP-{i}", "interim"), what="interim profiles")
        before = sum(cp.limit_w_at(datetime.now(UTC)) for cp in cps)
        assert before > 8_000
        await lp.set_limit(8.0)  # the grid operator cuts the site to 8 kW; no optimizer running
        # the stations are lowered within seconds, by enforce_limit (scaled "limit" profiles) or, when
        # a re-share queued before the cut's event already read the new limit, by the fair shares
        await lp.wait_for(lambda: sum(cp.limit_w_at(datetime.now(UTC)) for cp in cps) <= 8_000 + 1,
                          timeout=5, what="stations within the new limit")
        assert lp.violations == [], lp.violations[:3]  # within the grace after the cut, never after


def _rolled_at_step_start(ts: str, step_s: float, within_s: float = 5.0) -> bool:
    """A plan written within `within_s` after a step started: the worker's rolling horizon re-plans
    every site when its plan's first step has passed (both sites of the loop did, at 22:45:00 in a
    fresh-clone run), whatever the EVs asked for."""
    return datetime.fromisoformat(ts).timestamp() % step_s < within_s


async def test_repeated_needs_keep_the_request_and_send_nothing(redis_url: str) -> None:
    """A needs message that only repeats the request (same absolute departure, energy = what is left)
    re-plans nothing, sends no profile and keeps the session's energy accounting; a real change does."""
    async with closed_loop(redis_url, limit_kw=20.0, replan_threshold_kw=0.5) as lp:
        cp = await lp.add_station("CP-1")
        await cp.start_tx("tx-1")
        lp.active["CP-1"] = True
        departure = later(3)
        assert await cp.needs(departure, 15_000) == "Processing"
        await lp.wait_for(lambda: _kind_is(lp, "CP-1", "plan"), what="plan profile")
        await asyncio.sleep(1.5)  # the worker's debounce: nothing else pending
        sent_before = len(cp.profiles)
        loop_before = await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1"))
        plans_before = await lp.redis.xlen(lp.keys.events())
        # the EV repeats its needs (an ISO 15118 renegotiation): departure drifted by seconds
        assert await cp.needs(departure + timedelta(seconds=20), 15_000) == "Accepted"

        async def counted() -> bool:
            h = await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1"))
            return int(h.get("needs_repeated", 0)) == 1

        await lp.wait_for(counted, what="repeat counted")
        await asyncio.sleep(2.0)  # longer than the worker's debounce: a re-plan would have happened
        assert len(cp.profiles) == sent_before
        loop_after = await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1"))
        assert loop_after["needs_received"] == loop_before["needs_received"] == "1"
        assert loop_after["energy_at_needs_wh"] == loop_before["energy_at_needs_wh"]
        stored = json.loads(await lp.redis.get(lp.keys.charging_needs("CP-1", 1)))
        assert stored["energy_amount_wh"] == 15_000 and stored["status"] == "Processing"
        events = await lp.redis.xrange(lp.keys.events(), min="-", max="+")
        step_s = json.loads(await lp.redis.get(lp.keys.site_plan("depot")))["step_s"]
        planned = [f for _, f in events[plans_before:] if f["type"] == "schedule.planned"
                   and not _rolled_at_step_start(f["ts"], step_s)]
        assert planned == []
        # a real change (one hour earlier, more energy) is a new request: stored and re-planned
        mark = await lp.redis.xlen(lp.keys.events())
        assert await cp.needs(departure - timedelta(hours=1), 20_000) == "Processing"

        async def replanned() -> bool:
            events = await lp.redis.xrange(lp.keys.events(), min="-", max="+")
            return any(f["type"] == "schedule.planned" for _, f in events[mark:])

        await lp.wait_for(replanned, what="re-plan for the new request")
        loop_new = await lp.redis.hgetall(lp.keys.session_loop("CP-1:tx-1"))
        assert loop_new["needs_received"] == "2"
        stored = json.loads(await lp.redis.get(lp.keys.charging_needs("CP-1", 1)))
        assert stored["energy_amount_wh"] == 20_000
