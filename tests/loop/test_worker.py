"""optimizer.worker over a real Redis: plan documents, lease, fallback, debounce, history."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from evfleet.clock import RealClock
from evfleet.events import Event, EventType, event_fields
from evfleet.keys import Keys
from optimizer.problem import Instance, Schedule
from optimizer.worker import OptimizerWorker, WorkerConfig

K = Keys("evfleet")


async def _seed(redis: Redis, n: int = 2, limit_kw: float = 20.0, prices: bool = True) -> None:
    now = datetime.now(UTC)
    await redis.sadd(K.sites(), "depot")
    await redis.hset(K.site("depot"), mapping={"limit_kw": str(limit_kw)})
    if prices:
        await redis.set(K.site_prices("depot"), json.dumps({
            "start": (now - timedelta(hours=1)).isoformat(), "step_minutes": 60,
            "import_price": [0.4, 0.4, 0.1, 0.1, 0.1, 0.1, 0.3, 0.3] * 3}))
    for i in range(1, n + 1):  # every station counts its transactions: all run transactionId "1"
        sid, tx = f"CP-{i}", f"CP-{i}:1"
        await redis.sadd(K.stations(), sid)
        await redis.hset(K.station(sid), mapping={"site_id": "depot", "online": "1"})
        await redis.hset(K.station_evse(sid, 1), mapping={"max_power_w": "11040", "transaction_id": "1",
                                                          "tx_ref": tx})
        await redis.sadd(K.transactions_active(), tx)
        await redis.sadd(K.station_active(sid), tx)
        await redis.hset(K.transaction(tx), mapping={
            "station_id": sid, "transaction_id": "1", "tx_ref": tx, "evse_id": "1", "state": "Started",
            "id_token": f"T{i}",
            "started_at": now.isoformat(), "energy_wh": "0"})
        await redis.set(K.charging_needs(sid, 1), json.dumps({
            "transaction_id": "1", "tx_ref": tx, "departure_time": (now + timedelta(hours=4)).isoformat(),
            "energy_amount_wh": 15_000, "ev_max_current_a": 16}))


def _worker(redis: Redis, **kw: Any) -> OptimizerWorker:
    cfg = WorkerConfig(**{"debounce_s": 0.1, "max_delay_s": 0.5, "block_ms": 50, **kw})
    return OptimizerWorker(redis, K, cfg, clock=RealClock())


async def test_solve_writes_schedules_plan_and_event(redis: Redis) -> None:
    await _seed(redis)
    plan = await _worker(redis).solve_site("depot")
    assert plan is not None and plan["status"] == "optimal"
    site_plan = json.loads(await redis.get(K.site_plan("depot")))
    assert site_plan["plan_id"] == plan["plan_id"] and site_plan["limit_kw"] == 20.0
    assert set(site_plan["evses"]) == {"CP-1/1", "CP-2/1"}
    assert site_plan["solve_s"] >= 0 and site_plan["strategy"] == "cost" and site_plan["prices"]
    assert max(site_plan["planned_kw"]) <= 20.0 + 1e-6
    for i in (1, 2):
        doc = json.loads(await redis.get(K.planned_schedule(f"CP-{i}", 1)))
        assert doc["tx_ref"] == f"CP-{i}:1" and doc["step_s"] == 900 and len(doc["limits_kw"]) == 96
        # the energy need is met before departure (4 h from now: within the first 17 steps)
        # (limits are rounded down to 1 W: at most 17 steps x 1 W x 0.25 h below the plan)
        assert 15.0 - 0.005 <= sum(doc["limits_kw"]) * 0.25 <= 15.0 + 1e-6
        assert not any(doc["limits_kw"][17:])
        assert max(doc["limits_kw"]) <= 16 * 230 * 3 / 1000 + 1e-6
    events = [Event.from_fields(f) for _, f in await redis.xrange(K.events())]
    planned = [e for e in events if e.type is EventType.SCHEDULE_PLANNED]
    assert planned and planned[-1].site_id == "depot" and planned[-1].data["plan_id"] == plan["plan_id"]
    assert await redis.get(K.optimizer_lease("depot")) is None  # lease released


async def test_no_prices_no_sales_tariff_and_stale_schedule_removed(redis: Redis) -> None:
    await _seed(redis, prices=False)
    worker = _worker(redis)
    await worker.solve_site("depot")
    assert json.loads(await redis.get(K.site_plan("depot")))["prices"] is None
    await redis.srem(K.transactions_active(), "CP-2:1")
    await redis.srem(K.station_active("CP-2"), "CP-2:1")
    await redis.hset(K.transaction("CP-2:1"), "state", "Ended")
    await worker.solve_site("depot")
    assert await redis.get(K.planned_schedule("CP-2", 1)) is None
    assert await redis.get(K.planned_schedule("CP-1", 1)) is not None


async def test_lease_held_elsewhere_skips_solve(redis: Redis) -> None:
    await _seed(redis)
    await redis.set(K.optimizer_lease("depot"), "other-worker", px=5000)
    assert await _worker(redis).solve_site("depot") is None
    assert await redis.get(K.site_plan("depot")) is None


async def test_solver_timeout_falls_back_and_says_so(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    import optimizer.solve

    real = optimizer.solve.solve

    def slow(instance: Instance, strategy: str | None = None, time_limit_s: float | None = None) -> Schedule:
        time.sleep(1.0)
        return real(instance, strategy, time_limit_s)

    monkeypatch.setattr(optimizer.solve, "solve", slow)
    await _seed(redis)
    plan = await _worker(redis, solve_timeout_s=0.2).solve_site("depot")
    assert plan is not None and plan["status"] == "fallback"
    assert "0.2" in plan["message"]
    doc = json.loads(await redis.get(K.planned_schedule("CP-1", 1)))
    assert doc["status"] == "fallback"
    assert max(json.loads(await redis.get(K.site_plan("depot")))["planned_kw"]) <= 20.0 + 1e-6


async def test_events_debounced_into_one_solve_and_history_recorded(redis: Redis) -> None:
    await _seed(redis)
    worker = _worker(redis, debounce_s=0.3, max_delay_s=2.0)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 10
        while worker.solves < 2 and time.monotonic() < deadline:  # startup: default + depot
            await asyncio.sleep(0.05)
        assert worker.solves == 2
        for i in range(5):
            await redis.xadd(K.events(), event_fields(EventType.TX_STARTED, datetime.now(UTC), "CP-1", 1,
                                                      f"CP-1:x{i}", "depot"))
            await asyncio.sleep(0.05)
        # tx-1 ends: its energy goes to the driver's history (seed-001 forecast input)
        await redis.hset(K.transaction("CP-1:1"), mapping={"energy_wh": "12500", "state": "Ended",
                                                         "ended_at": datetime.now(UTC).isoformat()})
        await redis.xadd(K.events(), event_fields(EventType.TX_ENDED, datetime.now(UTC), "CP-1", 1,
                                                  "CP-1:1", "depot"))
        while worker.solves < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)
        assert worker.solves == 3  # six events within the debounce window -> one re-solve
        rows = [json.loads(r) for r in await redis.lrange(K.energy_history("T1"), 0, -1)]
        assert rows and rows[0]["energy_kwh"] == 12.5
        pending = await redis.xpending(K.events(), "optimizer")
        assert pending["pending"] == 0  # every entry acknowledged
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_two_workers_never_solve_a_site_at_once(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    import optimizer.solve

    real = optimizer.solve.solve
    running = 0
    overlap = False

    def tracked(instance: Instance, strategy: str | None = None,
                time_limit_s: float | None = None) -> Schedule:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        time.sleep(0.3)
        try:
            return real(instance, strategy, time_limit_s)
        finally:
            running -= 1

    monkeypatch.setattr(optimizer.solve, "solve", tracked)
    await _seed(redis)
    w1, w2 = _worker(redis, consumer="w1"), _worker(redis, consumer="w2")
    plans = await asyncio.gather(w1.solve_site("depot"), w2.solve_site("depot"))
    assert sum(p is not None for p in plans) == 1  # the other found the lease taken
    assert not overlap


def test_worker_cli_bad_input_gives_clear_errors() -> None:
    from typer.testing import CliRunner

    from evfleet.app.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["optimizer"], env={"EVFLEET_REDIS_URL": ""})
    assert res.exit_code == 2 and "--redis-url" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["optimizer", "--redis-url", "redis://127.0.0.1:1/0", "--strategy", "magic"])
    assert res.exit_code == 2 and "unknown strategy 'magic'" in res.output
    res = runner.invoke(app, ["optimizer", "--redis-url", "redis://127.0.0.1:1/0"])
    assert res.exit_code == 1 and "cannot reach Redis" in res.output and "Traceback" not in res.output


async def test_meter_drift_beyond_threshold_marks_site_dirty(redis: Redis) -> None:
    await _seed(redis)
    worker = _worker(redis, meter_drift_kw=2.0, drift_min_interval_s=0.0)
    plan = await worker.solve_site("depot")
    assert plan is not None
    from optimizer.worker import _SiteState

    worker.sites["depot"] = _SiteState(plan=plan)
    planned_kw = plan["evses"]["CP-1/1"][0]

    def meter(power_w: float) -> Event:
        return Event(type=EventType.METER_VALUES, station_id="CP-1", evse_id=1, site_id="depot",
                     ts=datetime.now(UTC), data={"power_w": power_w})

    await worker.handle(meter(planned_kw * 1000 + 1500))  # within 2 kW of the plan
    assert worker.sites["depot"].first_dirty is None
    await worker.handle(meter(planned_kw * 1000 + 2500))  # beyond
    assert worker.sites["depot"].reasons == {"meter_drift"}


async def test_entries_left_pending_by_a_dead_worker_are_acknowledged(redis: Redis) -> None:
    worker = _worker(redis, consumer="dead")
    await worker.ensure_group()
    for i in range(3):
        await redis.xadd(K.events(), event_fields(EventType.TX_STARTED, datetime.now(UTC), "CP-1", 1,
                                                  f"CP-1:{i}", "depot"))
    await redis.xreadgroup("optimizer", "dead", {K.events(): ">"}, count=10)  # read, never acked
    assert (await redis.xpending(K.events(), "optimizer"))["pending"] == 3
    assert await _worker(redis, consumer="new").ack_stale(min_idle_ms=0) == 3
    assert (await redis.xpending(K.events(), "optimizer"))["pending"] == 0


def test_worker_config_precedence_flags_env_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from evfleet.config import ConfigFileError
    from optimizer.worker_cli import worker_settings

    for name in [n for n in os.environ if n.startswith("EVFLEET_")]:
        monkeypatch.delenv(name)
    cfg = tmp_path / "evfleet.toml"
    cfg.write_text('[optimizer]\nredis_url = "redis://file:6379/0"\nstrategy = "edf"\ndebounce_s = 3.0\n'
                   'stickiness = 0.5\n')
    monkeypatch.setenv("EVFLEET_OPTIMIZER_STRATEGY", "llf")
    monkeypatch.setenv("EVFLEET_OPTIMIZER_STICKINESS", "0.25")
    merged = worker_settings(cfg, strategy="cost", redis_url=None)
    assert merged.redis_url == "redis://file:6379/0"  # from the file (an unset flag does not override)
    assert merged.strategy == "cost"  # the flag beats the environment and the file
    assert merged.stickiness == 0.25  # the environment beats the file
    assert merged.debounce_s == 3.0 and merged.horizon_steps == 96  # file, then default
    monkeypatch.setenv("EVFLEET_REDIS_URL", "redis://env:6379/0")  # shared with the csms
    assert worker_settings(cfg).redis_url == "redis://env:6379/0"
    bad = tmp_path / "bad.toml"
    bad.write_text("[optimizer]\nsolver = 'x'\n")
    with pytest.raises(ValidationError, match="solver"):
        worker_settings(bad)
    with pytest.raises(ConfigFileError, match="not found"):
        worker_settings(tmp_path / "missing.toml")


async def test_bulk_read_gives_what_the_commands_give(redis: Redis) -> None:
    """optimizer.bulk_read: hashes, missing keys, strings, hash fields and lists, across chunks."""
    from optimizer import bulk_read as b

    await redis.hset("bk:h", mapping={"a": "1", "b": "x y"})
    await redis.set("bk:s", "{}")
    await redis.rpush("bk:l", "r1", "r2")
    ops = [b.hgetall("bk:h"), b.hgetall("bk:none"), b.get("bk:s"), b.get("bk:none"), b.hget("bk:h", "b"),
           b.hget("bk:h", "zz"), b.hkeys("bk:h"), b.lrange("bk:l")] * 300  # 2,400 ops: two chunks
    got = await b.bulk_read(redis, ops)
    assert got[:8] == [{"a": "1", "b": "x y"}, {}, "{}", None, "x y", None, ["a", "b"], ["r1", "r2"]]
    assert got == got[:8] * 300


async def test_unchanged_limit_keeps_the_standing_plan_a_changed_one_re_solves(redis: Redis) -> None:
    await _seed(redis)
    worker = _worker(redis)
    first = await worker.solve_site("depot")
    kept = await worker.solve_site("depot", {"site.limit"})
    assert first is not None and kept is not None
    assert kept["kept"] == first["plan_id"] and kept["evses"] == first["evses"]
    await redis.hset(K.site("depot"), "limit_kw", "15")
    again = await worker.solve_site("depot", {"site.limit"})
    assert again is not None and "kept" not in again and again["limit_kw"] == 15.0


async def test_events_the_last_snapshot_saw_ask_for_no_re_plan(redis: Redis) -> None:
    """A worker behind on the stream: a start written before the site's snapshot was read is in its
    plan already (no re-solve), one written after re-plans; an end still goes to the driver's history."""
    await _seed(redis)
    worker = _worker(redis)
    await worker.ensure_group()
    await redis.xadd(K.events(), event_fields(EventType.TX_STARTED, datetime.now(UTC), "CP-1", 1,
                                              "CP-1:1", "depot"))
    await redis.hset(K.transaction("CP-2:1"), mapping={"energy_wh": "5000", "state": "Ended",
                                                     "ended_at": datetime.now(UTC).isoformat()})
    await redis.xadd(K.events(), event_fields(EventType.TX_ENDED, datetime.now(UTC), "CP-2", 1,
                                              "CP-2:1", "depot"))
    await asyncio.sleep(0.01)  # the snapshot's read starts in a later millisecond
    assert await worker.solve_site("depot") is not None
    await worker._read_events(block=False)
    assert worker.sites["depot"].first_dirty is None and worker.stale_skipped == 2
    assert await redis.lrange(K.energy_history("T2"), 0, -1)  # history is not a re-plan: recorded
    await redis.xadd(K.events(), event_fields(EventType.TX_STARTED, datetime.now(UTC), "CP-1", 1,
                                              "CP-1:2", "depot"))
    await worker._read_events(block=False)
    assert worker.sites["depot"].reasons == {"tx.started"}


async def test_a_worker_behind_drains_the_stream_and_solves_the_longest_waiting_site_first(
        redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _worker(redis, debounce_s=0.0)
    await worker.ensure_group()
    for i in range(1_200):  # more than two reads' worth
        await redis.xadd(K.events(), event_fields(EventType.TX_STARTED, datetime.now(UTC), f"CP-{i % 3}", 1,
                                                  f"CP-{i % 3}:{i}", f"S{2 - i % 3}"))
    await worker._read_events(block=False)  # one call: all of it, none left for the next read
    assert await worker._read_once(False) == 0
    assert (await redis.xpending(K.events(), "optimizer"))["pending"] == 0
    assert worker._due() == ["S2", "S1", "S0"]  # first asked, first planned
    solved: list[str] = []

    async def solve_site(site_id: str, reasons: set[str] | None = None) -> dict[str, Any]:
        solved.append(site_id)
        return {"start": datetime.now(UTC).isoformat(), "step_s": 900}

    monkeypatch.setattr(worker, "solve_site", solve_site)
    await worker._solve_due(limit=1)  # one site, then the stream again
    assert solved == ["S2"] and worker._due() == ["S1", "S0"]


async def test_a_plan_whose_first_step_ended_makes_its_site_due_and_a_new_plan_moves_it(redis: Redis) -> None:
    """Rolling horizon: `_due` marks a site once its plan's first step has ended (the end parsed once
    per plan, `_SiteState.first_step_end`); a new plan document is parsed again."""
    worker = _worker(redis, debounce_s=0.0)
    now = datetime.now(UTC)
    worker.mark_dirty("depot", "startup")
    st = worker.sites["depot"]
    st.first_dirty = st.last_dirty = None
    st.reasons = set()
    st.plan = {"start": (now - timedelta(minutes=10)).isoformat(), "step_s": 900}
    assert worker._due() == [] and st.first_dirty is None  # 5 minutes of the first step left
    st.plan = {"start": (now - timedelta(minutes=16)).isoformat(), "step_s": 900}
    worker._due()  # marks it (dirty from this instant: due from the next call on)
    assert worker._due() == ["depot"] and st.reasons == {"rolling_horizon"}
    st.first_dirty = st.last_dirty = None
    st.reasons = set()
    st.plan = {"start": now.isoformat(), "step_s": 900}
    assert worker._due() == [] and st.first_step_end() == now + timedelta(seconds=900)


async def test_an_ev_turning_suspended_re_plans_once_and_a_full_car_gets_nothing(redis: Redis) -> None:
    """A transaction's change to SuspendedEV re-plans its site at once (not at the next 15-minute step):
    the silent car (no needs) is full and planned at 0. A periodic sample that repeats the state, or a
    change to another state, asks for nothing; an ISO 15118 car that still needs energy keeps the
    standing plan (no profile re-sent)."""
    await _seed(redis)
    await redis.delete(K.charging_needs("CP-2", 1))  # CP-2: no ISO 15118, planned from the defaults
    worker = _worker(redis, debounce_s=0.0)
    await worker.ensure_group()
    await worker._solve_due()
    worker.mark_dirty("depot", "startup")
    await worker._solve_due()
    first = worker.sites["depot"].plan
    assert first is not None and sum(first["evses"]["CP-2/1"]) > 0

    async def tx_updated(station: str, trigger: str, state: str) -> None:
        await redis.hset(K.transaction(f"{station}:1"), "charging_state", state)
        await redis.xadd(K.events(), event_fields(EventType.TX_UPDATED, datetime.now(UTC), station, 1,
                                                  f"{station}:1", "depot", {
                                                      "event_type": "Updated", "trigger_reason": trigger,
                                                      "charging_state": state, "power_w": 0.0}))
        await worker._read_events(block=False)

    await tx_updated("CP-1", "ChargingStateChanged", "Charging")
    assert worker.sites["depot"].first_dirty is None
    await tx_updated("CP-1", "ChargingStateChanged", "SuspendedEV")  # its own schedule asks 0
    assert worker.sites["depot"].reasons == {"ev_suspended"}
    await worker._solve_due()
    kept = worker.sites["depot"].plan
    assert kept is not None and kept["kept"] == first["plan_id"] and kept["evses"] == first["evses"]
    await tx_updated("CP-2", "ChargingStateChanged", "SuspendedEV")  # full
    assert worker.sites["depot"].reasons == {"ev_suspended"}
    await worker._solve_due()
    again = worker.sites["depot"].plan
    assert again is not None and "kept" not in again and not any(again["evses"]["CP-2/1"])
    await tx_updated("CP-2", "MeterValuePeriodic", "SuspendedEV")  # a sample, not a change
    assert worker.sites["depot"].first_dirty is None
