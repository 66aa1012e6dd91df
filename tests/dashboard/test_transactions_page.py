"""The dashboard's transactions page in headless Chromium: finished sessions with energy and cost,
filtered and sorted, and a CSV export equal to the API's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from csms.store.provisioning import provision_station
from tests.api.harness import KEYS, PASSWORD, live_csms
from tests.csms.helpers import RawStation
from tests.csms.test_history_api import T0, _event
from tests.dashboard.test_dashboard import browser, pytestmark  # noqa: F401  (fixture, markers)
from tests.waiting import until


async def test_transactions_page_lists_filters_sorts_and_exports(redis_url: str, browser: Any,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    async with live_csms(redis_url, ()) as live:
        for sid in ("CS-T1", "CS-T2"):
            await provision_station(live.redis, KEYS, sid, PASSWORD, site_id="depot", iterations=1000)
        operator = {"Authorization": f"Bearer {live.operator}"}
        async with httpx.AsyncClient(base_url=live.api_url, timeout=10) as api:
            prices = {"start": T0.isoformat(), "step_minutes": 60, "import_price": [0.1, 0.3] + [0.2] * 22}
            stored = await api.put("/api/v1/sites/depot/prices", json=prices, headers=operator)
            assert stored.status_code == 200
            visits = (("CS-T1", "CARD-A", 30, 10_000), ("CS-T2", "CARD-B", 300, 4_000))
            for sid, token, start, energy in visits:
                st = await RawStation.connect(live.node.url, sid, PASSWORD)
                await st.ok("TransactionEvent", _event(0, "Started", start, 0, 20_000, token))
                await st.ok("TransactionEvent", _event(1, "Ended", start + 60, energy, 5_000, token))
                await st.close()
            api_csv = (await api.get("/api/v1/transactions.csv", params={"station_id": "CS-T1"},
                                     headers=operator)).text

        page = await browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        await page.goto(f"{live.api_url}/#token={live.viewer}")  # signs in (token kept for this tab)
        await page.click("nav >> text=Transactions")
        await page.wait_for_selector("#tx-table tbody tr >> nth=1", timeout=10_000)
        rows = await page.eval_on_selector_all("#tx-table tbody tr", "rs => rs.map(r => r.dataset.tx)")
        assert rows == ["CS-T2:T1", "CS-T1:T1"]  # newest first; both stations' "T1" are listed
        await page.click('#tx-table th[data-key="energy_kwh"]')  # sort by energy, largest first
        rows = await page.eval_on_selector_all("#tx-table tbody tr", "rs => rs.map(r => r.dataset.tx)")
        assert rows == ["CS-T1:T1", "CS-T2:T1"]
        await page.fill("#f-station", "CS-T1")
        await page.click("#tx-filter button[type=submit]")
        await until(lambda: _rows(page, 1), 10, "the filtered table")
        cells = await page.eval_on_selector_all('#tx-table tbody tr td', "ts => ts.map(t => t.textContent)")
        assert "10.00" in cells and "2.00" in cells and "1.00" in cells and "CARD-A" in cells
        async with page.expect_download() as download_info:
            await page.click("#tx-csv")
        download = await download_info.value
        saved = tmp_path / "export.csv"
        await download.save_as(saved)
        assert saved.read_text() == api_csv  # the export is the API's CSV for the same filter
        assert errors == []


async def _rows(page: Any, count: int) -> bool:
    return len(await page.query_selector_all("#tx-table tbody tr")) == count
