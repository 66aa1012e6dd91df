"""500 stations with modelled ISO 15118-2 at once against one csms (+ optimizer) over WebSockets and Redis.

Each EV plugs in, its SECC relays NotifyEVChargingNeeds, answers the EV with its default
schedule within 1.5 s, renegotiates when the TxProfile the optimizer planned arrives, and
the EV's own plan comes back as NotifyEVChargingSchedule, checked by the csms (K17). Then an
unchanged re-plan is skipped by the csms (K16): 0 TxProfiles sent, 0 renegotiations triggered.
The soak variant also
drops the site limit (material re-plan) and waits for the EVs to renegotiate.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.iso15118.hlc import ModelledHlc
from evse_sim.iso15118.link import ModelledHlcLink
from evse_sim.iso15118.session import SeccState
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.iso15118.conftest import KEYS, PASSWORD, csms_loop, stop_stations
from tests.waiting import until

N = 500


@pytest.mark.timeout(480)  # 150 s was hit once in a fresh-clone CI run; 104 s alone, more at load 13+
async def test_500_modelled_hlc_stations_needs_profile_ev_plan(redis_url: str) -> None:
    await _fleet(redis_url, material_replan=False)


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_500_modelled_hlc_stations_material_replan_renegotiates(redis_url: str) -> None:
    """Soak (slower, and sensitive to the csms's churn at 500 EVs): a site-limit drop renegotiates the EVs."""
    await _fleet(redis_url, material_replan=True)


async def _fleet(redis_url: str, material_replan: bool) -> None:
    """The 500-station run (see the module docstring)."""
    async with csms_loop(redis_url, limit_kw=2_000.0, interim_profile_after_s=20.0) as lp:
        ids = [f"HLC-{i:03d}" for i in range(N)]
        await lp.provision(ids)
        conn = ConnectionConfig(lp.node.url, password=PASSWORD, backoff_base_s=0.2, backoff_max_s=2.0,
                                response_timeout_s=30)
        rng = random.Random(7)
        links = {sid: ModelledHlcLink(loop_interval_s=5.0) for sid in ids}
        configs = [StationConfig(sid, (EvseSpec.ac(11.0),), heartbeat_s=3600, tx_updated_interval_s=300,
                                 aligned_interval_s=0) for sid in ids]
        stations = [SimStation(cfg, conn, lp.clock, hlc=links[cfg.station_id], rng=random.Random(i))
                    for i, cfg in enumerate(configs)]
        runners = [asyncio.create_task(s.run()) for s in stations]
        try:
            await until(lambda: all(s.online for s in stations), 60, "500 stations online")
            started = time.monotonic()
            now = lp.clock.now()
            for i, station in enumerate(stations):  # 500 EVs arrive within ~5 s
                spec = EvSpec(f"EV-{i}", "ID.3", 58.0, rng.uniform(0.1, 0.5), 0.8, 11.0, 100.0, now,
                              now + timedelta(hours=rng.uniform(3, 10)), hlc=True)
                station.plug_in(1, Ev(spec))
                if i % 50 == 49:
                    await asyncio.sleep(0.5)

            async def count(pattern: str) -> int:
                n = 0
                async for _ in lp.redis.scan_iter(match=pattern, count=1000):
                    n += 1
                return n

            await until(lambda: _ge(count(f"{KEYS.prefix}:needs:HLC-*"), N), 60, "needs of all EVs")
            needs_s = time.monotonic() - started
            # every SECC answered within the EV's 2 s timeout (default schedule, then renegotiation)
            sessions = [link.history[0] for link in links.values()]
            await until(lambda: all(s.schedule_offers >= 1 for s in sessions), 30, "every SECC answered")
            failed = [s for s in sessions if s.errors]
            assert not failed, (failed[0].errors, list(failed[0].trace))
            def on_profile(s: ModelledHlc) -> bool:
                """EV charging under an SAScheduleList built from a TxProfile, its plan reported; when the
                SECC had to fall back to its default schedule first, via a completed renegotiation."""
                return (s.secc.offered_version >= 1 and s.secc.state == SeccState.CHARGING
                        and s.schedules_sent >= 1 and (s.default_offers == 0 or s.renegotiations >= 1))

            await until(lambda: all(on_profile(s) for s in sessions), 90,
                        "every EV on its TxProfile (directly or by renegotiation), plan reported")
            fallbacks = sum(1 for s in sessions if s.default_offers)
            loop_s = time.monotonic() - started
            # converged: each SECC offered the latest TxProfile its station accepted, the EV planned under it,
            # and the plan the csms holds is within the profile the csms applied (re-plans may still be in
            # flight for a while: wait until every session agrees)
            state: dict[str, Any] = {}
            seen: dict[str, Any] = {"last": None, "profile.sent": 0, "profile.answered": 0}

            async def all_answered() -> bool:
                """Every profile the csms sent so far is answered (a pass may still be applying the
                plan when the sessions already agree: its answers must not land in the K16 window)."""
                rows = await lp.redis.xrange(KEYS.events(), min=seen["last"] or "-", max="+")
                for eid, fields in rows:
                    if eid == seen["last"]:
                        continue
                    seen["last"] = eid
                    if fields["type"] in ("profile.sent", "profile.answered"):
                        seen[fields["type"]] += 1
                return bool(seen["profile.sent"] <= seen["profile.answered"])

            async def consistent() -> bool:
                ev_raw = await lp.redis.mget([KEYS.ev_schedule(sid, 1) for sid in ids])
                ap_raw = await lp.redis.mget([KEYS.applied_profile(sid, 1) for sid in ids])
                bad: list[str] = []
                worst = 0.0
                for sid, e, a in zip(ids, ev_raw, ap_raw, strict=True):
                    sess = links[sid].history[0]
                    if not e or not a or sess.secc.offered_version != sess.secc.profile_version:
                        bad.append(sid)
                        continue
                    excess = _worst_excess_w(json.loads(e), json.loads(a))
                    if excess > 1.0:
                        bad.append(sid)
                        worst = max(worst, excess)
                state.update(bad=bad, worst=worst)
                return not bad and await all_answered()

            try:
                await until(consistent, 60, "every EV's reported plan within its latest TxProfile")
            except AssertionError:
                if not state["bad"]:
                    raise AssertionError(f"profiles still unanswered: {seen}") from None
                first = links[state["bad"][0]].history[0]
                raise AssertionError(f"{len(state['bad'])} sessions not consistent (worst excess "
                                     f"{state['worst']:.0f} W); first: state={first.secc.state} "
                                     f"offered={first.secc.offered_version} "
                                     f"profiles={first.secc.profile_version} "
                                     f"renegotiations={first.renegotiations}") from None
            # the EV follows its plan: its draw is capped by its own profile, never above the TxProfile
            for station, sess in zip(stations, sessions, strict=True):
                assert sess.follow is not None
                lim = station.evses[1].ev_limit_w
                assert lim is not None and lim <= 11_000 + 1
            # K16 churn control seen from the EVs: the csms skips re-plans that change nothing material (it
            # counts them); a material re-plan (site limit 2 MW -> 1 MW) renegotiates the EVs again
            before = {sid: links[sid].history[0].renegotiations for sid in ids}
            asked = {sid: links[sid].history[0].renegotiations_requested for sid in ids}
            loops_before = await _loops(lp, links, ids)
            mark = await lp.redis.xlen(KEYS.events())
            await lp.set_limit(2_000.0)

            async def skipped_since_the_replan() -> bool:
                """Some session counted a skipped re-plan after the unchanged limit was set (not before)."""
                now_loops = await _loops(lp, links, ids)
                return any(int(now_loops[sid].get("replans_skipped", 0))
                           > int(loops_before[sid].get("replans_skipped", 0)) for sid in ids)

            # the csms counts the skip at its next re-plan: 40 s ran out at load 13 (an event wait, no pause)
            await until(skipped_since_the_replan, 120, "K16: the unchanged re-plan skipped")
            await asyncio.sleep(5.5)  # > one charge-loop period (5 s): a renegotiation would have started
            churned = sum(1 for sid in ids if links[sid].history[0].renegotiations_requested > asked[sid])
            loops_after = await _loops(lp, links, ids)
            delta = {k: sum(int(loops_after[sid].get(k, 0)) - int(loops_before[sid].get(k, 0)) for sid in ids)
                     for k in ("schedules_sent", "renegotiations", "k17_resent", "k17_violations",
                               "k17_stale", "replans_skipped", "ev_plans_received", "needs_repeated")}
            window = (await lp.redis.xrange(KEYS.events(), min="-", max="+"))[mark:]
            sent_kinds = collections.Counter(json.loads(f.get("data") or "{}").get("kind")
                                             for _, f in window if f["type"] == "profile.sent")
            print(f"\nK16 window after an unchanged re-plan: {churned} EVs renegotiated; csms: {delta}; "
                  f"profiles sent by kind: {dict(sent_kinds)}")
            assert delta["replans_skipped"] > 0
            # the loop adds no churn of its own: no needs re-sent on departure drift (same rule as the real
            # bridge), no K17 re-send for plans made before the current profile
            assert all(links[sid].history[0].needs_sent == 1 for sid in ids)
            assert delta["k17_resent"] == 0, delta
            # nothing material changed: the worker keeps its standing plan (optimizer.standing), so no
            # TxProfile goes out and no EV renegotiates
            assert delta["schedules_sent"] == 0 and delta["renegotiations"] == 0, (delta, dict(sent_kinds))
            assert churned == 0
            if material_replan:
                await lp.set_limit(1_000.0)
                await until(lambda: sum(1 for sid in ids
                                        if links[sid].history[0].renegotiations > before[sid]) >= N * 0.9,
                            120, "K16: most EVs renegotiated after the material re-plan")
                await until(consistent, 120, "every EV's reported plan within its new TxProfile")
            print(f"\n{N} HLC stations: needs at csms after {needs_s:.1f} s,",
                  f"loop closed after {loop_s:.1f} s; {fallbacks} SECCs offered their default schedule first")
        finally:
            await stop_stations(stations, runners, 15)


async def _ge(value: object, n: int) -> bool:
    assert asyncio.iscoroutine(value)
    return bool(await value >= n)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _worst_excess_w(ev_doc: dict[str, Any], applied: dict[str, Any]) -> float:
    """Largest amount [W] by which the EV's reported plan exceeds the applied TxProfile (1.5 s around
    each change point ignored: ISO 15118-2 schedule times are whole seconds)."""
    base = _ts(ev_doc["time_base"])
    ev_points = [(base + p["startPeriod"], float(p["limit"]))
                 for p in ev_doc["schedule"]["chargingSchedulePeriod"]]
    ours = [(float(t), float(w)) for t, w in applied["applied_series_w"]]

    def at(points: list[tuple[float, float]], t: float, before: float) -> float:
        value = before
        for start, w in points:
            if start <= t:
                value = w
        return value

    edges = sorted({t for t, _ in ev_points} | {t for t, _ in ours})
    worst = 0.0
    for a, b in zip(edges, edges[1:], strict=False):
        if b - a <= 3.0 or a < base:
            continue
        mid = (a + b) / 2
        worst = max(worst, at(ev_points, mid, 0.0) - at(ours, mid, 11_040.0))
    return worst


async def _loops(lp: Any, links: dict[str, ModelledHlcLink], ids: list[str]) -> dict[str, dict[str, str]]:
    out = {}
    for sid in ids:
        tx = str((links[sid].history[0].secc.profile or {}).get("transactionId"))
        out[sid] = dict(await lp.redis.hgetall(KEYS.session_loop(f"{sid}:{tx}")))
    return out
