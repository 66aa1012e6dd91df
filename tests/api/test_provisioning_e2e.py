"""A station created through the API connects to a running csms with the password the API
showed once, and only with it (real csms node, real Redis, real WebSocket handshake)."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.api.harness import live_csms
from tests.csms.helpers import RawStation
from tests.waiting import until


async def test_station_created_by_the_api_connects_with_its_shown_password(redis_url: str) -> None:
    async with live_csms(redis_url, []) as live, httpx.AsyncClient(base_url=live.api_url) as http:
        operator = {"Authorization": f"Bearer {live.operator}"}

        async def api_up() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(api_up, 10)
        r = await http.post(
            "/api/v1/stations", json={"station_id": "CS-API", "site_id": "depot"}, headers=operator
        )
        assert r.status_code == 201, r.text
        password = r.json()["password"]
        with pytest.raises(InvalidStatus) as refused:
            await RawStation.connect(live.node.url, "CS-API", "wrong-password-123")
        assert refused.value.response.status_code == 401
        station = await RawStation.connect(live.node.url, "CS-API", password)

        async def online() -> bool:
            doc = (await http.get("/api/v1/stations/CS-API", headers=operator)).json()
            return bool(doc["online"])

        await until(online, 10)
        await station.ws.close()
        r = await http.patch("/api/v1/stations/CS-API", json={"new_password": True}, headers=operator)
        assert r.status_code == 200, r.text
        new_password = r.json()["password"]
        with pytest.raises(InvalidStatus) as refused:
            await RawStation.connect(live.node.url, "CS-API", password)
        assert refused.value.response.status_code == 401
        station = await RawStation.connect(live.node.url, "CS-API", new_password)
        await station.ws.close()
