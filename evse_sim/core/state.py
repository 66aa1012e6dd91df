"""The state of a simulated station and the primitives every reaction uses (sans-IO).

`StationState` holds the EVSEs, transactions, installed profiles, device model, timers and the
outbound queue (`Outbox`), and knows how to charge (`_settle`), report a status, and queue a
TransactionEvent with the next seqNo. `StationCommands` (CSMS requests) and `StationCore` (EV
visits, `tick`, link lifecycle) build on it. Time comes from `clock.now()` or an explicit `now`;
nothing here touches a socket or an event loop.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ocpp.v201 import call

from evfleet.clock import Clock
from evfleet.profile import format_time
from evse_sim.core.messages import meter_values, status_notification
from evse_sim.core.outbox import Outbox
from evse_sim.device_model import DeviceModel, VarKey
from evse_sim.ev import Ev
from evse_sim.evse import EvseKind
from evse_sim.hlc import HlcLink
from evse_sim.smart_charging import ProfileStore
from evse_sim.station_types import EvseState, StationConfig, StationError, StationStats, VisitLog

if TYPE_CHECKING:  # pragma: no cover
    from evse_sim.core.station import StationCore

LOG = logging.getLogger("evse_sim.station")


class StationState:
    """State of one station and its primitive transitions (see the module docstring)."""

    def __init__(
        self,
        config: StationConfig,
        clock: Clock,
        hlc: HlcLink | None = None,
        rng: random.Random | None = None,
        unplug_when_full: bool = False,
        security_profile: int = 0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.hlc = hlc
        self.rng = rng or random.Random()
        self.unplug_when_full = unplug_when_full
        self.id = config.station_id
        self.evses: dict[int, EvseState] = {
            i: EvseState(spec) for i, spec in enumerate(config.evses, start=1)
        }
        self.profiles = ProfileStore(self.evses)
        self.device = DeviceModel.default(
            self.id,
            [e.max_power_w for e in config.evses],
            [0 if e.kind.value == "DC" else e.phases for e in config.evses],  # OCPP 2.0.1: 0 = DC
            security_profile,
            config.heartbeat_s,
            config.tx_updated_interval_s,
            config.aligned_interval_s,
        )
        self.device.on_change = self._on_variable_change
        self.heartbeat_s = config.heartbeat_s
        self.tx_updated_s = config.tx_updated_interval_s
        self.aligned_s = config.aligned_interval_s
        self.stats = StationStats()
        self.outbox = Outbox(self.stats)
        self.visits: list[VisitLog] = []
        self.on_unplugged: Callable[[StationCore, int, Ev], None] | None = None
        self.on_reboot: Callable[[], None] | None = None
        """Called when the station reboots (Reset): the driver drops the link."""
        self.on_reset_due: Callable[[], None] | None = None
        """Called when an OnIdle reset became due: the driver calls `perform_pending_reset` soon after."""
        self.accepted = False
        self.csms_clock_skew_s: float | None = None  # CSMS time - our time at its last currentTime [s]
        self._needs_boot = True
        self._boot_reason = "PowerUp"
        self._reset_pending: str | None = None
        self._last_tick: datetime | None = None
        self._last_heartbeat: datetime | None = None
        self._last_aligned: datetime | None = None

    # ------------------------------------------------------------------ outbound queue
    @property
    def online(self) -> bool:
        """Connected (and booted) to the CSMS: non-persistent messages are queued only then."""
        return self.outbox.online

    def queue(
        self,
        payload: Any,
        persistent: bool = False,
        on_result: Callable[[Any], None] | None = None,
        on_link: bool = False,
    ) -> None:
        """Queue an outbound CALL; non-persistent messages are dropped while offline (`on_link`: an
        answer to a request on the open connection, kept before the boot is accepted, `Outbox.push`)."""
        self.outbox.push(payload, persistent, on_result, on_link=on_link)

    @property
    def queued(self) -> int:
        """Messages waiting to be sent."""
        return len(self.outbox)

    @property
    def queued_transaction_events(self) -> int:
        """TransactionEvents waiting to be sent (the offline queue)."""
        return self.outbox.transaction_events

    def _queue_tx(
        self,
        evse_id: int,
        event_type: str,
        trigger: str,
        now: datetime,
        meter_context: str | None = None,
        stopped_reason: str | None = None,
        with_token: bool = False,
    ) -> None:
        """Queue a TransactionEvent of the running transaction on `evse_id` with its next seqNo."""
        st = self.evses[evse_id]
        tx = st.tx
        assert tx is not None
        info: dict[str, Any] = {"transaction_id": tx.transaction_id, "charging_state": tx.charging_state}
        if stopped_reason is not None:
            info["stopped_reason"] = stopped_reason
        if tx.remote_start_id is not None and trigger == "RemoteStart":
            info["remote_start_id"] = tx.remote_start_id
        payload = call.TransactionEvent(
            event_type=event_type,
            timestamp=format_time(now),
            trigger_reason=trigger,
            seq_no=tx.seq_no,
            transaction_info=info,
            meter_value=self._meter(evse_id, now, meter_context) if meter_context else None,
            offline=True if not self.online else None,
            evse={"id": evse_id, "connector_id": 1},
            id_token=tx.id_token if with_token else None,
        )
        tx.seq_no += 1
        tx.last_update = now
        tx_id = tx.transaction_id
        self.queue(
            payload, persistent=True, on_result=lambda result: self._on_tx_result(evse_id, tx_id, result)
        )

    def _on_authorize(self, evse_id: int, tx_id: str, result: Any) -> None:
        """C01: Accepted -> Updated(Authorized) with the token, charging may start; else stop."""
        st = self.evses[evse_id]
        if st.tx is None or st.tx.transaction_id != tx_id:
            return
        now = self.clock.now()
        self._settle(now)
        status = (getattr(result, "id_token_info", None) or {}).get("status")
        if status == "Accepted":
            st.tx.authorized = True
            self._queue_tx(evse_id, "Updated", "Authorized", now, with_token=True)
        else:
            LOG.info("%s: Authorize answered %s: stopping transaction %s", self.id, status, tx_id)
            self._end_tx(evse_id, now, "Deauthorized", "DeAuthorized")

    def _on_tx_result(self, evse_id: int, tx_id: str, result: Any) -> None:
        """A TransactionEvent's answer: an id token the CSMS does not accept ends the transaction."""
        info = getattr(result, "id_token_info", None) or {}
        status = info.get("status", "Accepted")
        st = self.evses[evse_id]
        if status != "Accepted" and st.tx is not None and st.tx.transaction_id == tx_id:
            LOG.warning("%s: id token of transaction %s is %s: stopping", self.id, tx_id, status)
            now = self.clock.now()
            self._settle(now)
            self._end_tx(evse_id, now, "Deauthorized", "DeAuthorized")

    def _meter(self, evse_id: int, now: datetime, context: str | None) -> list[dict[str, Any]]:
        return meter_values(self.evses[evse_id], now, context)

    def _set_status(self, evse_id: int, status: str, now: datetime) -> None:
        self.evses[evse_id].status = status
        self.queue(status_notification(evse_id, status, now))

    # ------------------------------------------------------------------ transactions and physics
    def _end_tx(self, evse_id: int, now: datetime, trigger: str, reason: str) -> None:
        st = self.evses[evse_id]
        tx = st.tx
        assert tx is not None
        st.power_w = st.offered_w = 0.0
        tx.charging_state = "EVConnected" if st.ev is not None and trigger != "EVDeparted" else "Idle"
        self._queue_tx(evse_id, "Ended", trigger, now, meter_context="Transaction.End", stopped_reason=reason)
        if "duplicate_ended" in self.config.quirks:
            self._queue_tx(
                evse_id, "Ended", trigger, now, meter_context="Transaction.End", stopped_reason=reason
            )
        st.tx = None
        self.profiles.end_transaction(evse_id)

    def _settle(self, now: datetime) -> None:
        """Integrate charging from the last tick to `now` at the rates offered then."""
        if self._last_tick is None:
            self._last_tick = now
            return
        dt = (now - self._last_tick).total_seconds()
        self._last_tick = now
        if dt <= 0:
            return
        for st in self.evses.values():
            if st.ev is None or st.tx is None or st.offered_w <= 0:
                st.power_w = 0.0
                continue
            drawn = st.ev.charge(st.offered_w, dt, st.spec.kind is EvseKind.DC)
            st.energy_wh += drawn * dt / 3600.0

    def _new_tx_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _evse(self, evse_id: int) -> EvseState:
        try:
            return self.evses[evse_id]
        except KeyError:
            raise StationError(f"{self.id}: no EVSE {evse_id}") from None

    def _on_variable_change(self, key: VarKey, value: str) -> None:
        component, _evse, name = key
        if (component, name) == ("OCPPCommCtrlr", "HeartbeatInterval"):
            self.heartbeat_s = int(value)
        elif (component, name) == ("SampledDataCtrlr", "TxUpdatedInterval"):
            self.tx_updated_s = int(value)
        elif (component, name) == ("AlignedDataCtrlr", "Interval"):
            self.aligned_s = int(value)
