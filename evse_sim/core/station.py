"""The sans-IO core of a simulated OCPP station, in the manner of h11.

`StationCore` is a station without a connection: EVs plug in and leave (`plug_in`, `unplug`),
`tick(now)` charges them under the composite limit, ends visits at departure and returns the
messages it queued (StatusNotification, TransactionEvent Started/Updated/Ended with seqNo,
triggerReason, chargingState and meter values, periodic MeterValues, Heartbeat); CSMS requests
are answered by `StationCommands` methods. The link lifecycle is a few calls a driver makes:
`needs_boot` / `boot_request()` / `boot_answered(result)` while booting, `link_up(now)` once
accepted, `link_down()` when the connection is gone; the outbound queue is `outbox` (`Outbox`).

TransactionEvents are never dropped: created while offline they carry ``offline=true``, stay
queued in order and are delivered on reconnect with their seqNo; NotifyEVChargingNeeds is kept
the same way; other messages are only queued while online. Profiles keep being enforced offline.

No asyncio, no websockets, no Redis: `evse_sim.station.SimStation` is the driver that connects
a core to a CSMS, and unit tests drive a core directly (`tests/sim/test_station_core.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ocpp.v201 import call

from evfleet.profile import format_time
from evse_sim.core.commands import StationCommands
from evse_sim.core.messages import charging_state, id_token_of
from evse_sim.ev import Ev
from evse_sim.evse import EvseKind, offered_power_w
from evse_sim.hlc import HlcContext
from evse_sim.smart_charging import ChargingProfile, Purpose, SetOutcome, share_station_cap
from evse_sim.station_types import OutMsg, StationError, TxState, VisitLog


class StationCore(StationCommands):
    """One simulated charging station without its connection (see the module docstring)."""

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
            token = id_token_of(ev)
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
                ev.spec.ev_id, self.id, evse_id, now, need_wh=ev.remaining_need_wh,
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
    def tick(self, now: datetime | None = None) -> list[OutMsg]:
        """Advance the station to `now`: charge, end visits due, apply limits, queue periodic messages.

        Returns the messages this tick queued (they are also in `outbox`, in order).
        """
        now = now or self.clock.now()
        before = len(self.outbox)
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
                and not (self.online and self.outbox.holds_periodic_sample(tx.transaction_id))
            ):
                # online, a periodic sample still waiting for a slow CSMS is not joined by another: the
                # register is cumulative, so the next one carries the energy, and the queue (one CALL at a
                # time) stays bounded instead of growing with every interval (offline, samples are kept)
                self._queue_tx(evse_id, "Updated", "MeterValuePeriodic", now, meter_context="Sample.Periodic")
        if self.online and self.accepted:
            self._periodic(now)
        added = len(self.outbox) - before
        return self.outbox.last(added)

    def _periodic(self, now: datetime) -> None:
        """Clock-aligned MeterValues and Heartbeat, when due (online only)."""
        if self.aligned_s > 0 and (
            self._last_aligned is None or (now - self._last_aligned).total_seconds() >= self.aligned_s
        ):
            self._last_aligned = now
            waiting = {m.payload.evse_id for m in self.outbox if type(m.payload) is call.MeterValues}
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
            if not self.outbox.has(call.Heartbeat):
                self.queue(call.Heartbeat(), on_result=self._on_heartbeat_result)

    def _offered_w(self, now: datetime) -> dict[int, float]:
        """Power [W] each EVSE with a transaction may offer now: composite limit, EV cap, station cap."""
        demands: dict[int, float] = {}
        for evse_id, st in self.evses.items():
            if st.tx is None:
                st.limit_w = st.offered_w = 0.0
                continue
            if len(self.profiles) and "ignore_limits" not in self.config.quirks:
                limit_w, min_w = self.profiles.limit_w_at(
                    evse_id, now, st.spec.electrical, st.spec.max_power_w,
                    st.tx.transaction_id, st.tx.started_at,
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
        return demands

    def _apply_limits(self, now: datetime) -> None:
        """Recompute each EVSE's offered power; report chargingState and rate changes."""
        for evse_id, offered in self._offered_w(now).items():
            st = self.evses[evse_id]
            tx = st.tx
            assert tx is not None
            old_power, old_limit = st.power_w, st.last_limit_w
            st.last_limit_w = st.limit_w
            st.offered_w = offered
            st.power_w = self._draw_w(evse_id, offered)  # what the EV draws, not what is offered
            state = charging_state(st)
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

    # ------------------------------------------------------------------ smart charging and HLC
    def install_profile(self, evse_id: int, profile: ChargingProfile) -> SetOutcome:
        """K01 / 1.6 SetChargingProfile after decoding: install if valid; tell the HLC link."""
        outcome = self.profiles.set_profile(evse_id, profile, self.active_transactions())
        if outcome.accepted:
            self.profile_accepted(evse_id, profile)
        return outcome

    def profile_accepted(self, evse_id: int, profile: ChargingProfile) -> None:
        """A SetChargingProfile was accepted: re-apply limits at the next tick; tell the HLC link."""
        if profile.purpose is Purpose.TX and self.hlc is not None:
            st = self.evses.get(evse_id)
            if st is not None and st.ev is not None and st.ev.spec.hlc and st.tx is not None:
                self.hlc.on_profile(self._hlc_ctx(evse_id, self.clock.now()), profile)

    def _hlc_ctx(self, evse_id: int, now: datetime) -> HlcContext:
        st = self.evses[evse_id]
        assert st.ev is not None and st.tx is not None
        return HlcContext(self, evse_id, st.spec, st.ev, st.tx.transaction_id, now)

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
        """Queue NotifyEVChargingSchedule (the EV's own plan), kept while offline like the needs: the
        EV sends its plan once per negotiation, so an EV that plugged in before the station was
        connected would otherwise never tell the CSMS its plan."""
        self.queue(
            call.NotifyEVChargingSchedule(
                time_base=format_time(time_base), charging_schedule=schedule, evse_id=evse_id
            ),
            persistent=True,
        )

    # ------------------------------------------------------------------ link lifecycle (driver calls)
    @property
    def needs_boot(self) -> bool:
        """Must the next connection start with a BootNotification?"""
        return self._needs_boot or self.config.boot_on_reconnect

    def boot_request(self) -> call.BootNotification:
        """The BootNotification to send now (reason PowerUp, or RemoteReset after a Reset)."""
        return self._boot_payload(self._boot_reason)

    def boot_answered(self, result: Any) -> float | None:
        """The CSMS answered the BootNotification: None when Accepted, else seconds before retrying."""
        self.stats.sent += 1
        self.stats.boots += 1
        interval = int(getattr(result, "interval", 0) or 0)
        self._note_csms_time(getattr(result, "current_time", None))
        if result.status != "Accepted":
            return float(interval or 30)
        self.stats.boots_accepted += 1
        self.heartbeat_s = interval or self.heartbeat_s
        self.device.put("OCPPCommCtrlr", "HeartbeatInterval", str(self.heartbeat_s))
        self._needs_boot = False
        self._boot_reason = "PowerUp"
        return None

    def link_up(self, now: datetime) -> None:
        """Connected and accepted: report every connector's status (after the queued transaction events)."""
        self.outbox.online = True
        self.accepted = True
        for evse_id, st in self.evses.items():
            self._set_status(evse_id, st.status, now)
        self._last_heartbeat = now

    def link_down(self) -> None:
        """The connection is gone: keep only the persistent messages for the next one."""
        self.outbox.link_down()
