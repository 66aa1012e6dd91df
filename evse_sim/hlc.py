"""The seam between a simulated station and an ISO 15118 (high-level communication) layer.

A station calls its `HlcLink` at three moments of an HLC EV's visit:

- ``on_plug_in(ctx)``: the EV is plugged in and the transaction has started. The link
  decides what the EV announces and calls ``ctx.notify_charging_needs(needs)`` (sent to the
  CSMS as NotifyEVChargingNeeds after the TransactionEvent Started).
- ``on_profile(ctx, profile)``: the station accepted a TxProfile for this EV (K15/K16).
  The station already enforces the composite limit; a link that models the EV's own plan
  can answer with ``ctx.notify_ev_charging_schedule(schedule)`` (K17) and can narrow what
  the EV draws with ``ctx.set_ev_limit_w(w)``.
- ``on_unplug(ctx)``: the visit ended.

``BasicHlc`` is the default: it announces the EV's needs from its spec and follows the
station's composite limit. The ISO 15118 package (`evse_sim/iso15118/`) provides fuller
state machines (SAScheduleList, renegotiation timing, real Josev processes) behind the same
Protocol; plug one in with ``SimStation(..., hlc=MyLink())`` or ``FleetRunner(hlc_factory=...)``.
Callbacks are synchronous and must not block: they run on the station's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from evfleet.profile import format_time, w_to_a
from evse_sim.evse import EvseKind, EvseSpec
from evse_sim.smart_charging import ChargingProfile

if TYPE_CHECKING:  # pragma: no cover
    from evse_sim.core import StationCore
    from evse_sim.ev import Ev


@dataclass(slots=True)
class HlcContext:
    """What a link sees of one EVSE session, and what it may ask the station to do."""

    station: StationCore
    evse_id: int
    evse: EvseSpec
    ev: Ev
    transaction_id: str
    now: datetime

    def notify_charging_needs(
        self, charging_needs: dict[str, Any], max_schedule_tuples: int | None = None
    ) -> None:
        """Queue NotifyEVChargingNeeds (``charging_needs`` in snake_case, as the ocpp library expects)."""
        self.station.queue_charging_needs(self.evse_id, charging_needs, max_schedule_tuples)

    def notify_ev_charging_schedule(self, schedule: dict[str, Any], time_base: datetime) -> None:
        """Queue NotifyEVChargingSchedule with the EV's own plan (``chargingSchedule``, snake_case)."""
        self.station.queue_ev_charging_schedule(self.evse_id, schedule, time_base)

    def set_ev_limit_w(self, limit_w: float | None) -> None:
        """Cap what the EV itself draws (its own plan); None removes the cap."""
        self.station.set_ev_limit(self.evse_id, limit_w)


class HlcLink(Protocol):
    """An ISO 15118 layer for one station (see the module docstring)."""

    def on_plug_in(self, ctx: HlcContext) -> None:
        """An HLC EV was plugged in and its transaction started."""
        ...

    def on_profile(self, ctx: HlcContext, profile: ChargingProfile) -> None:
        """A TxProfile for the EV's transaction was accepted."""
        ...

    def on_unplug(self, ctx: HlcContext) -> None:
        """The EV left."""
        ...


def charging_needs_from_ev(ctx: HlcContext, max_schedule_tuples: int = 24) -> dict[str, Any]:
    """ChargingNeedsType (snake_case) from the EV's spec and battery: departure, energy, limits."""
    ev, evse = ctx.ev, ctx.evse
    energy_wh = int(round(ev.remaining_need_wh / ev.spec.efficiency))
    departure = format_time(ev.spec.departure)
    if evse.kind is EvseKind.DC:
        max_w = min(ev.spec.max_dc_power_kw * 1000, evse.max_power_w)
        return {
            "requested_energy_transfer": "DC",
            "departure_time": departure,
            "dc_charging_parameters": {
                "ev_max_current": int(max_w / 400),
                "ev_max_voltage": 500,
                "energy_amount": energy_wh,
                "ev_max_power": int(max_w),
                "state_of_charge": int(ev.battery.soc * 100),
                "ev_energy_capacity": int(ev.battery.capacity_wh),
                "full_soc": int(ev.spec.target_soc * 100),
            },
        }
    phases = min(ev.spec.ac_phases, evse.phases)
    max_a = w_to_a(min(ev.spec.max_ac_power_kw * 1000, evse.max_power_w), phases, evse.voltage_v)
    mode = {1: "AC_single_phase", 2: "AC_two_phase", 3: "AC_three_phase"}[phases]
    return {
        "requested_energy_transfer": mode,
        "departure_time": departure,
        "ac_charging_parameters": {
            "energy_amount": energy_wh,
            "ev_min_current": 6,
            "ev_max_current": max(6, int(max_a)),
            "ev_max_voltage": int(evse.voltage_v),
        },
    }


class BasicHlc:
    """Default link: announce needs on plug-in, follow the station's composite limit."""

    def __init__(self, max_schedule_tuples: int = 24) -> None:
        self.max_schedule_tuples = max_schedule_tuples

    def on_plug_in(self, ctx: HlcContext) -> None:
        """Send NotifyEVChargingNeeds built from the EV."""
        ctx.notify_charging_needs(
            charging_needs_from_ev(ctx, self.max_schedule_tuples), self.max_schedule_tuples
        )

    def on_profile(self, ctx: HlcContext, profile: ChargingProfile) -> None:
        """Nothing to do: the station enforces the TxProfile through the composite schedule."""

    def on_unplug(self, ctx: HlcContext) -> None:
        """Nothing to clean up."""
