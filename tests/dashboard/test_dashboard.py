"""The dashboard in headless Chromium against a running csms with simulated stations."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.harness import live_csms

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason="Debian chromium not installed at /usr/bin/chromium (scripts/setup.sh --dev)"),
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Debian Chromium through Playwright (never `playwright install`)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def test_dashboard_shows_stations_and_updates_live(redis_url: str, browser: Any,
                                                         artifacts_dir: Path) -> None:
    async with live_csms(redis_url, ["CS-1", "CS-2", "CS-3"]) as live:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # the strict Content-Security-Policy must not block anything the dashboard does
        page.on("console", lambda msg: errors.append(msg.text)
                if msg.type == "error" and "Content Security Policy" in msg.text else None)
        await page.goto(f"{live.api_url}/#token={live.viewer}")
        for sid in ("CS-1", "CS-2", "CS-3"):
            await page.wait_for_selector(f'.tile[data-sid="{sid}"].s-Available', timeout=10_000)
        assert "token=" not in page.url  # the token is dropped from the address bar
        await page.wait_for_selector("#conn.on", timeout=10_000)
        assert await page.text_content("#who") == "viewer (viewer)"
        assert await page.is_hidden("#limit-form")  # operator-only controls hidden for a viewer
        await page.evaluate("window.__noReload = 42")
        before = await page.text_content("#site-power")

        tx_id = live.stations[1].plug_in(1, live.ev(hours=3))
        await page.wait_for_selector('.tile[data-sid="CS-2"].s-Charging', timeout=15_000)
        ref = f"CS-2:{tx_id}"  # the session's tx_ref: a transactionId is unique only within its station
        await page.wait_for_selector(f'#session-table tr[data-tx="{ref}"]', timeout=15_000)
        await page.wait_for_function(
            "() => parseFloat(document.getElementById('site-power').textContent) > 1", timeout=15_000)
        assert await page.evaluate("window.__noReload") == 42  # updated in place, no reload
        after = await page.text_content("#site-power")
        assert before != after
        await page.wait_for_selector("#events li", timeout=10_000)
        await page.screenshot(path=str(artifacts_dir / "dashboard-overview.png"), full_page=True)
        # the site chart (uPlot): a tooltip at the cursor, drag to zoom, double-click to reset
        over = await page.query_selector("#site-chart .u-over")
        assert over is not None
        box = await over.bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        await page.wait_for_selector("#site-chart .chart-tooltip:not([hidden])", timeout=5_000)
        assert "power" in (await page.text_content("#site-chart .chart-tooltip") or "")
        span = "() => { const u = document.getElementById('site-chart')._evchart.u; " \
               "return u.scales.x.max - u.scales.x.min; }"
        full = await page.evaluate(span)
        await page.mouse.down()
        await page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=5)
        await page.mouse.up()
        assert await page.evaluate(span) < full * 0.5  # zoomed in on the dragged range
        await page.mouse.dblclick(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
        assert abs(await page.evaluate(span) - full) < full * 0.2  # back to the whole range

        await page.click(f'#session-table tr[data-tx="{ref}"]')
        await page.wait_for_selector("#session-view:not([hidden])")
        await page.wait_for_function(
            f"() => document.getElementById('xv-id').textContent === '{tx_id}'", timeout=10_000)
        await page.screenshot(path=str(artifacts_dir / "dashboard-session.png"), full_page=True)
        await page.goto(f"{live.api_url}/#/station/CS-2")
        await page.wait_for_function("() => document.getElementById('sv-id')?.textContent === 'CS-2'",
                                     timeout=10_000)
        assert "Occupied" in (await page.text_content("#sv-evses")) or "Charging" in (
            await page.text_content("#sv-status"))
        await page.screenshot(path=str(artifacts_dir / "dashboard-station.png"), full_page=True)
        assert errors == []
        assert (artifacts_dir / "dashboard-overview.png").stat().st_size > 10_000


async def test_dashboard_asks_for_a_token(redis_url: str, browser: Any) -> None:
    async with live_csms(redis_url, ["CS-9"]) as live:
        page = await browser.new_page()
        await page.goto(live.api_url + "/")
        await page.wait_for_selector("#login:not([hidden])", timeout=10_000)
        await page.fill("#token-input", "wrong")
        await page.click("#login-form button")
        await page.wait_for_function(
            "() => document.getElementById('login-error').textContent.includes('token')")
        await page.fill("#token-input", live.operator)
        await page.click("#login-form button")
        await page.wait_for_selector('.tile[data-sid="CS-9"]', timeout=10_000)
        assert await page.is_visible("#limit-form")  # operator sees the controls


async def test_dashboard_with_1000_stations_stays_usable(redis_url: str, browser: Any,
                                                         artifacts_dir: Path) -> None:
    """1,000 seeded stations: paged grid, counts over all, a burst of 1,000 status events lands
    in place and the page keeps answering quickly."""
    import time
    from datetime import UTC, datetime

    import uvicorn  # noqa: F401  (served by the csms API service below)
    from redis.asyncio import Redis

    from csms.api.tokens import TokenStore
    from evfleet.clock import RealClock
    from evfleet.keys import Keys
    from tests.dashboard.fleet import seed_fleet, status_burst

    keys = Keys("evfleet")
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        now = datetime.now(UTC)
        refs = await seed_fleet(redis, keys, 1000, now)
        token, _ = await TokenStore(redis, keys, RealClock()).create("ops", "operator")
        async with _api_only(redis_url) as api_url:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            t0 = time.monotonic()
            await page.goto(f"{api_url}/#token={token}")
            await page.wait_for_selector('.tile[data-sid="CS-0000"]', timeout=20_000)
            load_s = time.monotonic() - t0
            assert await page.locator("#station-grid .tile").count() == 200  # paged, not 1,000 nodes
            assert "all 1000" in (await page.text_content("#status-chips") or "")
            # ~1,200 live sessions that all use transactionIds "1" and "2": every one is listed
            await page.wait_for_function(
                f"() => document.getElementById('session-total').textContent === '{len(refs)}'",
                timeout=10_000)
            await page.wait_for_selector("#conn.on", timeout=10_000)
            ids = [f"CS-{i:04d}" for i in range(1000)]
            await status_burst(redis, keys, ids, "Faulted", datetime.now(UTC))
            await page.wait_for_function(
                "() => document.querySelectorAll('#station-grid .tile.s-Faulted').length >= 190",
                timeout=20_000)
            t1 = time.monotonic()
            await page.evaluate("1 + 1")
            assert time.monotonic() - t1 < 1.0  # main thread not stuck
            assert load_s < 15
            await page.screenshot(path=str(artifacts_dir / "dashboard-1000-stations.png"))
            assert errors == []
    finally:
        await redis.aclose()


def _api_only(redis_url: str) -> Any:
    """The csms API service alone (no OCPP traffic needed) on a free port."""
    import contextlib

    from csms.app import running_csms
    from csms.settings import CsmsSettings

    @contextlib.asynccontextmanager
    async def run() -> Any:
        settings = CsmsSettings(redis_url=redis_url, host="127.0.0.1", port=0, node_id="scale-node",
                                api_host="127.0.0.1", api_port=0, smart_charging=False)
        async with running_csms(settings, services=["csms.api.service:run"]) as node:
            from tests.waiting import until
            await until(lambda: node.ctx.api_port, 10)
            yield f"http://127.0.0.1:{node.ctx.api_port}"

    return run()


async def test_openapi_docs_render_offline(redis_url: str, browser: Any) -> None:
    """/docs works without internet: Swagger UI comes from the installed package, not a CDN."""
    async with _api_only(redis_url) as api_url:
        page = await browser.new_page()
        outside: list[str] = []
        page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(api_url) else None)
        await page.goto(f"{api_url}/docs")
        await page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
        assert "evfleet operator API" in (await page.text_content(".swagger-ui .info .title") or "")
        await page.wait_for_selector("text=RequestStartTransaction", timeout=10_000)
        assert outside == []


async def test_a_car_held_at_0_kw_by_its_plan_says_so_on_its_tile(redis_url: str, browser: Any) -> None:
    """Issue 15: a charging station whose applied limit is 0 reads 'Held back by plan (0 kW, resumes
    HH:MM)' (the plan's next step with power), not 'Charging'."""
    import json
    from datetime import UTC, datetime, timedelta

    from redis.asyncio import Redis

    from csms.api.tokens import TokenStore
    from evfleet.clock import RealClock
    from evfleet.keys import Keys, tx_ref
    from tests.api.conftest import seed_session, seed_station

    keys = Keys("evfleet")
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        for sid in ("CS-RUN", "CS-HELD"):
            await seed_station(redis, sid)
            await seed_session(redis, "7", sid)
        start = datetime.now(UTC) - timedelta(seconds=60)
        ref = tx_ref("CS-HELD", "7")
        await redis.set(keys.planned_schedule("CS-HELD", 1), json.dumps({
            "plan_id": "p2", "site_id": "depot", "tx_ref": ref, "start": start.isoformat(), "step_s": 900,
            "limits_kw": [0.0, 0.0, 7.0, 7.0], "strategy": "cost", "status": "optimal"}))
        await redis.set(keys.applied_profile("CS-HELD", 1), json.dumps({
            "plan_id": "p2", "transaction_id": "7", "tx_ref": ref, "status": "Accepted",
            "sent_at": start.isoformat(), "limit_w": 0}))
        resumes = (start + timedelta(seconds=1800)).strftime("%H:%M")
        token, _ = await TokenStore(redis, keys, RealClock()).create("ops", "viewer")
        async with _api_only(redis_url) as api_url:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{api_url}/#token={token}")
            held = page.locator('.tile[data-sid="CS-HELD"] .st')
            await page.wait_for_function(
                "() => ((document.querySelector('.tile[data-sid=\"CS-HELD\"] .st') || {}).textContent"
                " || '').startsWith('Held')", timeout=15_000)
            assert await held.text_content() == f"Held back by plan (0 kW, resumes {resumes})"
            assert await page.locator('.tile[data-sid="CS-RUN"] .st').text_content() == "Charging"
            assert errors == []
    finally:
        await redis.aclose()
