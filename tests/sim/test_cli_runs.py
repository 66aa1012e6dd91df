"""`evfleet sim` run after run against one csms and its Redis, as a user does: every run's
transactions are stored, and a run in which the stations cannot get in fails with its cause."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from csms.app import running_csms
from csms.settings import CsmsSettings
from csms.store.provisioning import provision_station
from evfleet.keys import Keys, tx_ref
from evfleet.store.client import connect_redis
from evse_sim.fleet import fleet_outcome

EVFLEET = str(Path(sys.executable).with_name("evfleet"))
KEYS = Keys()
PASSWORD = "cli-password-1"


def _settings(redis_url: str) -> CsmsSettings:
    return CsmsSettings(redis_url=redis_url, host="127.0.0.1", port=0, node_id="cli-runs", api_enabled=False,
                        smart_charging=False, clock_speed=600)


async def _sim(url: str, redis_url: str, report: Path, *extra: str) -> tuple[int, str, str]:
    """`evfleet sim` on seed004 (8 stations), 60 simulated minutes (6 s); (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        EVFLEET, "sim", "--csms", url, "--scenario", "seed004", "--stations", "8", "--speed", "600",
        "--duration", "60m", "--start", "now", "--clock-redis", redis_url, "--tick", "0.1", "--quiet",
        "--report", str(report), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_second_sim_run_against_the_same_redis_stores_all_its_transactions(
        redis_url: str, tmp_path: Path) -> None:
    redis = connect_redis(redis_url)
    try:
        async with running_csms(_settings(redis_url), services=[]) as node:
            runs: list[dict[str, Any]] = []
            for i in range(2):
                report = tmp_path / f"run{i}.json"
                code, out, err = await _sim(node.url, redis_url, report, "--password", PASSWORD,
                                            "--provision-redis", redis_url)
                assert code == 0, err
                assert "8 stations (8 connected, 8 booted" in out, out
                runs.append(json.loads(report.read_text()))
        assert runs[0]["run_seed"] != runs[1]["run_seed"]  # each run draws its own seed
        refs: list[set[str]] = []
        for summary in runs:
            outcome = summary["outcome"]
            assert (outcome["connected"], outcome["booted"]) == (8, 8) and outcome["charged"] >= 1
            assert summary["failure"] is None and summary["station_errors"] == {}
            visits = [v for v in summary["visits"] if v["transaction_id"]]
            assert len(visits) == 8
            refs.append({tx_ref(v["station_id"], v["transaction_id"]) for v in visits})
        assert refs[0].isdisjoint(refs[1])  # the second run repeats none of the first run's ids
        for ref in refs[0] | refs[1]:  # every transaction of both runs is stored as its own
            tx = await redis.hgetall(KEYS.transaction(ref))
            assert tx and tx["generation"] == "1" and tx["tx_ref"] == ref, (ref, tx)
            assert await redis.llen(KEYS.transaction_events(ref)) >= 1
        assert await redis.zcard(KEYS.transactions_by_start()) == 16
    finally:
        await redis.aclose()


async def test_sim_without_the_password_fails_with_the_first_cause(redis_url: str, tmp_path: Path) -> None:
    redis = connect_redis(redis_url)
    try:
        for sid in [f"S004-{i}{sfx}" for i in range(1, 5) for sfx in ("", "-c2")]:
            await provision_station(redis, KEYS, sid, PASSWORD, iterations=1000)
        async with running_csms(_settings(redis_url), services=[]) as node:
            report = tmp_path / "nopw.json"
            code, out, err = await _sim(node.url, redis_url, report)  # no --password: 401 for every station
        assert code == 1, (out, err)
        error_lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1, err
        line = error_lines[0]
        assert line.startswith("error: 0 of 8 stations booted, 0 connected; first error: S004-"), line
        assert "HTTP 401" in line and "--password" in line
        summary = json.loads(report.read_text())  # the report is written all the same
        assert summary["outcome"]["connected"] == 0 and summary["outcome"]["failed"] == 8
        assert summary["failure"] == line.removeprefix("error: ")
        assert len(summary["station_errors"]) == 8
    finally:
        await redis.aclose()


def test_outcome_rule() -> None:
    """Most stations failing (never booted, with an error) fails the run; a few do not."""
    from evse_sim.fleet import FleetOutcome

    ok = FleetOutcome(stations=10, started=10, connected=10, booted=9, charged=5, failed=1, first_error="x")
    assert ok.failure is None
    most = FleetOutcome(stations=10, started=10, connected=4, booted=4, charged=1, failed=6,
                        first_error="CS-3: TimeoutError: timed out during opening handshake")
    assert most.failure == ("4 of 10 stations booted, 4 connected; first error: CS-3: TimeoutError: "
                            "timed out during opening handshake")
    none = FleetOutcome(stations=3, started=3, connected=0, booted=0, charged=0, failed=0)
    assert none.failure is not None and "no station connected" in none.failure
    assert fleet_outcome([], 0).failure is None
