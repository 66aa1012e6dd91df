"""Pure EV model: who arrives when, with which battery and need, and whether it speaks ISO 15118."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from evse_sim.battery import Battery


@dataclass(frozen=True, slots=True)
class EvSpec:
    """A car's static data and its visit (arrival, departure, need)."""

    ev_id: str
    model: str
    capacity_kwh: float
    initial_soc: float
    target_soc: float
    max_ac_power_kw: float
    max_dc_power_kw: float
    arrival: datetime
    departure: datetime
    efficiency: float = 0.92
    ac_phases: int = 3
    hlc: bool = False
    priority: int = 1
    id_token: str = ""

    @property
    def energy_need_kwh(self) -> float:
        """Energy the battery needs to reach `target_soc` [kWh]."""
        return max(0.0, (self.target_soc - self.initial_soc) * self.capacity_kwh)


@dataclass(slots=True)
class Ev:
    """A plugged-in car charging: spec plus battery state."""

    spec: EvSpec
    battery: Battery = field(init=False)
    delivered_wh: float = 0.0

    def __post_init__(self) -> None:
        s = self.spec
        self.battery = Battery(
            capacity_wh=s.capacity_kwh * 1000,
            soc=s.initial_soc,
            max_power_w=max(s.max_ac_power_kw, s.max_dc_power_kw) * 1000,
            efficiency=s.efficiency,
        )

    def max_power_w(self, dc: bool) -> float:
        """Largest power [W] the car takes on an AC or DC EVSE right now (onboard charger and taper)."""
        vehicle_w = (self.spec.max_dc_power_kw if dc else self.spec.max_ac_power_kw) * 1000
        return min(vehicle_w, self.battery.acceptance_w())

    def draw_w(self, offered_w: float, dc: bool) -> float:
        """Grid power [W] the car draws right now when `offered_w` is offered: 0 once full, else the
        offer capped by its onboard charger and the battery's taper."""
        if offered_w <= 0 or self.full:
            return 0.0
        return min(offered_w, self.max_power_w(dc))

    def charge(self, offered_w: float, dt_s: float, dc: bool) -> float:
        """Charge for `dt_s` at up to `offered_w`; return the grid power drawn [W]."""
        offered = min(offered_w, self.max_power_w(dc))
        drawn_w = self.battery.charge(offered, dt_s, self.spec.target_soc)
        self.delivered_wh += drawn_w * dt_s / 3600.0
        return drawn_w

    @property
    def remaining_need_wh(self) -> float:
        """Battery energy still missing to the target [Wh]."""
        return max(0.0, (self.spec.target_soc - self.battery.soc) * self.battery.capacity_wh)

    @property
    def full(self) -> bool:
        """True once the target SoC is reached."""
        return self.battery.soc >= self.spec.target_soc - 1e-9
