"""The station page in headless Chromium against a csms with real simulated stations: reached from
its tile, an operator starts and stops a transaction, triggers a message, unlocks a connector and
asks for the charging profiles, and sees the transactions and messages of the station; and the site
power chart comes from Redis, so it survives an API process restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

import csms.api.power_history as power_history
from csms.api.tokens import TokenStore
from csms.store.provisioning import add_id_token
from tests.api.harness import KEYS, live_csms
from tests.dashboard.test_dashboard import browser, pytestmark  # noqa: F401  (fixture, markers)
from tests.waiting import until


async def _log_has(page: Any, text: str) -> bool:
    return text in (await page.text_content("#sv-log") or "")


async def test_operator_acts_on_a_station_from_its_page(redis_url: str, browser: Any,  # noqa: F811
                                                        artifacts_dir: Path) -> None:
    async with live_csms(redis_url, ["CS-P"]) as live:
        await add_id_token(live.redis, KEYS, "CARD-7")  # a known card, else the station stops at once
        page = await browser.new_page(viewport={"width": 1400, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        await page.goto(f"{live.api_url}/#token={live.operator}")
        await page.click('.tile[data-sid="CS-P"]', timeout=10_000)  # the tile opens the station page
        await page.wait_for_function("() => document.getElementById('sv-id')?.textContent === 'CS-P'",
                                     timeout=10_000)
        assert "/static/station.html?id=CS-P" in page.url
        await page.wait_for_selector('#sv-evses [data-connector="1/1"]')

        await page.fill("#start-token", "CARD-7")
        await page.select_option("#start-evse", "1")
        await page.click("#f-start button[type=submit]")
        await until(lambda: _log_has(page, "RequestStartTransaction Accepted"), 10, "remote start answered")
        stop = await page.wait_for_selector("#sv-evses [data-stop]", timeout=10_000)  # the running tx
        assert stop is not None
        tx_id = await stop.get_attribute("data-stop")
        await page.wait_for_selector(f'#sv-transactions tr[data-tx="CS-P:{tx_id}"]', timeout=10_000)
        await page.click("#sv-evses [data-stop]")  # (the table is re-rendered: click by selector)
        await until(lambda: _log_has(page, "RequestStopTransaction Accepted"), 10, "remote stop answered")
        await page.wait_for_function(  # ended on the station: no running transaction, and listed as ended
            "() => !document.querySelector('#sv-evses [data-stop]')", timeout=15_000)
        await page.click('#sv-evses [data-unlock="1/1"]')
        await until(lambda: _log_has(page, "UnlockConnector Unlocked"), 10, "unlock answered")
        await page.select_option("#trigger-message", "StatusNotification")
        await page.click("#f-trigger button[type=submit]")
        await until(lambda: _log_has(page, "TriggerMessage Accepted"), 10, "trigger answered")
        async with httpx.AsyncClient(base_url=live.api_url, timeout=10) as api:  # a profile to find
            schedule = {"id": 1, "chargingRateUnit": "A",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}
            profile = {"id": 42, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                       "chargingProfileKind": "Relative", "chargingSchedule": [schedule]}
            r = await api.post("/api/v1/stations/CS-P/charging-profiles",
                               json={"evse_id": 1, "charging_profile": profile},
                               headers={"Authorization": f"Bearer {live.operator}"})
            assert r.status_code == 200 and r.json()["accepted"], r.text
        await page.click("#f-profiles button[type=submit]")
        await until(lambda: _log_has(page, "GetChargingProfiles Accepted"), 15, "profiles answered")
        await page.wait_for_selector('#sv-profiles tr[data-profile="42"]', timeout=5_000)
        await page.click('#sv-profiles tr[data-profile="42"] button')
        await until(lambda: _log_has(page, "ClearChargingProfile Accepted"), 10, "profile cleared")
        await page.wait_for_selector("#sv-events li[data-type='tx.ended']", timeout=10_000)
        await page.wait_for_function(
            f"() => (document.querySelector('#sv-transactions tr[data-tx=\"CS-P:{tx_id}\"]') || {{}})"
            ".innerText?.includes('Remote')", timeout=20_000)
        await page.screenshot(path=str(artifacts_dir / "dashboard-station-page.png"), full_page=True)
        classes = await page.eval_on_selector_all("#sv-log li", "ls => ls.map(l => l.className)")
        assert "error" not in classes
        assert errors == []

        viewer = await browser.new_page()
        await viewer.goto(f"{live.api_url}/#token={live.viewer}")
        await viewer.goto(f"{live.api_url}/static/station.html?id=CS-P")
        await viewer.wait_for_function("() => document.getElementById('sv-id')?.textContent === 'CS-P'")
        assert await viewer.is_hidden("#sv-actions")  # a viewer sees the station, not the actions


async def test_site_power_history_survives_an_api_restart(redis_url: str, browser: Any,  # noqa: F811
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          artifacts_dir: Path) -> None:
    monkeypatch.setattr(power_history, "REAL_TICK_S", 0.2)  # a sample every 0.2 s (6 s of the 30x clock)
    monkeypatch.setattr(power_history, "CLOCK_INTERVAL_S", 1.0)
    async with live_csms(redis_url, ["CS-H"]) as live:
        live.stations[0].plug_in(1, live.ev(hours=3))
        await until(lambda: _samples(live.redis, 8), 15, "samples in Redis")
        for name in ("viewer", "operator"):  # the next node's harness makes them again
            await TokenStore(live.redis, KEYS, live.clock).revoke(name)
    async with live_csms(redis_url, ["CS-H"]) as again:  # a new API process on the same Redis
        kept = await again.redis.zcard(KEYS.site_power("depot"))
        assert kept >= 8
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        await page.goto(f"{again.api_url}/#token={again.viewer}")
        await page.wait_for_function(  # the chart starts with the samples recorded before the restart
            "n => Number((document.getElementById('site-chart') || {dataset: {}}).dataset.points || 0) >= n",
            arg=8, timeout=10_000)
        powers = await page.evaluate("() => window.evfleetDashboard.history.get('depot').map(p => p[1])")
        assert max(powers) > 1  # the charging car of the first run is in the history
        await page.select_option("#site-select", "default")  # a site with no limit of its own
        await page.wait_for_selector("#site-limit-note:not([hidden])", timeout=10_000)
        assert await page.text_content("#site-limit-note") == "no limit set (planned with default 100 kW)"
        assert await page.text_content("#site-limit") == "100.0"
        await page.screenshot(path=str(artifacts_dir / "dashboard-site-without-limit.png"))


async def _samples(redis: Any, n: int) -> bool:
    return int(await redis.zcard(KEYS.site_power("depot"))) >= n
