"""End to end over TCP: a real csms node with simulated stations, the API on uvicorn, real calls."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from evfleet.keys import tx_ref
from tests.api.harness import KEYS, live_csms
from tests.waiting import until


async def test_api_over_tcp_shows_stations_sessions_and_acts_on_real_stations(redis_url: str) -> None:
    async with live_csms(redis_url, ["CS-1", "CS-2"]) as live:
        viewer = {"Authorization": f"Bearer {live.viewer}"}
        operator = {"Authorization": f"Bearer {live.operator}"}
        async with httpx.AsyncClient(base_url=live.api_url, timeout=20) as http:
            page = (await http.get("/api/v1/stations", headers=viewer)).json()
            assert [s["station_id"] for s in page["items"]] == ["CS-1", "CS-2"]
            assert all(s["online"] and s["vendor"] == "evfleet" for s in page["items"])

            tx_id = live.stations[0].plug_in(1, live.ev(hours=5))
            ref = tx_ref("CS-1", tx_id)
            await until(lambda: live.redis.sismember(KEYS.transactions_active(), ref))

            async def charging() -> bool:
                r = await http.get(f"/api/v1/sessions/CS-1/{tx_id}", headers=viewer)
                return r.status_code == 200 and (r.json()["power_kw"] or 0) > 1

            await until(charging, 10)
            session = (await http.get(f"/api/v1/sessions/CS-1/{tx_id}", headers=viewer)).json()
            assert session["live"] and session["station_id"] == "CS-1" and session["evse_id"] == 1
            assert session["energy_needed_kwh"] and session["departure_time"]
            site = (await http.get("/api/v1/sites/depot", headers=viewer)).json()
            assert site["power_kw"] > 1 and site["active_sessions"] == 1 and site["limit_kw"] == 60.0
            station = (await http.get("/api/v1/stations/CS-1", headers=viewer)).json()
            assert station["status"] == "Charging"

            # a real call through the command protocol to the simulated station
            r = await http.post("/api/v1/stations/CS-2/trigger", json={"requested_message": "Heartbeat"},
                                headers=operator)
            assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
            r = await http.post(f"/api/v1/sessions/CS-1/{tx_id}/stop", headers=operator)
            assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
            await until(lambda: _field_is(live.redis, KEYS.transaction(ref), "state", "Ended"), 10)

            # a station that went away: 409 with a clear body
            live.stations[1].stop()
            await until(lambda: _offline(live.redis, "CS-2"), 10)
            r = await http.post("/api/v1/stations/CS-2/reset", json={}, headers=operator)
            assert r.status_code == 409
            assert r.json()["error"]["code"] == "station_offline"
            assert "CS-2 is offline" in r.json()["error"]["message"]


async def _field_is(redis: Redis, key: str, field: str, value: str) -> bool:
    return bool(await redis.hget(key, field) == value)


async def _offline(redis: Redis, sid: str) -> bool:
    return await _field_is(redis, KEYS.station(sid), "online", "0")
