"""README's "Running it by hand" in a real browser: `evfleet csms` on a simulated clock, the
optimizer worker and `evfleet sim` as separate processes on one Redis, provisioned with the README's
commands. The dashboard runs on the csms's clock (no "overdue" departures, a plan), and the
transactions page lists the finished sessions with energy and cost, its CSV equal to the API's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from csms.store.embedded import free_port
from tests.dashboard.test_dashboard import browser, pytestmark  # noqa: F401  (fixture, markers)
from tests.waiting import until

EVFLEET = str(Path(sys.executable).with_name("evfleet"))
SPEED = 2400  # the README uses 900; the same flow, a simulated day in 36 s
DURATION = "21h"
"""The README runs the sim for 24 h; its 10 seed-001 cars (seed 1) arrive 4.2-8.6 h and leave
18.4-20.5 h after the start, so every session has ended by 21 h: the same finished sessions, 4.5 s sooner."""
PASSWORD = "a-long-station-secret"


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([EVFLEET, *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(url, timeout=2)).status_code == 200
    except httpx.HTTPError:
        return False


async def _session_rows(page: Any) -> list[str]:
    return [str(t) for t in await page.eval_on_selector_all(
        "#session-table tbody tr", "rs => rs.map(r => r.innerText)")]


async def test_readme_by_hand_flow_in_a_browser(redis_url: str, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    env = {**os.environ, "HOME": str(tmp_path), "EVFLEET_REDIS_URL": redis_url}
    ocpp_port, api_port = free_port(), free_port()
    log = (tmp_path / "csms.log").open("wb")
    csms = subprocess.Popen([EVFLEET, "csms", "--clock-speed", str(SPEED), "--host", "127.0.0.1",
                             "--port", str(ocpp_port), "--api-port", str(api_port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    procs = [csms]
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        api = f"http://127.0.0.1:{api_port}"
        await until(lambda: _healthy(f"{api}/healthz"), 30, "the csms serves")
        _cli("stations", "add", "CP-0001", "--password", PASSWORD, "--site", "default", env=env)
        _cli("sites", "set", "default", "--limit-kw", "50", env=env)
        token = _cli("tokens", "create", "me", "--role", "operator", env=env).split()[-1]
        # a price series on the site, so sessions have a cost (the API's PUT, as an operator would)
        clock = await redis.hgetall("evfleet:clock")
        now = datetime.fromtimestamp(float(clock["sim_anchor"]), UTC).replace(minute=0, second=0,
                                                                               microsecond=0)
        prices = {"start": now.isoformat(), "step_minutes": 60,
                  "import_price": ([0.24] * 6 + [0.09] * 12 + [0.24] * 6) * 3}
        async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"}) as client:
            assert (await client.put("/api/v1/sites/default/prices", json=prices)).status_code == 200
        procs.append(subprocess.Popen([EVFLEET, "optimizer", "--redis-url", redis_url], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        sim = subprocess.Popen([EVFLEET, "sim", "--csms", f"ws://127.0.0.1:{ocpp_port}/ocpp",
                                "--stations", "10",
                                "--scenario", "seed001", "--duration", DURATION, "--password", PASSWORD,
                                "--provision-redis", redis_url, "--clock-redis", redis_url, "--quiet"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(sim)

        page = await browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        await page.goto(f"{api}/#token={token}")
        await until(lambda: _session_rows(page), 40, "live sessions on the dashboard")
        await until(lambda: _planned(page), 30, "a plan for the site")
        rows = await _session_rows(page)
        assert not any("overdue" in row for row in rows), rows  # departures read on the csms's clock
        out, err = await asyncio.to_thread(sim.communicate, timeout=120)
        assert sim.returncode == 0, err.decode()

        await page.click("nav >> text=Transactions")
        await page.select_option("#f-state", "ended")
        await page.click("#tx-filter button[type=submit]")
        await until(lambda: page.query_selector_all("#tx-table tbody tr"), 10, "finished sessions")
        async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"}) as client:
            ended = (await client.get("/api/v1/transactions", params={"state": "ended"})).json()["items"]
            api_csv = (await client.get("/api/v1/transactions.csv", params={"state": "ended"})).text
        assert ended and all(r["energy_kwh"] and r["energy_kwh"] > 0 and r["cost"] is not None for r in ended)
        shown = await page.eval_on_selector_all("#tx-table tbody tr", "rs => rs.map(r => r.dataset.tx)")
        assert sorted(shown) == sorted(r["tx_ref"] for r in ended)
        cells = await page.eval_on_selector_all('#tx-table td[data-key="cost"]',
                                                "ts => ts.map(t => t.textContent)")
        assert "–" not in cells
        async with page.expect_download() as info:
            await page.click("#tx-csv")
        saved = tmp_path / "export.csv"
        await (await info.value).save_as(saved)
        assert saved.read_text() == api_csv
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        await redis.aclose()


async def _planned(page: Any) -> bool:
    text = await page.text_content("#site-optimizer") or ""
    return bool(text) and "no plan" not in text and text != "–"
