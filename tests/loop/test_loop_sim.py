"""The closed loop with the simulator: csms + optimizer worker + evse_sim stations (real Redis, WebSockets).

The EVs speak (modelled) ISO 15118: their departure and energy reach the csms as
NotifyEVChargingNeeds, the worker plans, the csms sends TxProfiles, the stations enforce them.
Simulated time runs 60x faster (a 15-min plan step passes in 15 s).
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

from csms.app import running_csms
from csms.settings import CsmsSettings
from csms.store.provisioning import provision_station
from evfleet.clock import ScaledClock
from evfleet.keys import Keys, tx_ref
from evfleet.store.client import connect_redis
from evfleet.txprofile import value_at
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.hlc import BasicHlc
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from optimizer.worker import OptimizerWorker, WorkerConfig

K = Keys("evfleet")
PASSWORD = "sim-loop-pass-1"
LIMIT_KW = 30.0


async def _until(pred: object, timeout_s: float = 15.0, what: str = "") -> object:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = pred() if callable(pred) else pred
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.05)


async def test_sim_stations_follow_the_optimized_schedule_within_site_limit(redis_url: str) -> None:
    clock = ScaledClock(datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0), speed=60.0)
    redis = connect_redis(redis_url)
    await redis.hset(K.site("depot"), mapping={"limit_kw": str(LIMIT_KW)})
    await redis.sadd(K.sites(), "depot")
    ids = ["SIM-1", "SIM-2"]
    for sid in ids:
        await provision_station(redis, K, sid, PASSWORD, site_id="depot", iterations=1000)
    settings = CsmsSettings(redis_url=redis_url, host="127.0.0.1", port=0, node_id="sim-loop",
                            api_enabled=False, heartbeat_interval_s=120, interim_profile_after_s=0.5)
    stations: list[SimStation] = []
    tasks: list[asyncio.Task[None]] = []
    over: list[tuple[str, float, dict[str, tuple[float, str]], float]] = []
    samples = 0
    try:
        async with running_csms(settings, clock=clock, services=["csms.smart_charging.service:run"]) as node:
            worker = OptimizerWorker(connect_redis(redis_url), K,
                                     WorkerConfig(debounce_s=0.2, block_ms=100), clock=clock)
            tasks.append(asyncio.create_task(worker.run()))
            for i, sid in enumerate(ids):
                cfg = StationConfig(sid, (EvseSpec.ac(22.0),), tx_updated_interval_s=60,
                                    aligned_interval_s=0)
                conn = ConnectionConfig(node.url, password=PASSWORD, backoff_base_s=0.05,
                                        backoff_max_s=0.3, response_timeout_s=5)
                st = SimStation(cfg, conn, clock, hlc=BasicHlc(max_schedule_tuples=8), rng=random.Random(i))
                stations.append(st)
                tasks.append(asyncio.create_task(st.run(tick_s=0.5)))
            await _until(lambda: all(s.online for s in stations), what="stations online")

            async def monitor() -> None:
                """Sample what the csms counts against the limit and what the stations draw, every 20 ms."""
                nonlocal samples
                drawn_over_since: float | None = None
                counted_over_since: float | None = None
                previous: tuple[frozenset[str], float] | None = None
                while True:
                    # one MULTI: an atomic snapshot of every record and session (separate reads could
                    # see an old decrease and a new increase at once, which never coexisted)
                    pipe = redis.pipeline(transaction=True)
                    for sid in ids:
                        pipe.get(K.applied_profile(sid, 1))
                        pipe.hmget(K.station_evse(sid, 1), ["tx_ref", "default_limit_w"])
                    raw = await pipe.execute()
                    # read after the snapshot: the csms keeps the sum within the limit from the
                    # instant it sends on, and every record in the snapshot was written by then
                    now = clock.now()
                    parts: dict[str, tuple[float, str]] = {}
                    for i, (sid, st) in enumerate(zip(ids, stations, strict=True)):
                        rec = json.loads(raw[2 * i]) if raw[2 * i] else None
                        txid, default_w = raw[2 * i + 1]
                        if not txid:
                            continue
                        if rec and rec.get("tx_ref") == txid:
                            series = [(t, w) for t, w in rec["applied_series_w"]]
                            label = f"{rec['kind']}:{rec['plan_id']}"
                            parts[sid] = (value_at(series, now.timestamp()), label)
                        else:  # no profile for this session yet: it may draw its default or EVSE maximum
                            cap_w = float(default_w) if default_w else st.config.evses[0].max_power_w
                            parts[sid] = (cap_w, "unprofiled")
                    counted = sum(w for w, _ in parts.values())
                    drawn = sum(s.evses[1].power_w for s in stations)
                    samples += 1
                    t_real = asyncio.get_running_loop().time()
                    sessions = frozenset(f"{sid}:{raw[2 * i + 1][0]}" for i, sid in enumerate(ids)
                                         if raw[2 * i + 1][0])
                    # a plug-in may take the count over the limit (the new session is not steered yet);
                    # from then on the csms only lowers limits until the count fits, and soon
                    over_limit = counted > LIMIT_KW * 1000 + 1
                    counted_over_since = (counted_over_since or t_real) if over_limit else None
                    raised_while_over = (over_limit and previous is not None and previous[0] == sessions
                                         and counted > previous[1] + 1)
                    previous = (sessions, counted)
                    # what the stations draw is bounded once every session has a profile from us and
                    # the station has had a tick (0.5 s real) to apply it: over for more than 1 s
                    profiled = all(_has_profile(s) for s in stations if s.evses[1].tx is not None)
                    if profiled and drawn > LIMIT_KW * 1000 + 1:
                        drawn_over_since = drawn_over_since or t_real
                    else:
                        drawn_over_since = None
                    lasting = ((drawn_over_since is not None and t_real - drawn_over_since > 1.0)
                               or (counted_over_since is not None and t_real - counted_over_since > 3.0))
                    if raised_while_over or lasting:
                        over.append((now.isoformat(), max(counted, drawn), parts, drawn))
                    await asyncio.sleep(0.02)

            tasks.append(asyncio.create_task(monitor()))
            now = clock.now()
            ev1 = Ev(EvSpec("EV-1", "ID.4", 77.0, 0.2, 0.8, 22.0, 135.0, now, now + timedelta(hours=5),
                            hlc=True))
            tx1 = stations[0].plug_in(1, ev1)
            needs = await _until(lambda: redis.get(K.charging_needs("SIM-1", 1)), what="needs stored")
            assert json.loads(str(needs))["transaction_id"] == tx1
            # the optimizer's TxProfile reaches the station, which enforces it
            await _until(lambda: _kind(redis, "SIM-1", "plan"), what="plan profile at SIM-1")
            sched = json.loads(str(await redis.get(K.planned_schedule("SIM-1", 1))))
            assert sched["tx_ref"] == tx_ref("SIM-1", tx1)
            loop1 = await redis.hgetall(K.session_loop(tx_ref("SIM-1", tx1)))
            assert loop1["needs_received"] == "1"
            ev2 = Ev(EvSpec("EV-2", "Zoe", 52.0, 0.3, 0.9, 22.0, 50.0, clock.now(),
                            clock.now() + timedelta(hours=3), hlc=True))
            tx2 = stations[1].plug_in(1, ev2)
            await _until(lambda: _kind(redis, "SIM-2", "plan"), what="plan profile at SIM-2")
            # several simulated minutes: the stations' enforced limits follow the schedules
            for _ in range(20):
                await asyncio.sleep(0.2)
                now = clock.now()
                for sid, st, tx in (("SIM-1", stations[0], tx1), ("SIM-2", stations[1], tx2)):
                    doc = json.loads(str(await redis.get(K.planned_schedule(sid, 1))))
                    if doc["tx_ref"] != tx_ref(sid, tx):
                        continue
                    start = datetime.fromisoformat(doc["start"])
                    step = int((now - start).total_seconds() // doc["step_s"])
                    planned_w = doc["limits_kw"][max(0, min(step, len(doc["limits_kw"]) - 1))] * 1000
                    # the station never draws more than planned (+ one 0.1 A rounding step at 3 x 230 V)
                    assert st.evses[1].power_w <= planned_w + 70, (sid, st.evses[1].power_w, planned_w)
            assert samples > 50
            assert over == [], over[:5]
            # the EVs charge: energy flows where the plan says so
            energy = 0.0
            for t in (tx_ref("SIM-1", tx1), tx_ref("SIM-2", tx2)):
                energy += float(await redis.hget(K.transaction(t), "energy_wh") or 0)
            plan = json.loads(str(await redis.get(K.site_plan("depot"))))
            if max(plan["planned_kw"][:2]) > 0:
                assert energy > 0
    finally:
        for st in stations:
            st.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await redis.aclose()


def _has_profile(st: SimStation) -> bool:
    """The station holds a TxProfile for its running transaction."""
    tx = st.evses[1].tx
    return tx is not None and any(
        p.profile.transaction_id == tx.transaction_id for p in st.profiles.installed())


async def _kind(redis: object, sid: str, kind: str) -> bool:
    raw = await redis.get(K.applied_profile(sid, 1))  # type: ignore[attr-defined]
    return bool(raw) and json.loads(raw).get("kind") == kind and json.loads(raw).get("status") == "Accepted"
