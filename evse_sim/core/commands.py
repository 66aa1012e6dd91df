"""Reactions of a simulated station to CSMS requests (sans-IO): each returns the answer's status
and queues what the station sends because of it.

Shared by the OCPP 2.0.1 link (`evse_sim.ocpp_link`) and the 1.6 link (`evse_sim.ocpp16_link`):
the links translate payloads, the decisions live here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ocpp.v201 import call

from evfleet.isotime import parse_iso_or_none
from evse_sim.core.messages import boot_notification
from evse_sim.core.state import StationState
from evse_sim.smart_charging import ChargingProfile, ProfileError, Purpose
from evse_sim.smart_charging.composite import CompositeSchedule
from evse_sim.station_types import TxState


class StationCommands(StationState):
    """CSMS-initiated operations (F, G, B blocks) on top of `StationState`."""

    @property
    def smart_charging(self) -> bool:
        """Does this charger implement smart charging (not the `no_smart_charging` quirk)?"""
        return "no_smart_charging" not in self.config.quirks

    def active_transactions(self) -> dict[int, str | None]:
        """EVSE id -> running transaction id (None when idle)."""
        return {i: (st.tx.transaction_id if st.tx else None) for i, st in self.evses.items()}

    def composite_schedule(
        self, evse_id: int, duration_s: int, now: datetime
    ) -> CompositeSchedule | None:
        """K08 / 1.6 GetCompositeSchedule: the composite of `evse_id` (0: the station-wide limit);
        None for an unknown EVSE or a duration <= 0."""
        if (evse_id != 0 and evse_id not in self.evses) or duration_s <= 0:
            return None
        if evse_id == 0:
            spec, hw, tx_id, tx_start = self.config.evses[0], self.config.hw_max_w, None, None
        else:
            state = self.evses[evse_id]
            spec, hw = state.spec, state.spec.max_power_w
            tx_id = state.tx.transaction_id if state.tx else None
            tx_start = state.tx.started_at if state.tx else None
        return self.profiles.composite(evse_id, now, duration_s, spec.electrical, hw, tx_id, tx_start)

    # ------------------------------------------------------------------ F: remote control
    def remote_start(
        self,
        evse_id: int | None,
        id_token: dict[str, Any],
        remote_start_id: int,
        profile: ChargingProfile | None,
    ) -> tuple[bool, str | None]:
        """RequestStartTransaction: start or authorize a transaction; return (accepted, transaction id)."""
        candidates = (
            [evse_id] if evse_id else [i for i, st in self.evses.items() if st.tx is None and st.operative]
        )
        if not candidates or candidates[0] not in self.evses:
            return False, None
        eid = candidates[0]
        st = self.evses[eid]
        if not st.operative or (st.tx is not None and st.tx.id_token is not None):
            return False, None
        if profile is not None:
            if profile.purpose is not Purpose.TX:
                return False, None
            try:
                self.profiles.check(eid, profile, {eid: profile.transaction_id or "pending"})
            except ProfileError:
                return False, None
        now = self.clock.now()
        self._settle(now)
        token = {"id_token": str(id_token.get("id_token", "")), "type": str(id_token.get("type", "Central"))}
        if st.tx is None:
            st.tx = TxState(
                self._new_tx_id(),
                now,
                "EVConnected" if st.ev else "Idle",
                id_token=token,
                remote_start_id=remote_start_id,
                last_update=now,
            )
            self._queue_tx(
                eid, "Started", "RemoteStart", now, meter_context="Transaction.Begin", with_token=True
            )
        else:
            st.tx.id_token, st.tx.remote_start_id = token, remote_start_id
            self._queue_tx(eid, "Updated", "RemoteStart", now, with_token=True)
        if profile is not None:
            self.profiles.set_profile(eid, profile, {eid: st.tx.transaction_id})
        return True, st.tx.transaction_id

    def remote_stop(self, transaction_id: str) -> bool:
        """RequestStopTransaction: end the transaction if it runs here."""
        for evse_id, st in self.evses.items():
            if st.tx is not None and st.tx.transaction_id == transaction_id:
                now = self.clock.now()
                self._settle(now)
                self._end_tx(evse_id, now, "RemoteStop", "Remote")
                self._check_reset()
                return True
        return False

    def unlock(self, evse_id: int, connector_id: int) -> str:
        """UnlockConnector status."""
        st = self.evses.get(evse_id)
        if st is None or connector_id != 1:
            return "UnknownConnector"
        if st.tx is not None:
            return "OngoingAuthorizedTransaction"
        return "Unlocked"

    def trigger(self, message: str, evse_id: int | None) -> str:
        """TriggerMessage: queue the requested message; status for the answer."""
        now = self.clock.now()
        targets = [evse_id] if evse_id else list(self.evses)
        if any(t not in self.evses for t in targets):
            return "Rejected"
        if message == "BootNotification":
            self.queue(self._boot_payload("Triggered"), on_result=self._on_boot_result)
        elif message == "Heartbeat":
            self.queue(call.Heartbeat())
        elif message == "StatusNotification":
            for eid in targets:
                self._set_status(eid, self.evses[eid].status, now)
        elif message == "MeterValues":
            for eid in targets:
                self.queue(call.MeterValues(evse_id=eid, meter_value=self._meter(eid, now, "Trigger")))
        elif message == "TransactionEvent":
            running = [eid for eid in targets if self.evses[eid].tx is not None]
            if not running:
                return "Rejected"
            for eid in running:
                self._queue_tx(eid, "Updated", "Trigger", now, meter_context="Trigger")
        else:
            return "NotImplemented"
        return "Accepted"

    # ------------------------------------------------------------------ G / B: availability, reset
    def change_availability(self, operative: bool, evse_id: int | None) -> str:
        """ChangeAvailability: Accepted, or Scheduled when a transaction runs on an affected EVSE."""
        targets = [evse_id] if evse_id else list(self.evses)
        if any(t not in self.evses for t in targets):
            return "Rejected"
        now = self.clock.now()
        status = "Accepted"
        for eid in targets:
            st = self.evses[eid]
            if operative:
                st.pending_inoperative = False
                if not st.operative:
                    st.operative = True
                    self._set_status(eid, "Occupied" if st.ev else "Available", now)
            elif st.tx is not None or st.ev is not None:
                st.pending_inoperative = True
                status = "Scheduled"
            elif st.operative:
                st.operative = False
                self._set_status(eid, "Unavailable", now)
        return status

    def request_reset(self, kind: str, evse_id: int | None) -> str:
        """Reset: Immediate ends transactions and reboots; OnIdle waits for transactions to end."""
        if evse_id is not None:
            return "Rejected"
        busy = any(st.tx is not None for st in self.evses.values())
        if kind == "OnIdle" and busy:
            self._reset_pending = "OnIdle"
            return "Scheduled"
        self._reset_pending = "Immediate"  # done by `perform_pending_reset` once the answer is sent
        return "Accepted"

    def perform_pending_reset(self) -> None:
        """Reboot now if an Immediate reset was accepted (called after the Reset answer went out)."""
        if self._reset_pending == "Immediate":
            self._do_reset()

    def _check_reset(self) -> None:
        if self._reset_pending == "OnIdle" and all(st.tx is None for st in self.evses.values()):
            self._reset_pending = "Immediate"
            # let the answer of the request that ended the last transaction go out first
            if self.on_reset_due is not None:
                self.on_reset_due()

    def _do_reset(self) -> None:
        now = self.clock.now()
        self._settle(now)
        for evse_id, st in self.evses.items():
            if st.tx is not None:
                self._end_tx(evse_id, now, "ResetCommand", "ImmediateReset")
        self._reset_pending = None
        self._needs_boot = True
        self._boot_reason = "RemoteReset"
        self.accepted = False
        if self.on_reboot is not None:
            self.on_reboot()

    # ------------------------------------------------------------------ boot and the CSMS's clock
    def _boot_payload(self, reason: str) -> call.BootNotification:
        return boot_notification(self.config, reason)

    def _on_boot_result(self, result: Any) -> None:
        if getattr(result, "status", None) == "Accepted":
            self.heartbeat_s = int(result.interval) or self.heartbeat_s
            self.device.put("OCPPCommCtrlr", "HeartbeatInterval", str(self.heartbeat_s))

    def _on_heartbeat_result(self, result: Any) -> None:
        self._note_csms_time(getattr(result, "current_time", None))

    def _note_csms_time(self, current_time: str | None) -> None:
        """Remember how far the CSMS's clock (BootNotification/Heartbeat currentTime) is from ours."""
        if not current_time:
            return
        theirs = parse_iso_or_none(current_time)  # naive is UTC (evfleet.isotime)
        if theirs is None:
            return
        self.csms_clock_skew_s = (theirs - self.clock.now()).total_seconds()
