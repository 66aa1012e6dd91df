"""`evfleet sim` as a user runs it: a subprocess against a csms, and clear errors for bad input."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from csms.app import running_csms
from csms.settings import CsmsSettings
from evfleet.app.cli import app
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evse_sim.cli import parse_duration, read_password_file

EVFLEET = str(Path(sys.executable).with_name("evfleet"))
# a machine-generated station secret (16+ characters, as OCPP stations use) is stored with the fast
# keyed hash: a short one costs PBKDF2 (100k rounds) at provisioning and at every login, seconds
# of a loaded machine inside the short simulated window (PBKDF2 logins: tests/csms)
PASSWORD = "cli-station-secret-0001"


def test_bad_input_gets_a_message_not_a_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["sim", "--csms", "http://127.0.0.1:1/ocpp"])
    assert res.exit_code == 2 and "ws:// or wss://" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["sim", "--csms", "ws://127.0.0.1:1/ocpp", "--scenario", "nope"])
    assert res.exit_code == 2 and "unknown scenario 'nope'" in res.output
    res = runner.invoke(app, ["sim", "--csms", "ws://127.0.0.1:1/ocpp", "--hlc", "real"])
    assert res.exit_code == 2 and "'real' is not one of basic, modelled, josev, none" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["sim", "--csms", "ws://127.0.0.1:1/ocpp", "--hlc", "josev", "--stations", "50"])
    assert res.exit_code == 2 and "at most 10 stations, got 50" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["sim", "--csms", "ws://127.0.0.1:1/ocpp", "--hlc", "josev", "--iso15118", "21"])
    assert res.exit_code == 2 and "'21' is not one of 2, 20" in res.output
    res = runner.invoke(app, ["sim", "--csms", "ws://127.0.0.1:1/ocpp", "--hlc", "modelled",
                              "--iso15118", "20"])
    assert res.exit_code == 2 and "--iso15118 20 needs --hlc josev" in res.output
    res = runner.invoke(app, ["sim", "--csms", "ws://127.0.0.1:1/ocpp", "--hlc", "modelled", "--no-hlc"])
    assert res.exit_code == 2 and "--no-hlc contradicts --hlc modelled" in res.output
    res = runner.invoke(app, ["sim", "--csms", "ws://127.0.0.1:1/ocpp", "--duration", "ten minutes"])
    assert res.exit_code == 2 and "not a duration" in res.output
    bad = tmp_path / "pw.txt"
    bad.write_text("SIM-1\nSIM-2 x y\n")
    res = runner.invoke(app, ["sim", "--csms", "ws://127.0.0.1:1/ocpp", "--password-file", str(bad)])
    assert res.exit_code == 2 and "is not 'station_id password'" in res.output


def test_duration_and_password_file_parsing(tmp_path: Path) -> None:
    assert parse_duration("90m").total_seconds() == 5400
    assert parse_duration("2d").total_seconds() == 172800
    assert parse_duration("15").total_seconds() == 15
    f = tmp_path / "p"
    f.write_text("shared-password\n")
    assert read_password_file(f) == ("shared-password", {})
    f.write_text("# comment\nA pw-a-123\nB:pw-b-456\n")
    assert read_password_file(f) == (None, {"A": "pw-a-123", "B": "pw-b-456"})


async def test_sim_command_runs_a_fleet_against_the_csms(redis_url: str, tmp_path: Path) -> None:
    fields: dict[str, Any] = dict(
        redis_url=redis_url,
        host="127.0.0.1",
        port=0,
        node_id="cli-test",
        api_enabled=False,
        smart_charging=False,
    )
    report = tmp_path / "report.json"
    redis = connect_redis(redis_url)
    try:
        # the csms runs the deployment's simulated clock; the simulator joins it through Redis
        async with running_csms(CsmsSettings(**fields, clock_speed=600), services=[]) as node:
            proc = await asyncio.create_subprocess_exec(
                EVFLEET,
                "sim",
                "--csms",
                node.url,
                "--scenario",
                "seed004",
                "--stations",
                "8",
                "--speed",
                "600",
                "--duration",
                "60m",  # 6 s real: 8 stations connect and boot in it (20m, 2 s, ran out at load 13)
                "--start",
                "now",
                "--password",
                PASSWORD,
                "--provision-redis",
                redis_url,
                "--clock-redis",
                redis_url,
                "--tick",
                "0.1",
                "--quiet",
                "--report",
                str(report),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
        assert "8 stations (8 connected, 8 booted" in out.decode() and ", 8 EV visits" in out.decode()
        summary = json.loads(report.read_text())
        assert summary["stats"]["errors"] == 0, summary["station_errors"]
        assert summary["stats"]["energy_kwh"] > 5
        assert len(summary["visits"]) == 8
        booted = [
            await redis.hget(Keys().station(f"S004-{i}{sfx}"), "vendor")
            for i in range(1, 5)
            for sfx in ("", "-c2")
        ]
        assert booted == ["evfleet"] * 8
        clock_spec = await redis.hgetall(Keys().clock())  # one clock, owned by the csms
        assert float(clock_spec["speed"]) == 600.0 and clock_spec["owner"] == "csms:cli-test"
    finally:
        await redis.aclose()


STATION_IDS = [f"S004-{i}{sfx}" for i in range(1, 5) for sfx in ("", "-c2")]


async def _run_sim(redis_url: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """`evfleet sim` on seed004 (8 stations, every EV an HLC EV) against a csms; the JSON report."""
    fields: dict[str, Any] = dict(
        redis_url=redis_url, host="127.0.0.1", port=0, node_id="cli-hlc", api_enabled=False,
        smart_charging=False,
    )
    report = tmp_path / "report.json"
    # seed004's EVs arrive at time 0, before their stations are connected: their Started and
    # NotifyEVChargingNeeds wait in the offline queue and are delivered on connect
    scenario = "seed004"
    async with running_csms(CsmsSettings(**fields, clock_speed=300), services=[]) as node:
        proc = await asyncio.create_subprocess_exec(
            EVFLEET, "sim", "--csms", node.url, "--scenario", str(scenario), "--stations", "8",
            "--speed", "300", "--duration", "30m", "--clock-redis", redis_url, "--password", PASSWORD,
            "--provision-redis", redis_url, "--tick", "0.1", "--quiet", "--report", str(report), *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "8 stations (8 connected, 8 booted" in text and ", 8 EV visits" in text, text
    summary: dict[str, Any] = json.loads(report.read_text())
    assert summary["stats"]["errors"] == 0, summary
    assert summary["stats"]["energy_kwh"] > 2
    return summary


async def _count_keys(redis_url: str, key_for: Any) -> int:
    redis = connect_redis(redis_url)
    try:
        return sum([await redis.exists(key_for(sid, 1)) for sid in STATION_IDS])
    finally:
        await redis.aclose()


async def test_sim_hlc_modelled_runs_the_iso15118_session(redis_url: str, tmp_path: Path) -> None:
    await _run_sim(redis_url, tmp_path, "--hlc", "modelled")
    keys = Keys()
    assert await _count_keys(redis_url, keys.charging_needs) == 8
    # only the modelled ISO 15118-2 session has the EV send its own plan (NotifyEVChargingSchedule)
    assert await _count_keys(redis_url, keys.ev_schedule) == 8


async def test_sim_hlc_basic_announces_needs_without_ev_plan(redis_url: str, tmp_path: Path) -> None:
    await _run_sim(redis_url, tmp_path)  # --hlc basic is the default
    keys = Keys()
    assert await _count_keys(redis_url, keys.charging_needs) == 8
    assert await _count_keys(redis_url, keys.ev_schedule) == 0


async def test_sim_hlc_none_makes_every_ev_a_non_hlc_ev(redis_url: str, tmp_path: Path) -> None:
    await _run_sim(redis_url, tmp_path, "--hlc", "none")
    keys = Keys()
    assert await _count_keys(redis_url, keys.charging_needs) == 0
    assert await _count_keys(redis_url, keys.ev_schedule) == 0


@pytest.mark.soak  # 4 real minutes of Josev sessions; the priced real-Josev loop runs by default
@pytest.mark.iso15118
@pytest.mark.timeout(480)
@pytest.mark.parametrize("iso15118", ["2", "20"])
async def test_sim_hlc_josev_runs_real_iso15118_sessions(redis_url: str, tmp_path: Path,
                                                         iso15118: str) -> None:
    """`evfleet sim --hlc josev [--iso15118 20]`: real Josev SECC/EVCC per station; needs and the EV's
    own plan reach the csms over real ISO 15118-2 or -20 AC (skipped where namespaces/Java/the Josev
    venv are missing)."""
    from evse_sim.iso15118.netns import check

    cap = check()
    if not cap.ok:
        pytest.skip(cap.explain())
    fields: dict[str, Any] = dict(redis_url=redis_url, host="127.0.0.1", port=0, node_id="cli-josev",
                                  api_enabled=False, smart_charging=False)
    async with running_csms(CsmsSettings(**fields), services=[]) as node:
        proc = await asyncio.create_subprocess_exec(
            EVFLEET, "sim", "--csms", node.url, "--scenario", "seed004", "--stations", "2", "--speed", "1",
            "--start", "now", "--duration", "240s", "--password", PASSWORD, "--provision-redis",
            redis_url, "--tick", "0.5", "--hlc", "josev", "--iso15118", iso15118,
            "--report", str(tmp_path / "report.json"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 420)
        assert proc.returncode == 0, err.decode()[-3000:]
    keys = Keys()
    redis = connect_redis(redis_url)
    try:
        # seed004 with --stations 2 has 4 stations; under load each JVM start takes up to a minute
        ids = [k.split(":")[-2] for k in await redis.keys(keys.charging_needs("*", 1))]
        assert ids, (out.decode()[-2000:], err.decode()[-2000:])
        schedules = [sid for sid in ids if await redis.get(keys.ev_schedule(sid, 1))]
        assert schedules, "a Josev EV sent its own plan (NotifyEVChargingSchedule)"
    finally:
        await redis.aclose()


async def test_a_clock_redis_that_never_answers_fails_with_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from evse_sim import cli

    monkeypatch.setattr(cli, "REDIS_ANSWER_S", 0.5)
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts, reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    try:
        with pytest.raises(cli.RedisUnreachable, match=r"--clock-redis .*no answer within 0.5 s"):
            await asyncio.wait_for(cli._join_clock(url, None, datetime.now(UTC)), 10)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
