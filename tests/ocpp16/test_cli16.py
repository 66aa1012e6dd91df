"""`evfleet sim --ocpp mixed` as a user runs it, `evfleet stations add --ocpp`, bad options."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from csms.app import running_csms
from csms.settings import CsmsSettings
from evfleet.app.cli import app
from evfleet.keys import Keys
from evfleet.store.client import connect_redis

EVFLEET = str(Path(sys.executable).with_name("evfleet"))
# a machine-generated station secret (16+ characters, as OCPP stations use) is stored with the fast
# keyed hash: a short one costs PBKDF2 (100k rounds) at provisioning and at every login, seconds
# of a loaded machine inside the short simulated window (PBKDF2 logins: tests/csms)
PASSWORD = "cli-station-secret-0001"


def test_bad_ocpp_option_is_one_line() -> None:
    res = CliRunner().invoke(app, ["sim", "--csms", "ws://127.0.0.1:1/ocpp", "--ocpp", "1.5"])
    assert res.exit_code == 2 and "'1.5' is not one of 2.0.1, 1.6, mixed" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(app, ["demo", "--ocpp", "2.0", "--no-browser"])
    assert res.exit_code == 2 and "--ocpp must be 2.0.1, 1.6 or mixed" in res.output


async def test_sim_mixed_fleet_runs_16_and_201_stations(redis_url: str, tmp_path: Path) -> None:
    fields: dict[str, Any] = dict(redis_url=redis_url, host="127.0.0.1", port=0, node_id="cli16",
                                  api_enabled=False, smart_charging=False, accept_all_tokens=True)
    report = tmp_path / "report.json"
    redis = connect_redis(redis_url)
    try:
        async with running_csms(CsmsSettings(**fields, clock_speed=600), services=[]) as node:
            proc = await asyncio.create_subprocess_exec(
                EVFLEET, "sim", "--csms", node.url, "--scenario", "seed004", "--stations", "2",
                "--speed", "600",
                "--duration", "20m", "--start", "now", "--password", PASSWORD, "--provision-redis",
                redis_url, "--clock-redis", redis_url, "--tick", "0.1", "--quiet", "--report", str(report),
                "--ocpp", "mixed", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
        summary = json.loads(report.read_text())
        assert summary["stats"]["errors"] == 0, summary["station_errors"]
        assert summary["stats"]["energy_kwh"] > 1
        versions = {sid: await redis.hget(Keys().station(sid), "ocpp_version")
                    for sid in await redis.smembers(Keys().stations())}
        assert sorted(versions.values()) == ["1.6", "1.6", "2.0.1", "2.0.1"], versions  # every second one
        for sid in (s for s, v in versions.items() if v == "1.6"):  # their visits got csms-assigned ids
            assert int(await redis.get(Keys().station_tx_counter(sid)) or 0) >= 1
    finally:
        await redis.aclose()


def test_stations_add_pins_the_ocpp_version(redis_url: str) -> None:
    import redis as sync_redis

    r = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    runner = CliRunner()
    out = runner.invoke(app, ["stations", "add", "CP-PIN", "--password", "secret-pw-7", "--ocpp", "1.6",
                              "--iterations", "1000", "--redis-url", redis_url])
    assert out.exit_code == 0, out.output
    assert r.hget("evfleet:station:CP-PIN", "ocpp_pin") == "1.6"
    out = runner.invoke(app, ["stations", "add", "CP-PIN", "--password", "secret-pw-7", "--ocpp", "1.5",
                              "--redis-url", redis_url])
    assert out.exit_code == 2 and "--ocpp must be one of auto, 1.6, 2.0.1" in out.output
    assert r.hget("evfleet:station:CP-PIN", "ocpp_pin") == "1.6"
    r.close()
