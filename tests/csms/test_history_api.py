"""Transaction history through a live csms node: two stations' sessions stored from real
TransactionEvents, searched by station, id token and time, priced, and exported as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from csms.app import running_csms
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation
from tests.waiting import until

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def _at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _event(seq: int, kind: str, minutes: float, energy_wh: float, power_w: float,
           token: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": kind, "timestamp": _at(minutes), "seqNo": seq,
        "triggerReason": "CablePluggedIn" if kind == "Started" else "EVCommunicationLost",
        "transactionInfo": {"transactionId": "T1"}, "idToken": {"idToken": token, "type": "ISO14443"},
        "meterValue": [{"timestamp": _at(minutes), "sampledValue": [
            {"value": energy_wh, "measurand": "Energy.Active.Import.Register",
             "unitOfMeasure": {"unit": "Wh"}},
            {"value": power_w, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}}]}]}
    if kind == "Started":
        payload["evse"] = {"id": 1, "connectorId": 1}
    return payload


async def test_history_filters_costs_and_csv(redis_url: str,
                                             provision: Callable[..., Awaitable[None]]) -> None:
    await provision("CS-H1")
    await provision("CS-H2")
    settings = make_settings(redis_url, api_enabled=True, api_port=0, api_auth=False, api_host="127.0.0.1",
                             accept_all_tokens=True)
    async with running_csms(settings, services=["csms.api.service:run"]) as node:
        api = f"http://127.0.0.1:{node.ctx.api_port}/api/v1"
        async with httpx.AsyncClient(base_url=api, timeout=10) as client:
            await until(lambda: _up(client), 15, "the operator API serves")
            prices = {"start": T0.isoformat(), "step_minutes": 60,
                      "import_price": [0.1, 0.3, 0.2] + [0.2] * 21}
            assert (await client.put("/sites/default/prices", json=prices)).status_code == 200
            for sid, token, start in (("CS-H1", "CARD-A", 30), ("CS-H2", "CARD-B", 300)):
                st = await RawStation.connect(node.url, sid, PASSWORD)
                await st.ok("TransactionEvent", _event(0, "Started", start, 0, 20_000, token))
                await st.ok("TransactionEvent", _event(1, "Ended", start + 60, 10_000, 5_000, token))
                await st.close()
            page = (await client.get("/transactions", params={"station_id": "CS-H1"})).json()
            assert page["total"] == 1
            row = page["items"][0]
            assert row["transaction_id"] == "T1" and row["id_token"] == "CARD-A" and row["live"] is False
            assert row["energy_kwh"] == 10.0 and isinstance(row["energy_kwh"], float)
            assert abs(row["cost"] - 2.0) < 1e-6  # 5 kWh at 0.1, 5 kWh at 0.3
            assert abs(row["uncontrolled_cost"] - 1.0) < 1e-6  # at 20 kW: done by 01:00, all at 0.1
            by_token = (await client.get("/transactions", params={"id_token": "CARD-B"})).json()
            assert [r["station_id"] for r in by_token["items"]] == ["CS-H2"]
            late = {"from": _at(240)}
            recent = (await client.get("/transactions", params=late)).json()["items"]
            assert [r["station_id"] for r in recent] == ["CS-H2"]
            both = (await client.get("/transactions")).json()
            assert [r["station_id"] for r in both["items"]] == ["CS-H2", "CS-H1"]  # newest start first
            export = await client.get("/transactions.csv", params=late)
            assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(export.text)))
            assert len(rows) == 1 and rows[0]["station_id"] == "CS-H2"
            assert float(rows[0]["cost"]) == (await client.get("/transactions", params=late)).json()[
                "items"][0]["cost"]
            bad = await client.get("/transactions", params={"from": _at(300), "to": _at(10)})
            assert bad.status_code == 422 and "after" in bad.text
            assert (await client.get("/transactions", params={"from": "yesterday"})).status_code == 422
            twice = await client.get("/transactions?station_id=CS-H1&station_id=CS-H2")
            assert twice.status_code == 422 and "more than once" in twice.text


async def _up(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/whoami")).status_code == 200
    except httpx.HTTPError:
        return False
