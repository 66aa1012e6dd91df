"""The simulator against a CSMS that is not ours: a tiny one made of the `ocpp` v201 API + websockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection

from csms.store.embedded import free_port
from evfleet.clock import ScaledClock
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.hlc import BasicHlc
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.waiting import until

SPEED = 60.0  # one simulated minute per real second
PASSWORD = "s3cret-password"


class TinyCsms(ChargePoint):
    """Records every message a station sends; answers like a permissive CSMS."""

    def __init__(self, sid: str, ws: ServerConnection, log: list[tuple[str, dict[str, Any]]]) -> None:
        super().__init__(sid, ws)
        self.log = log

    @on(Action.boot_notification)
    def boot(self, **kw: Any) -> call_result.BootNotification:
        self.log.append(("BootNotification", kw))
        return call_result.BootNotification(
            current_time=datetime.now(UTC).isoformat(), interval=600, status="Accepted"
        )

    @on(Action.status_notification)
    def status(self, **kw: Any) -> call_result.StatusNotification:
        self.log.append(("StatusNotification", kw))
        return call_result.StatusNotification()

    @on(Action.heartbeat)
    def heartbeat(self, **kw: Any) -> call_result.Heartbeat:
        self.log.append(("Heartbeat", kw))
        return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())

    @on(Action.transaction_event)
    def tx_event(self, **kw: Any) -> call_result.TransactionEvent:
        self.log.append(("TransactionEvent", kw))
        return call_result.TransactionEvent()

    @on(Action.meter_values)
    def meter(self, **kw: Any) -> call_result.MeterValues:
        self.log.append(("MeterValues", kw))
        return call_result.MeterValues()

    @on(Action.notify_report)
    def report(self, **kw: Any) -> call_result.NotifyReport:
        self.log.append(("NotifyReport", kw))
        return call_result.NotifyReport()

    @on(Action.report_charging_profiles)
    def profiles(self, **kw: Any) -> call_result.ReportChargingProfiles:
        self.log.append(("ReportChargingProfiles", kw))
        return call_result.ReportChargingProfiles()

    @on(Action.notify_ev_charging_needs)
    def needs(self, **kw: Any) -> call_result.NotifyEVChargingNeeds:
        self.log.append(("NotifyEVChargingNeeds", kw))
        return call_result.NotifyEVChargingNeeds(status="Accepted")


class Server:
    """The tiny CSMS's WebSocket server; `points` holds the connected ChargePoint per station."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.points: dict[str, TinyCsms] = {}
        self.auth_seen: list[str] = []
        self.csms_class: type[TinyCsms] = TinyCsms
        self._server: Any = None

    async def _handler(self, ws: ServerConnection) -> None:
        sid = ws.request.path.rsplit("/", 1)[-1] if ws.request else "?"
        cp = self.csms_class(sid, ws, self.log)
        self.points[sid] = cp
        with contextlib.suppress(websockets.ConnectionClosed):
            await cp.start()

    def _check_auth(self, conn: ServerConnection, request: Any) -> Any:
        header = request.headers.get("Authorization", "")
        self.auth_seen.append(header)
        sid = request.path.rsplit("/", 1)[-1]
        expected = "Basic " + base64.b64encode(f"{sid}:{PASSWORD}".encode()).decode()
        if header != expected:
            return conn.respond(401, "bad credentials\n")
        return None

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self._server = await websockets.serve(
            self._handler,
            "127.0.0.1",
            self.port,
            subprotocols=[websockets.Subprotocol("ocpp2.0.1")],
            process_request=self._check_auth,
            ssl=ssl_ctx,
        )

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        self.points.clear()

    def of(self, action: str) -> list[dict[str, Any]]:
        return [kw for a, kw in self.log if a == action]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server(free_port())
    await srv.start()
    yield srv
    await srv.stop()


def make_station(
    port: int,
    clock: ScaledClock,
    evses: tuple[EvseSpec, ...] = (EvseSpec.ac(11.0),),
    password: str = PASSWORD,
) -> SimStation:
    cfg = StationConfig("SIM-1", evses, tx_updated_interval_s=60, aligned_interval_s=300)
    conn = ConnectionConfig(
        f"ws://127.0.0.1:{port}/ocpp",
        password=password,
        backoff_base_s=0.05,
        backoff_max_s=0.3,
        response_timeout_s=5,
    )
    import random

    return SimStation(cfg, conn, clock, hlc=BasicHlc(), rng=random.Random(7))


def ev_spec(clock: ScaledClock, hlc: bool = False, hours: float = 8) -> EvSpec:
    now = clock.now()
    return EvSpec(
        "EV-1", "TESLA MODEL 3", 57.5, 0.3, 0.9, 11.0, 150.0, now, now + timedelta(hours=hours), hlc=hlc
    )


def meter_power_w(event: dict[str, Any]) -> float:
    for mv in event.get("meter_value") or []:
        for sv in mv["sampled_value"]:
            if sv.get("measurand") == "Power.Active.Import":
                return float(sv["value"])
    raise AssertionError("no power in event")


async def test_boot_session_profile_and_queries(server: Server) -> None:
    clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=SPEED)
    station = make_station(server.port, clock)
    runner = asyncio.create_task(station.run(tick_s=5.0))
    try:
        await until(lambda: station.online)
        assert server.auth_seen[-1].startswith("Basic ")
        boot = server.of("BootNotification")[0]
        assert boot["reason"] == "PowerUp" and boot["charging_station"]["vendor_name"] == "evfleet"
        await until(
            lambda: any(s["connector_status"] == "Available" for s in server.of("StatusNotification"))
        )
        assert station.heartbeat_s == 600

        station.plug_in(1, Ev(ev_spec(clock, hlc=True)))
        await until(lambda: len(server.of("NotifyEVChargingNeeds")) == 1)
        started = server.of("TransactionEvent")[0]
        assert started["event_type"] == "Started" and started["seq_no"] == 0
        assert started["trigger_reason"] == "CablePluggedIn"
        tx_id = started["transaction_info"]["transaction_id"]
        needs = server.of("NotifyEVChargingNeeds")[0]
        assert needs["charging_needs"]["requested_energy_transfer"] == "AC_three_phase"
        assert needs["charging_needs"]["ac_charging_parameters"]["energy_amount"] > 30_000
        # the EV charges at its 11 kW maximum
        await until(
            lambda: any(
                e["transaction_info"].get("charging_state") == "Charging"
                for e in server.of("TransactionEvent")
            )
        )
        assert station.evses[1].power_w == pytest.approx(11_000)

        cp = server.points["SIM-1"]
        profile = {
            "id": 5,
            "stack_level": 0,
            "charging_profile_purpose": "TxProfile",
            "charging_profile_kind": "Relative",
            "transaction_id": tx_id,
            "charging_schedule": [
                {
                    "id": 1,
                    "charging_rate_unit": "A",
                    "charging_schedule_period": [{"start_period": 0, "limit": 6.0}],
                }
            ],
        }
        res = await cp.call(call.SetChargingProfile(evse_id=1, charging_profile=profile), suppress=False)
        assert res.status == "Accepted"
        sent_at = len(server.of("TransactionEvent"))
        # within one meter interval (60 s simulated = 1 s real) the reported power follows the limit
        await until(
            lambda: any(
                meter_power_w(e) <= 6 * 230 * 3 + 1
                for e in server.of("TransactionEvent")[sent_at:]
                if e.get("meter_value")
            ),
            timeout_s=1.5,
        )
        assert station.evses[1].power_w == pytest.approx(6 * 230 * 3)

        comp = await cp.call(
            call.GetCompositeSchedule(duration=3600, evse_id=1, charging_rate_unit="W"), suppress=False
        )
        assert comp.status == "Accepted"
        assert comp.schedule["charging_schedule_period"][0]["limit"] == pytest.approx(4140.0)

        bad = dict(profile, id=6, transaction_id="not-running")
        res = await cp.call(call.SetChargingProfile(evse_id=1, charging_profile=bad), suppress=False)
        assert res.status == "Rejected" and res.status_info["reason_code"] == "TxNotFound"

        got = await cp.call(call.GetChargingProfiles(request_id=9, charging_profile={}), suppress=False)
        assert got.status == "Accepted"
        await until(lambda: len(server.of("ReportChargingProfiles")) == 1)
        assert server.of("ReportChargingProfiles")[0]["charging_profile"][0]["id"] == 5

        var = await cp.call(
            call.SetVariables(
                set_variable_data=[
                    {
                        "component": {"name": "SampledDataCtrlr"},
                        "variable": {"name": "TxUpdatedInterval"},
                        "attribute_value": "120",
                    }
                ]
            ),
            suppress=False,
        )
        assert var.set_variable_result[0]["attribute_status"] == "Accepted" and station.tx_updated_s == 120
        ro = await cp.call(
            call.SetVariables(
                set_variable_data=[
                    {
                        "component": {"name": "SecurityCtrlr"},
                        "variable": {"name": "Identity"},
                        "attribute_value": "x",
                    }
                ]
            ),
            suppress=False,
        )
        assert ro.set_variable_result[0]["attribute_status"] == "Rejected"
        read = await cp.call(
            call.GetVariables(
                get_variable_data=[
                    {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
                    {"component": {"name": "Nope"}, "variable": {"name": "X"}},
                ]
            ),
            suppress=False,
        )
        assert read.get_variable_result[0]["attribute_value"] == "600"
        assert read.get_variable_result[1]["attribute_status"] == "UnknownComponent"
        # heartbeats follow the interval the CSMS sets: 30 s simulated = 0.5 s real
        hb = await cp.call(
            call.SetVariables(
                set_variable_data=[
                    {
                        "component": {"name": "OCPPCommCtrlr"},
                        "variable": {"name": "HeartbeatInterval"},
                        "attribute_value": "30",
                    }
                ]
            ),
            suppress=False,
        )
        assert hb.set_variable_result[0]["attribute_status"] == "Accepted"
        beats = len(server.of("Heartbeat"))
        await until(lambda: len(server.of("Heartbeat")) >= beats + 3, timeout_s=3.0)
        rep = await cp.call(call.GetBaseReport(request_id=3, report_base="FullInventory"), suppress=False)
        assert rep.status == "Accepted"
        await until(lambda: len(server.of("NotifyReport")) >= 1)

        cleared = await cp.call(call.ClearChargingProfile(charging_profile_id=5), suppress=False)
        assert cleared.status == "Accepted"
        unlock = await cp.call(call.UnlockConnector(evse_id=1, connector_id=1), suppress=False)
        assert unlock.status == "OngoingAuthorizedTransaction"
        stop = await cp.call(call.RequestStopTransaction(transaction_id=tx_id), suppress=False)
        assert stop.status == "Accepted"
        await until(lambda: any(e["event_type"] == "Ended" for e in server.of("TransactionEvent")))
        ended = [e for e in server.of("TransactionEvent") if e["event_type"] == "Ended"][0]
        assert ended["transaction_info"]["stopped_reason"] == "Remote"
        seqs = [e["seq_no"] for e in server.of("TransactionEvent")]
        assert seqs == list(range(len(seqs)))
    finally:
        station.stop()
        await asyncio.wait_for(runner, 5)


async def test_offline_queue_replayed_in_order_after_reconnect(server: Server) -> None:
    clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=4 * SPEED)
    station = make_station(server.port, clock)
    runner = asyncio.create_task(station.run(tick_s=5.0))
    try:
        await until(lambda: station.online)
        station.plug_in(1, Ev(ev_spec(clock, hours=0.25)))
        await until(lambda: len(server.of("TransactionEvent")) >= 2)
        await server.stop()  # the CSMS goes away
        await until(lambda: not station.online)
        # 15 simulated minutes pass offline: periodic updates, then the EV departs (Ended)
        await until(lambda: station.evses[1].ev is None, timeout_s=10)
        assert station.queued_transaction_events >= 3
        await server.start()
        await until(lambda: station.online and station.queued_transaction_events == 0, timeout_s=10)
        events = server.of("TransactionEvent")
        seqs = [e["seq_no"] for e in events]
        # at-least-once: the one event in flight when the link dropped may arrive twice (same seqNo,
        # same payload; a CSMS answers the replay idempotently), nothing is lost or reordered
        dups = [e for i, e in enumerate(events) if e["seq_no"] in seqs[:i]]
        assert len(dups) <= 1 and all(d == events[seqs.index(d["seq_no"])] for d in dups)
        unique = list(dict.fromkeys(seqs))
        assert unique == list(range(len(unique))), "no loss, in order"
        assert events[-1]["event_type"] == "Ended"
        offline = [e for e in events if e.get("offline")]
        assert len(offline) >= 3 and station.stats.offline_events_sent == len(offline) - len(
            [d for d in dups if d.get("offline")]
        )
        # the profile-free EV charged at full power while offline too
        assert events[-1]["meter_value"][0]["sampled_value"][0]["value"] > 2000
    finally:
        station.stop()
        await asyncio.wait_for(runner, 5)


async def test_wrong_password_is_refused_and_retried(server: Server) -> None:
    clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=SPEED)
    station = make_station(server.port, clock, password="wrong-password")
    runner = asyncio.create_task(station.run(tick_s=5.0))
    try:
        await until(lambda: station.stats.errors >= 3)
        assert not station.online and not server.of("BootNotification")
        assert "401" in station.stats.last_error
    finally:
        station.stop()
        await asyncio.wait_for(runner, 5)


async def test_remote_start_trigger_availability_and_reset(server: Server) -> None:
    clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=SPEED)
    station = make_station(server.port, clock, evses=(EvseSpec.ac(11.0), EvseSpec.dc(50.0)))
    runner = asyncio.create_task(station.run(tick_s=5.0))
    try:
        await until(lambda: station.online and "SIM-1" in server.points)
        cp = server.points["SIM-1"]
        start = await cp.call(
            call.RequestStartTransaction(
                id_token={"id_token": "TAG-1", "type": "ISO14443"}, remote_start_id=77, evse_id=2
            ),
            suppress=False,
        )
        assert start.status == "Accepted" and start.transaction_id
        await until(lambda: any(e["trigger_reason"] == "RemoteStart" for e in server.of("TransactionEvent")))
        first = server.of("TransactionEvent")[0]
        assert first["transaction_info"]["remote_start_id"] == 77 and first["id_token"]["id_token"] == "TAG-1"
        # the EV arrives later at the remotely started EVSE: same transaction continues
        assert station.plug_in(2, Ev(ev_spec(clock))) == start.transaction_id
        busy = await cp.call(
            call.ChangeAvailability(operational_status="Inoperative", evse={"id": 2}), suppress=False
        )
        assert busy.status == "Scheduled"
        idle = await cp.call(
            call.ChangeAvailability(operational_status="Inoperative", evse={"id": 1}), suppress=False
        )
        assert idle.status == "Accepted"
        await until(
            lambda: any(
                s["evse_id"] == 1 and s["connector_status"] == "Unavailable"
                for s in server.of("StatusNotification")
            )
        )
        trig = await cp.call(
            call.TriggerMessage(requested_message="MeterValues", evse={"id": 2}), suppress=False
        )
        assert trig.status == "Accepted"
        await until(lambda: any(m["evse_id"] == 2 for m in server.of("MeterValues")))
        nope = await cp.call(call.TriggerMessage(requested_message="LogStatusNotification"), suppress=False)
        assert nope.status == "NotImplemented"
        reset = await cp.call(call.Reset(type="Immediate"), suppress=False)
        assert reset.status == "Accepted"
        await until(lambda: any(b["reason"] == "RemoteReset" for b in server.of("BootNotification")))
        # the Ended may still be queued when the link drops for the reboot: it then follows the boot
        await until(lambda: any(e["event_type"] == "Ended" for e in server.of("TransactionEvent")))
        ended = [e for e in server.of("TransactionEvent") if e["event_type"] == "Ended"]
        assert ended[0]["transaction_info"]["stopped_reason"] == "ImmediateReset"
        await until(lambda: station.online)
    finally:
        station.stop()
        await asyncio.wait_for(runner, 5)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_security_profile_2_tls_with_custom_ca(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    srv = Server(free_port())
    await srv.start(ctx)
    clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=SPEED)
    cfg = StationConfig("SIM-TLS", (EvseSpec.ac(11.0),))
    good = SimStation(
        cfg,
        ConnectionConfig(
            f"wss://127.0.0.1:{srv.port}/ocpp",
            password=PASSWORD,
            tls_ca=str(cert),
            backoff_base_s=0.05,
            backoff_max_s=0.2,
        ),
        clock,
    )
    untrusted = SimStation(
        StationConfig("SIM-NOCA", (EvseSpec.ac(11.0),)),
        ConnectionConfig(
            f"wss://127.0.0.1:{srv.port}/ocpp", password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.2
        ),
        clock,
    )
    tasks = [asyncio.create_task(good.run(tick_s=5.0)), asyncio.create_task(untrusted.run(tick_s=5.0))]
    try:
        await until(lambda: good.online and untrusted.stats.errors >= 2)
        assert good.device.get("SecurityCtrlr", "SecurityProfile") == "2"
        assert [b for b in srv.of("BootNotification")] and not untrusted.online
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stats.last_error
    finally:
        good.stop()
        untrusted.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        await srv.stop()


class SloppyCsms(TinyCsms):
    """Answers Heartbeat with a payload that breaks the schema (currentTime must be a string)."""

    @on(Action.heartbeat, skip_schema_validation=True)
    def heartbeat(self, **kw: Any) -> call_result.Heartbeat:
        self.log.append(("Heartbeat", kw))
        return call_result.Heartbeat(current_time=12345)


async def test_invalid_answer_is_counted_and_the_queue_moves_on() -> None:
    srv = Server(free_port())
    srv.csms_class = SloppyCsms
    await srv.start()
    clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=SPEED)
    station = make_station(srv.port, clock)
    runner = asyncio.create_task(station.run(tick_s=5.0))
    try:
        await until(lambda: station.online)
        station.trigger("Heartbeat", None)
        station.plug_in(1, Ev(ev_spec(clock)))
        await until(lambda: len(srv.of("TransactionEvent")) >= 1)
        assert station.stats.errors == 1 and "Heartbeat" in station.stats.last_error
        assert station.stats.connects == 1, "no reconnect loop over a bad answer"
    finally:
        station.stop()
        await asyncio.wait_for(runner, 5)
        await srv.stop()
