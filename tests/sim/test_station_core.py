"""The sans-IO station core without sockets: plug-in, profiles, energy accounting, offline replay.

`StationCore` is driven here the way `SimStation` drives it over a WebSocket: `link_up` /
`link_down` for the connection, `outbox.peek()` + `outbox.answered(...)` for sending.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from ocpp.v201 import call

from evse_sim.core import StationCore
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.smart_charging import ChargingProfile, RateUnit
from evse_sim.station_types import StationConfig
from tests.clocks import ManualClock

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _core(online: bool = True, **cfg: Any) -> tuple[StationCore, ManualClock]:
    clock = ManualClock(T0)
    config = StationConfig("CORE-1", (EvseSpec.ac(11.0),), tx_updated_interval_s=0, heartbeat_s=0,
                           aligned_interval_s=0, **cfg)
    core = StationCore(config, clock, rng=random.Random(7))  # type: ignore[arg-type]
    if online:  # as the driver does: boot until Accepted, then the link is up
        assert core.needs_boot
        assert core.boot_answered(SimpleNamespace(status="Accepted", interval=0, current_time=None)) is None
        core.link_up(clock.now())
        _send_all(core)  # the connect-time StatusNotification
    return core, clock


def _ev(token: str = "", soc: float = 0.2) -> Ev:
    return Ev(EvSpec("EV-1", "m", 60.0, soc, 0.9, 11.0, 50.0, T0, T0 + timedelta(hours=8), id_token=token))


def _send_all(core: StationCore) -> list[Any]:
    """Deliver every queued message, answering each as a CSMS would; return the payloads in order."""
    sent = []
    while (msg := core.outbox.peek()) is not None:
        sent.append(msg.payload)
        core.outbox.answered(msg, SimpleNamespace(id_token_info=None, status="Accepted", current_time=None))
    return sent


def _tx_events(payloads: list[Any]) -> list[Any]:
    return [p for p in payloads if type(p) is call.TransactionEvent]


def _energy(payload: Any) -> float:
    for sv in payload.meter_value[0]["sampled_value"]:
        if sv["measurand"] == "Energy.Active.Import.Register":
            return float(sv["value"])
    raise AssertionError("no energy register")


def _tx_profile(limit_w: float, tx_id: str) -> ChargingProfile:
    return ChargingProfile.from_ocpp({
        "id": 11, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
        "transactionId": tx_id,
        "chargingSchedule": [{"id": 11, "chargingRateUnit": "W", "startSchedule": T0.isoformat(),
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_w}]}],
    })


def test_plug_in_queues_status_then_transaction_started_with_its_fields() -> None:
    core, _clock = _core()
    tx_id = core.plug_in(1, _ev(token="CARD-42"))
    sent = _send_all(core)
    assert [type(p) for p in sent] == [call.StatusNotification, call.TransactionEvent]
    assert sent[0].connector_status == "Occupied" and sent[0].evse_id == 1
    started = sent[1]
    assert started.event_type == "Started"
    assert started.trigger_reason == "CablePluggedIn"
    assert started.seq_no == 0
    assert started.transaction_info == {"transaction_id": tx_id, "charging_state": "EVConnected"}
    assert started.evse == {"id": 1, "connector_id": 1}
    assert started.id_token == {"id_token": "CARD-42", "type": "ISO14443"}
    assert started.offline is None
    assert started.timestamp.startswith("2026-03-02T08:00:00")
    assert started.meter_value[0]["sampled_value"][0]["context"] == "Transaction.Begin"
    assert _energy(started) == 0.0
    assert core.active_transactions() == {1: tx_id}


def test_plug_in_offline_marks_started_offline_and_keeps_it() -> None:
    core, _clock = _core(online=False)
    core.plug_in(1, _ev())
    assert core.queued == core.queued_transaction_events == 1  # StatusNotification is not kept offline
    msg = core.outbox.peek()
    assert msg is not None and msg.persistent and msg.payload.offline is True


def test_the_ev_needs_and_plan_made_offline_are_kept_and_are_not_transaction_messages() -> None:
    # an HLC EV that plugs in before its station is connected negotiates at once: its needs and its
    # own plan are sent once, so both wait for the connection (the plan was dropped: the csms never saw it)
    core, clock = _core(online=False)
    tx_id = core.plug_in(1, _ev())
    core.queue_charging_needs(1, {"requested_energy_transfer": "AC_three_phase"}, None)
    core.queue_ev_charging_schedule(1, {"id": 1, "charging_rate_unit": "W"}, T0)
    assert core.queued == 3 and core.queued_transaction_events == 1
    # E14 GetTransactionStatus looks at TransactionEvents only (the needs have no transaction_info)
    assert core.outbox.holds_transaction(tx_id) and not core.outbox.holds_transaction("other")
    assert core.boot_answered(SimpleNamespace(status="Accepted", interval=0, current_time=None)) is None
    core.link_up(clock.now())
    sent = [type(p) for p in _send_all(core)]
    assert sent.index(call.TransactionEvent) < sent.index(call.NotifyEVChargingNeeds) \
        < sent.index(call.NotifyEVChargingSchedule)
    assert not core.outbox.holds_transaction(tx_id)


def test_power_follows_an_accepted_tx_profile() -> None:
    core, clock = _core()
    tx_id = core.plug_in(1, _ev())
    core.tick(clock.now())
    st = core.evses[1]
    assert st.power_w == pytest.approx(11_000.0)
    assert core.install_profile(1, _tx_profile(4_000.0, tx_id)).accepted
    clock.t += timedelta(seconds=10)
    new = core.tick(clock.now())
    assert st.limit_w == pytest.approx(4_000.0)
    assert st.power_w == pytest.approx(4_000.0) and st.offered_w <= 4_000.0
    rate = [m.payload for m in new if type(m.payload) is call.TransactionEvent]
    assert [p.trigger_reason for p in rate] == ["ChargingRateChanged"]
    comp = core.composite_schedule(1, 600, clock.now())
    assert comp is not None
    assert comp.to_ocpp(RateUnit.W)["chargingSchedulePeriod"][0]["limit"] == pytest.approx(4_000.0)
    assert not core.install_profile(9, _tx_profile(1_000.0, tx_id)).accepted  # unknown EVSE
    assert st.limit_w == pytest.approx(4_000.0)


def test_tick_integrates_energy_at_the_rate_offered_since_the_last_tick() -> None:
    core, clock = _core()
    ev = _ev()
    core.plug_in(1, ev)
    soc0 = ev.battery.soc
    core.tick(clock.now())  # sets the rate: 11 kW
    clock.t += timedelta(minutes=30)
    core.tick(clock.now())
    st = core.evses[1]
    assert st.energy_wh == pytest.approx(5_500.0, rel=1e-6)
    assert ev.battery.soc > soc0
    core.trigger("TransactionEvent", 1)
    updated = _tx_events(_send_all(core))[-1]
    assert updated.trigger_reason == "Trigger" and _energy(updated) == pytest.approx(5_500.0, abs=0.1)
    clock.t += timedelta(minutes=15)
    core.unplug(1)
    ended = _tx_events(_send_all(core))[-1]
    assert ended.event_type == "Ended" and _energy(ended) == pytest.approx(8_250.0, abs=0.1)


def test_reconnect_replays_queued_events_in_order_with_their_seq_no() -> None:
    core, clock = _core()
    tx_id = core.plug_in(1, _ev())
    core.trigger("TransactionEvent", 1)  # Updated, seqNo 1
    sent = _send_all(core)
    assert [p.seq_no for p in _tx_events(sent)] == [0, 1]
    core.trigger("TransactionEvent", 1)  # seqNo 2: in flight when the link drops
    in_flight = core.outbox.peek()
    assert in_flight is not None
    core.outbox.timed_out(in_flight)  # a persistent message stays at the head
    assert core.outbox.peek() is in_flight
    core.link_down()
    clock.t += timedelta(minutes=5)
    core.unplug(1)  # Ended offline, seqNo 3; its StatusNotification is not kept
    assert core.queued == core.queued_transaction_events == 2
    core.link_up(clock.now())
    replay = _send_all(core)
    events = _tx_events(replay)
    assert [(p.event_type, p.seq_no, p.offline) for p in events] == [
        ("Updated", 2, None), ("Ended", 3, True)]
    assert all(p.transaction_info["transaction_id"] == tx_id for p in events)
    assert type(replay[-1]) is call.StatusNotification and replay[-1].connector_status == "Available"
    assert core.stats.offline_events_sent == 1
    assert core.queued == 0


def test_on_idle_reset_waits_for_the_last_transaction_then_reboots_through_the_driver_hooks() -> None:
    core, _clock = _core()
    calls: list[str] = []
    core.on_reset_due = lambda: calls.append("due")
    core.on_reboot = lambda: calls.append("reboot")
    tx_id = core.plug_in(1, _ev())
    _send_all(core)
    assert not core.needs_boot
    assert core.request_reset("OnIdle", None) == "Scheduled"
    assert calls == []
    assert core.remote_stop(tx_id)
    assert calls == ["due"]
    ended = _tx_events(_send_all(core))[-1]
    assert (ended.event_type, ended.trigger_reason, ended.transaction_info["stopped_reason"]) == (
        "Ended", "RemoteStop", "Remote")
    core.perform_pending_reset()
    assert calls == ["due", "reboot"]
    assert core.needs_boot and core.boot_request().reason == "RemoteReset"
    assert core.boot_answered(SimpleNamespace(status="Pending", interval=7, current_time=None)) == 7.0
    assert core.boot_answered(SimpleNamespace(status="Accepted", interval=60, current_time=None)) is None
    assert not core.needs_boot and core.heartbeat_s == 60


def test_a_slow_csms_gets_one_periodic_sample_per_transaction_waiting_not_a_growing_backlog() -> None:
    """Online, a periodic TransactionEvent still queued is not joined by another (the queue stays bounded
    when the CSMS answers slower than TxUpdatedInterval); the next one, once it is out, has all the energy."""
    core, clock = _core()
    core.tx_updated_s = 300
    core.plug_in(1, _ev())
    core.tick(clock.now())
    _send_all(core)
    for _ in range(12):  # an hour of intervals while the CSMS answers nothing
        clock.t += timedelta(minutes=5)
        core.tick(clock.now())
    periodic = [p for p in _tx_events(list(m.payload for m in core.outbox))
                if p.trigger_reason == "MeterValuePeriodic"]
    assert len(periodic) == 1
    assert _energy(periodic[0]) == pytest.approx(11_000.0 * 5 / 60, abs=0.1)
    _send_all(core)
    clock.t += timedelta(seconds=1)
    core.tick(clock.now())
    (latest,) = _tx_events(_send_all(core))
    assert latest.trigger_reason == "MeterValuePeriodic" and _energy(latest) == pytest.approx(
        11_000.0 * (60 * 60 + 1) / 3600, abs=0.1)


def test_offline_every_periodic_sample_is_kept() -> None:
    core, clock = _core()
    core.tx_updated_s = 300
    core.plug_in(1, _ev())
    core.tick(clock.now())  # charging: ChargingStateChanged
    _send_all(core)
    core.link_down()
    for _ in range(4):
        clock.t += timedelta(minutes=5)
        core.tick(clock.now())
    assert sum(1 for m in core.outbox if type(m.payload) is call.TransactionEvent
               and m.payload.trigger_reason == "MeterValuePeriodic") == 4


def test_get_base_report_during_boot_keeps_its_notify_report() -> None:
    """The csms asks for the device model right after its BootNotification answer; the link's reader can
    serve that GetBaseReport before the driver marks the station online (`link_up`). The NotifyReport
    must still go out after the boot: it was dropped as "offline" and the csms planned every demo EVSE
    (11 kW) at its 22 kW default. A station that is really offline still drops what it queues."""
    from evse_sim.ocpp_link import StationLink

    core, clock = _core(online=False)
    link = StationLink(core, SimpleNamespace(), response_timeout_s=1.0)
    assert core.boot_answered(SimpleNamespace(status="Accepted", interval=0, current_time=None)) is None
    link.on_get_base_report(request_id=5, report_base="FullInventory")  # before link_up
    core.queue(call.Heartbeat())  # an ordinary non-persistent message: dropped while offline
    core.link_up(clock.now())
    sent = _send_all(core)
    reports = [p for p in sent if isinstance(p, call.NotifyReport)]
    assert reports and not any(isinstance(p, call.Heartbeat) for p in sent)
    power = [d for p in reports for d in p.report_data or []
             if d["component"]["name"] == "EVSE" and d["variable"]["name"] == "Power"]
    assert [d["variable_characteristics"]["max_limit"] for d in power] == [11000.0]

    core.link_down()
    link.on_get_base_report(request_id=6, report_base="FullInventory")
    core.link_down()  # the connection went away before the sender ran: gone with it
    assert not any(isinstance(m.payload, call.NotifyReport) for m in core.outbox)
