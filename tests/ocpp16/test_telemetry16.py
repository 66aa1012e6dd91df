"""Operators see a 1.6J station like a 2.0.1 one: MQTT telemetry (real Mosquitto) and the operator API."""

from __future__ import annotations

import json

import httpx

from evfleet.keys import tx_ref
from evse_sim.ocpp16_link import tx16
from tests.api.harness import live_csms
from tests.conftest import MqttBroker
from tests.telemetry.test_mqtt_broker import _prefix, watch
from tests.waiting import until


async def test_a_16_station_on_mqtt_and_the_api(redis_url: str, mqtt_broker: MqttBroker) -> None:
    prefix = _prefix()
    async with watch(mqtt_broker.port, f"{prefix}/#") as w, live_csms(
            redis_url, ["CS16-1"], services=["csms.telemetry.service:run", "csms.api.service:run"],
            mqtt_url=mqtt_broker.url, mqtt_topic_prefix=prefix, ocpp_version="1.6",
            accept_all_tokens=True) as live:
        station = live.stations[0]
        sim_tx = station.plug_in(1, live.ev(hours=4))
        txid = str(await until(lambda: tx16(station).ids.get(sim_tx), 10, what="transactionId assigned"))

        def charging() -> bool:
            doc = w.last(f"{prefix}/sessions/CS16-1/{txid}")
            return bool(doc) and (json.loads(doc or "{}").get("power_kw") or 0) > 1

        await until(charging, 15, what="the 1.6 session's power on MQTT")
        status = json.loads(w.last(f"{prefix}/stations/CS16-1/status") or "{}")
        assert status["online"] is True and status["evses"][0]["transaction_id"] == txid
        await until(lambda: float(w.last(f"{prefix}/sites/depot/power_kw") or 0) > 1, 15, what="site power")
        async with httpx.AsyncClient(base_url=live.api_url,
                                     headers={"Authorization": f"Bearer {live.viewer}"}) as api:
            doc = (await api.get("/api/v1/stations/CS16-1")).json()
            assert doc["ocpp_version"] == "1.6" and doc["vendor"] == "evfleet"
            sessions = (await api.get("/api/v1/sessions", params={"station_id": "CS16-1"})).json()
            items = sessions["items"] if isinstance(sessions, dict) else sessions
            ref = tx_ref("CS16-1", txid)
            assert any(s["transaction_id"] == txid and s["tx_ref"] == ref for s in items), items
