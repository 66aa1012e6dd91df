"""A simulated OCPP 2.0.1 charging station: EVSEs, EVs, smart charging, and its connection to a CSMS.

`SimStation` owns the station's state (EVSEs, transactions, installed charging profiles,
device model) and advances it in `tick(now)`: it integrates each EV's charging under the
composite limit, ends visits at departure, and queues the messages a real station sends
(StatusNotification, TransactionEvent Started/Updated/Ended with seqNo, triggerReason,
chargingState and meter values, periodic MeterValues, Heartbeat). `run()` keeps a
WebSocket to the CSMS (``{csms_url}/{station_id}``, subprotocol ``ocpp2.0.1``):

- connect with Basic auth (security profile 1: user = station id) and optionally TLS with
  a custom CA (profile 2); on failure, reconnect with exponential backoff and full jitter;
- BootNotification on the first connection and after a Reset; retry while Pending/Rejected;
- one sender task per connection drains the outbound queue, one CALL at a time. Handlers of
  CSMS requests (`evse_sim.ocpp_link`) never await an outbound call: they queue messages;
- TransactionEvents are never dropped: created while offline they carry ``offline=true``,
  stay queued in order and are delivered on reconnect (a message in flight when the link
  drops is re-sent with the same seqNo; the CSMS treats that as an idempotent replay);
  NotifyEVChargingNeeds is kept the same way; other messages are only queued while online.
  Profiles keep being enforced offline.

Timing uses the shared `evfleet.clock.Clock`: a `ScaledClock` runs the station faster than
real time. Reconnect back-off and response timeouts are network timings in real seconds.
A fleet drives `tick` for thousands of stations from one timer (`evse_sim.fleet`); a lone
station can run its own timer with `run(tick_s=...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import websockets
from ocpp.exceptions import OCPPError
from ocpp.v201 import call

from evfleet.clock import Clock
from evfleet.profile import format_time
from evse_sim.device_model import DeviceModel, VarKey
from evse_sim.ev import Ev
from evse_sim.evse import EvseKind, offered_power_w
from evse_sim.hlc import HlcContext, HlcLink
from evse_sim.smart_charging import ChargingProfile, ProfileError, ProfileStore, Purpose, share_station_cap
from evse_sim.station_types import (
    QUIRKS,
    ConnectionConfig,
    EvseState,
    OutMsg,
    StationConfig,
    StationError,
    StationStats,
    TxState,
    VisitLog,
)

if TYPE_CHECKING:  # pragma: no cover
    from evse_sim.ocpp_link import StationLink

LOG = logging.getLogger("evse_sim.station")


class SimStation:
    """One simulated charging station (see the module docstring)."""

    def __init__(
        self,
        config: StationConfig,
        connection: ConnectionConfig,
        clock: Clock,
        hlc: HlcLink | None = None,
        rng: random.Random | None = None,
        unplug_when_full: bool = False,
    ) -> None:
        self.config = config
        self.connection = connection
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
            [e.phases for e in config.evses],
            connection.security_profile,
            config.heartbeat_s,
            config.tx_updated_interval_s,
            config.aligned_interval_s,
        )
        self.device.on_change = self._on_variable_change
        self.heartbeat_s = config.heartbeat_s
        self.tx_updated_s = config.tx_updated_interval_s
        self.aligned_s = config.aligned_interval_s
        self.stats = StationStats()
        self.visits: list[VisitLog] = []
        self.on_unplugged: Callable[[SimStation, int, Ev], None] | None = None
        self.online = False
        self.accepted = False
        self._queue: deque[OutMsg] = deque()
        self._wake = asyncio.Event()
        self._link: StationLink | None = None
        self._ws: Any = None
        self._stopping = False
        self._needs_boot = True
        self._boot_reason = "PowerUp"
        self._reset_pending: str | None = None
        self._offline_for_s = 0.0
        self._closing: asyncio.Task[None] | None = None
        self._last_tick: datetime | None = None
        self._last_heartbeat: datetime | None = None
        self.csms_clock_skew_s: float | None = None  # CSMS time - our time at its last currentTime [s]
        self._last_aligned: datetime | None = None

    # ------------------------------------------------------------------ EV visits
    def plug_in(self, evse_id: int, ev: Ev) -> str:
        """Plug `ev` into `evse_id`; start (or continue a remotely started) transaction; return its id."""
        st = self._evse(evse_id)
        if st.ev is not None:
            raise StationError(f"{self.id}: EVSE {evse_id} is occupied")
        if not st.operative:
            raise StationError(f"{self.id}: EVSE {evse_id} is unavailable")
        now = self.clock.now()
        self._settle(now)
        st.ev = ev
        self._set_status(evse_id, "Occupied", now)
        if st.tx is None:
            token = _id_token(ev)
            ask = token is not None and self.config.authorize and self.online
            st.tx = TxState(
                self._new_tx_id(), now, "EVConnected", id_token=token, last_update=now, authorized=not ask
            )
            self._queue_tx(
                evse_id,
                "Started",
                "CablePluggedIn",
                now,
                meter_context="Transaction.Begin",
                with_token=token is not None and not ask,
            )
            if ask and token is not None:
                tx_id = st.tx.transaction_id
                self.queue(
                    call.Authorize(id_token=token),
                    on_result=lambda result: self._on_authorize(evse_id, tx_id, result),
                )
        else:
            st.tx.charging_state = "EVConnected"
            self._queue_tx(evse_id, "Updated", "CablePluggedIn", now)
        self.visits.append(
            VisitLog(
                ev.spec.ev_id,
                self.id,
                evse_id,
                now,
                need_wh=ev.remaining_need_wh,
                transaction_id=st.tx.transaction_id,
            )
        )
        if ev.spec.hlc and self.hlc is not None:
            self.hlc.on_plug_in(self._hlc_ctx(evse_id, now))
        return st.tx.transaction_id

    def unplug(self, evse_id: int) -> Ev | None:
        """The EV leaves: end its transaction (EVDeparted) and free the EVSE."""
        st = self._evse(evse_id)
        now = self.clock.now()
        self._settle(now)
        ev = st.ev
        if st.tx is not None:
            self._end_tx(evse_id, now, "EVDeparted", "EVDisconnected")
        if ev is None:
            return None
        if ev.spec.hlc and self.hlc is not None:
            self.hlc.on_unplug(HlcContext(self, evse_id, st.spec, ev, "", now))
        st.ev = None
        st.ev_limit_w = None
        st.power_w = st.offered_w = 0.0
        for visit in reversed(self.visits):
            if visit.evse_id == evse_id and visit.left_at is None:
                visit.left_at, visit.delivered_wh = now, ev.delivered_wh
                break
        if st.pending_inoperative:
            st.operative, st.pending_inoperative = False, False
            self._set_status(evse_id, "Unavailable", now)
        else:
            self._set_status(evse_id, "Available", now)
        if self.on_unplugged is not None:
            self.on_unplugged(self, evse_id, ev)
        self._check_reset()
        return ev

    def set_ev_limit(self, evse_id: int, limit_w: float | None) -> None:
        """Cap what the EV itself draws (used by HLC links for the EV's own plan)."""
        self._evse(evse_id).ev_limit_w = limit_w

    # ------------------------------------------------------------------ physics and timers
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

    def tick(self, now: datetime | None = None) -> None:
        """Advance the station to `now`: charge, end visits due, apply limits, queue periodic messages."""
        now = now or self.clock.now()
        self._settle(now)
        if len(self.profiles):
            self.profiles.drop_expired(now)  # validTo passed: no longer installed (nor reported)
        for evse_id, st in self.evses.items():
            ev = st.ev
            if ev is None:
                continue
            if now >= ev.spec.departure or (self.unplug_when_full and ev.full):
                self.unplug(evse_id)
        self._apply_limits(now)
        for evse_id, st in self.evses.items():
            tx = st.tx
            if (
                tx is not None
                and self.tx_updated_s > 0
                and (tx.last_update is None or (now - tx.last_update).total_seconds() >= self.tx_updated_s)
            ):
                self._queue_tx(evse_id, "Updated", "MeterValuePeriodic", now, meter_context="Sample.Periodic")
        if not (self.online and self.accepted):
            return
        if self.aligned_s > 0 and (
            self._last_aligned is None or (now - self._last_aligned).total_seconds() >= self.aligned_s
        ):
            self._last_aligned = now
            waiting = {m.payload.evse_id for m in self._queue if type(m.payload) is call.MeterValues}
            for evse_id in self.evses:
                if evse_id not in waiting:  # the previous clock-aligned sample is still queued: skip this one
                    self.queue(
                        call.MeterValues(
                            evse_id=evse_id, meter_value=self._meter(evse_id, now, "Sample.Clock")
                        )
                    )
        if self.heartbeat_s > 0 and (
            self._last_heartbeat is None or (now - self._last_heartbeat).total_seconds() >= self.heartbeat_s
        ):
            self._last_heartbeat = now
            # a slow CSMS gets one Heartbeat at a time, not a backlog of them
            if not any(type(m.payload) is call.Heartbeat for m in self._queue):
                self.queue(call.Heartbeat(), on_result=self._on_heartbeat_result)

    def _apply_limits(self, now: datetime) -> None:
        """Recompute each EVSE's offered power from the composite limit (and the station cap)."""
        demands: dict[int, float] = {}
        for evse_id, st in self.evses.items():
            if st.tx is None:
                st.limit_w = st.offered_w = 0.0
                continue
            if len(self.profiles) and "ignore_limits" not in self.config.quirks:
                limit_w, min_w = self.profiles.limit_w_at(
                    evse_id,
                    now,
                    st.spec.electrical,
                    st.spec.max_power_w,
                    st.tx.transaction_id,
                    st.tx.started_at,
                )
            else:  # no profile installed: the hardware maximum (the common case at fleet scale)
                limit_w, min_w = st.spec.max_power_w, 0.0
            st.limit_w = limit_w
            offered = offered_power_w(limit_w, min_w, st.spec)
            if st.ev_limit_w is not None:
                offered = min(offered, st.ev_limit_w)
            if not st.tx.authorized:
                offered = 0.0  # no energy before the id token is accepted
            demands[evse_id] = offered if st.ev is not None else 0.0
        if len(demands) > 1 and len(self.profiles):
            cap_w = self.profiles.station_cap_w_at(now, self.evses[1].spec.electrical, self.config.hw_max_w)
            # the station shares its cap by what each EV actually draws: a full EV keeps no share
            demands = share_station_cap({i: self._draw_w(i, w) for i, w in demands.items()}, cap_w)
        for evse_id, offered in demands.items():
            st = self.evses[evse_id]
            tx = st.tx
            assert tx is not None
            old_power, old_limit = st.power_w, st.last_limit_w
            st.last_limit_w = st.limit_w
            st.offered_w = offered
            st.power_w = self._draw_w(evse_id, offered)  # what the EV draws, not what is offered
            state = _charging_state(st)
            if state != tx.charging_state:
                tx.charging_state = state
                self._queue_tx(
                    evse_id, "Updated", "ChargingStateChanged", now, meter_context="Sample.Periodic"
                )
            elif abs(st.limit_w - old_limit) > 1.0 and abs(st.power_w - old_power) > max(
                100.0, 0.02 * old_power
            ):
                self._queue_tx(
                    evse_id, "Updated", "ChargingRateChanged", now, meter_context="Sample.Periodic"
                )

    def _draw_w(self, evse_id: int, offered_w: float) -> float:
        """Power [W] the EV on `evse_id` draws at `offered_w` (0 without an EV or once it is full)."""
        st = self.evses[evse_id]
        return 0.0 if st.ev is None else st.ev.draw_w(offered_w, st.spec.kind is EvseKind.DC)

    # ------------------------------------------------------------------ outbound queue
    def queue(
        self, payload: Any, persistent: bool = False, on_result: Callable[[Any], None] | None = None
    ) -> None:
        """Queue an outbound CALL; non-persistent messages are dropped while offline."""
        if not persistent and not self.online:
            return
        self._queue.append(OutMsg(payload, persistent, on_result))
        self._wake.set()

    @property
    def queued(self) -> int:
        """Messages waiting to be sent."""
        return len(self._queue)

    @property
    def queued_transaction_events(self) -> int:
        """TransactionEvents waiting to be sent (the offline queue)."""
        return sum(1 for m in self._queue if isinstance(m.payload, call.TransactionEvent))

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
        info = getattr(result, "id_token_info", None) or {}
        status = info.get("status", "Accepted")
        st = self.evses[evse_id]
        if status != "Accepted" and st.tx is not None and st.tx.transaction_id == tx_id:
            LOG.warning("%s: id token of transaction %s is %s: stopping", self.id, tx_id, status)
            now = self.clock.now()
            self._settle(now)
            self._end_tx(evse_id, now, "Deauthorized", "DeAuthorized")

    def _meter(self, evse_id: int, now: datetime, context: str | None) -> list[dict[str, Any]]:
        st = self.evses[evse_id]
        ctx = context or "Sample.Periodic"
        current_a = st.spec.electrical.w_to_a(st.power_w)
        values: list[dict[str, Any]] = [
            {
                "value": round(st.energy_wh, 1),
                "measurand": "Energy.Active.Import.Register",
                "unit_of_measure": {"unit": "Wh"},
                "context": ctx,
            },
            {
                "value": round(st.power_w, 1),
                "measurand": "Power.Active.Import",
                "unit_of_measure": {"unit": "W"},
                "context": ctx,
            },
            {
                "value": round(current_a, 2),
                "measurand": "Current.Import",
                "unit_of_measure": {"unit": "A"},
                "context": ctx,
            },
        ]
        if st.ev is not None:
            values.append(
                {
                    "value": round(st.ev.battery.soc * 100, 1),
                    "measurand": "SoC",
                    "unit_of_measure": {"unit": "Percent"},
                    "context": ctx,
                    "location": "EV",
                }
            )
        return [{"timestamp": format_time(now), "sampled_value": values}]

    def _set_status(self, evse_id: int, status: str, now: datetime) -> None:
        self.evses[evse_id].status = status
        self.queue(
            call.StatusNotification(
                timestamp=format_time(now), connector_status=status, evse_id=evse_id, connector_id=1
            )
        )

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

    def _new_tx_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _evse(self, evse_id: int) -> EvseState:
        try:
            return self.evses[evse_id]
        except KeyError:
            raise StationError(f"{self.id}: no EVSE {evse_id}") from None

    def _hlc_ctx(self, evse_id: int, now: datetime) -> HlcContext:
        st = self.evses[evse_id]
        assert st.ev is not None and st.tx is not None
        return HlcContext(self, evse_id, st.spec, st.ev, st.tx.transaction_id, now)

    # ------------------------------------------------------------------ used by HLC links
    def hlc_context(self, evse_id: int) -> HlcContext | None:
        """The HLC view of the EV on `evse_id` now (None when no EV with a transaction is there)."""
        st = self.evses.get(evse_id)
        if st is None or st.ev is None or st.tx is None:
            return None
        return self._hlc_ctx(evse_id, self.clock.now())

    def queue_charging_needs(
        self, evse_id: int, needs: dict[str, Any], max_schedule_tuples: int | None
    ) -> None:
        """Queue NotifyEVChargingNeeds for the EV on `evse_id` (kept while offline, like a TransactionEvent:
        the EV announced them once, so they are delivered after the queued Started on reconnect)."""
        self.queue(
            call.NotifyEVChargingNeeds(
                charging_needs=needs, evse_id=evse_id, max_schedule_tuples=max_schedule_tuples
            ),
            persistent=True,
        )

    def queue_ev_charging_schedule(self, evse_id: int, schedule: dict[str, Any], time_base: datetime) -> None:
        """Queue NotifyEVChargingSchedule (the EV's own plan)."""
        self.queue(
            call.NotifyEVChargingSchedule(
                time_base=format_time(time_base), charging_schedule=schedule, evse_id=evse_id
            )
        )

    # ------------------------------------------------------------------ called by CSMS request handlers
    def active_transactions(self) -> dict[int, str | None]:
        """EVSE id -> running transaction id (None when idle)."""
        return {i: (st.tx.transaction_id if st.tx else None) for i, st in self.evses.items()}

    def profile_accepted(self, evse_id: int, profile: ChargingProfile) -> None:
        """A SetChargingProfile was accepted: re-apply limits at the next tick; tell the HLC link."""
        if profile.purpose is Purpose.TX and self.hlc is not None:
            st = self.evses.get(evse_id)
            if st is not None and st.ev is not None and st.ev.spec.hlc and st.tx is not None:
                self.hlc.on_profile(self._hlc_ctx(evse_id, self.clock.now()), profile)

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
            asyncio.get_running_loop().call_later(0.2, self.perform_pending_reset)

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
        self.disconnect()

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
            self._needs_boot_msg(now)
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

    def _needs_boot_msg(self, now: datetime) -> None:
        self.queue(self._boot_payload("Triggered"), on_result=self._on_boot_result)

    def _boot_payload(self, reason: str) -> call.BootNotification:
        station: dict[str, Any] = {
            "model": self.config.model,
            "vendor_name": self.config.vendor,
            "firmware_version": self.config.firmware_version,
        }
        if self.config.serial_number:
            station["serial_number"] = self.config.serial_number
        return call.BootNotification(charging_station=station, reason=reason)

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
        try:
            theirs = datetime.fromisoformat(current_time.replace("Z", "+00:00"))
        except ValueError:
            return
        if theirs.tzinfo is None:
            theirs = theirs.replace(tzinfo=UTC)
        self.csms_clock_skew_s = (theirs - self.clock.now()).total_seconds()

    def _on_variable_change(self, key: VarKey, value: str) -> None:
        component, _evse, name = key
        if (component, name) == ("OCPPCommCtrlr", "HeartbeatInterval"):
            self.heartbeat_s = int(value)
        elif (component, name) == ("SampledDataCtrlr", "TxUpdatedInterval"):
            self.tx_updated_s = int(value)
        elif (component, name) == ("AlignedDataCtrlr", "Interval"):
            self.aligned_s = int(value)

    # ------------------------------------------------------------------ connection
    def disconnect(self) -> None:
        """Drop the current WebSocket (tests, resets); `run` reconnects with back-off."""
        ws = self._ws
        if ws is not None:
            self._closing = asyncio.get_running_loop().create_task(ws.close())

    def go_offline(self, real_s: float) -> None:
        """Fault injection: drop the link and stay offline for `real_s` real seconds (then reconnect)."""
        self._offline_for_s = max(self._offline_for_s, real_s)
        self.disconnect()

    def stop(self) -> None:
        """Ask `run` to finish after closing the connection."""
        self._stopping = True
        self.disconnect()
        self._wake.set()

    async def run(self, tick_s: float | None = None) -> None:
        """Stay connected to the CSMS until `stop()`; with `tick_s`, also tick every `tick_s` clock s."""
        ticker = asyncio.create_task(self._own_ticker(tick_s)) if tick_s else None
        attempt = 0
        try:
            while not self._stopping:
                if self._offline_for_s > 0:
                    pause, self._offline_for_s = self._offline_for_s, 0.0
                    await asyncio.sleep(pause)
                    continue
                try:
                    if await self._session():
                        attempt = 0
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # every connection failure ends here: count it, back off, retry
                    if not self._stopping and self._offline_for_s <= 0:  # not a stop or an injected drop
                        self.stats.note_error(f"{type(err).__name__}: {err}")
                        LOG.info("%s: connection lost or refused: %s", self.id, self.stats.last_error)
                finally:
                    self._went_offline()
                if self._stopping:
                    break
                attempt += 1
                cap = min(
                    self.connection.backoff_max_s, self.connection.backoff_base_s * 2 ** min(attempt - 1, 16)
                )
                await asyncio.sleep(self.rng.uniform(cap / 2, cap))
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker

    async def _own_ticker(self, tick_s: float) -> None:
        while True:
            self.tick()
            await self.clock.sleep(tick_s)

    def _went_offline(self) -> None:
        self.online = False
        self._ws = None
        self._link = None
        kept = [m for m in self._queue if m.persistent]
        self._queue.clear()
        self._queue.extend(kept)

    async def _session(self) -> bool:
        """One connection: handshake, boot, then serve until it closes. True if it got connected."""
        from evse_sim.ocpp16_link import StationLink16
        from evse_sim.ocpp_link import StationLink

        conn = self.connection
        v16 = self.config.ocpp_version == "1.6"
        ws = await websockets.connect(
            conn.url_for(self.id),
            subprotocols=[websockets.Subprotocol("ocpp1.6" if v16 else "ocpp2.0.1")],
            additional_headers=conn.headers_for(self.id),
            ssl=conn.ssl_context(self.id),
            open_timeout=conn.open_timeout_s,
            ping_interval=conn.ping_interval_s,
            max_queue=64,
        )
        self._ws = ws
        self.stats.connects += 1
        link: StationLink | StationLink16 = (StationLink16 if v16 else StationLink)(
            self, ws, conn.response_timeout_s
        )
        self._link = link
        reader = asyncio.create_task(link.start())
        try:
            if self._needs_boot or self.config.boot_on_reconnect:
                if not await self._boot(link, reader):
                    return True
            self.online = True
            self.accepted = True
            now = self.clock.now()
            # report every connector's status after (re)connecting, after the queued transaction events
            for evse_id, st in self.evses.items():
                self._set_status(evse_id, st.status, now)
            self._last_heartbeat = now
            sender = asyncio.create_task(self._drain(link))
            done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            for task in done:
                exc = None if task is reader or task.cancelled() else task.exception()
                if exc is not None:
                    raise exc
            return True
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await ws.close()

    async def _boot(self, link: StationLink, reader: asyncio.Task[Any]) -> bool:
        """BootNotification until Accepted (retrying at the CSMS's interval). False if the link closed."""
        while not self._stopping:
            boot = asyncio.create_task(link.call(self._boot_payload(self._boot_reason), suppress=False))
            done, _ = await asyncio.wait({boot, reader}, return_when=asyncio.FIRST_COMPLETED)
            if boot not in done:
                boot.cancel()
                return False
            result = boot.result()
            self.stats.sent += 1
            self.stats.boots += 1
            interval = int(getattr(result, "interval", 0) or 0)
            self._note_csms_time(getattr(result, "current_time", None))
            if result.status == "Accepted":
                self.stats.boots_accepted += 1
                self.heartbeat_s = interval or self.heartbeat_s
                self.device.put("OCPPCommCtrlr", "HeartbeatInterval", str(self.heartbeat_s))
                self._needs_boot = False
                self._boot_reason = "PowerUp"
                return True
            wait = asyncio.create_task(self.clock.sleep(interval or 30))
            done, _ = await asyncio.wait({wait, reader}, return_when=asyncio.FIRST_COMPLETED)
            if wait not in done:
                wait.cancel()
                return False
        return False

    async def _drain(self, link: StationLink) -> None:
        """Send queued CALLs one at a time; a TransactionEvent leaves the queue once answered."""
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
                if self._stopping:
                    return
            msg = self._queue[0]
            try:
                result = await link.call(msg.payload, suppress=False)
            except OCPPError as err:
                self.stats.note_error(f"CALLERROR {type(msg.payload).__name__}: {err}")
                LOG.warning("%s: %s", self.id, self.stats.last_error)
                self._queue.popleft()
                continue
            except TimeoutError:
                self.stats.note_error(f"timeout {type(msg.payload).__name__}")
                if not msg.persistent:
                    self._queue.popleft()
                continue
            except websockets.ConnectionClosed:
                raise  # the session ends; the message stays queued for the next connection
            except Exception as err:  # e.g. a CALLRESULT that fails the schema: resending cannot help
                self.stats.note_error(
                    f"bad answer to {type(msg.payload).__name__}: {type(err).__name__}: {err}")
                LOG.warning("%s: %s", self.id, self.stats.last_error[:500])
                self._queue.popleft()
                continue
            self._queue.popleft()
            self.stats.sent += 1
            if msg.persistent and getattr(msg.payload, "offline", None):
                self.stats.offline_events_sent += 1
            if msg.on_result is not None:
                msg.on_result(result)


def _charging_state(st: EvseState) -> str:
    """OCPP chargingState as a real station reports it.

    SuspendedEV when the EV takes no power although it may (it is full, or its own plan asks 0:
    even at a 0 limit a full EV stays SuspendedEV, the reason it does not charge is the EV);
    SuspendedEVSE when the EVSE offers nothing while the EV wants power; else Charging.
    """
    if st.ev is None:
        return "Idle"
    if st.tx is not None and not st.tx.authorized:
        return "EVConnected"
    if st.ev.full or (st.ev_limit_w is not None and st.ev_limit_w <= 0):
        return "SuspendedEV"
    if st.offered_w <= 0:
        return "SuspendedEVSE"
    if st.power_w <= 0:
        return "SuspendedEV"
    return "Charging"


def _id_token(ev: Ev) -> dict[str, str] | None:
    token = ev.spec.id_token
    if not token:
        return None
    return {"id_token": token, "type": "eMAID" if ev.spec.hlc else "ISO14443"}


__all__ = [
    "QUIRKS",
    "ConnectionConfig",
    "EvseState",
    "SimStation",
    "StationConfig",
    "StationError",
    "StationStats",
    "TxState",
    "VisitLog",
]
