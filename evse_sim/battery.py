"""Pure EV battery physics: a two-stage (CC then linear CV-like taper) charge acceptance model.

After acnportal's ``Linear2StageBattery``: up to `transition_soc` the battery accepts its
full `max_power_w`; above it, the acceptable power falls linearly to zero at SoC 1.
Power is counted at the grid side; `efficiency` of it reaches the cells.
"""

from __future__ import annotations

from dataclasses import dataclass


class BatteryError(ValueError):
    """Invalid battery parameters or a charge request that makes no sense."""


@dataclass(slots=True)
class Battery:
    """A battery being charged; mutable state `soc` (0..1)."""

    capacity_wh: float
    soc: float
    max_power_w: float
    efficiency: float = 0.92
    transition_soc: float = 0.8

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise BatteryError(f"capacity_wh must be positive, got {self.capacity_wh}")
        if not 0.0 <= self.soc <= 1.0:
            raise BatteryError(f"soc must be within [0, 1], got {self.soc}")
        if self.max_power_w < 0:
            raise BatteryError(f"max_power_w must be >= 0, got {self.max_power_w}")
        if not 0.0 < self.efficiency <= 1.0:
            raise BatteryError(f"efficiency must be within (0, 1], got {self.efficiency}")
        if not 0.0 < self.transition_soc < 1.0:
            raise BatteryError(f"transition_soc must be within (0, 1), got {self.transition_soc}")

    @property
    def energy_wh(self) -> float:
        """Energy stored [Wh]."""
        return self.soc * self.capacity_wh

    def acceptance_w(self, soc: float | None = None) -> float:
        """Largest grid-side power [W] the battery accepts at `soc` (default: now)."""
        s = self.soc if soc is None else soc
        if s >= 1.0:
            return 0.0
        if s <= self.transition_soc:
            return self.max_power_w
        return self.max_power_w * (1.0 - s) / (1.0 - self.transition_soc)

    def charge(self, offered_w: float, dt_s: float, target_soc: float = 1.0) -> float:
        """Charge for `dt_s` seconds at up to `offered_w`; return the mean grid power drawn [W].

        Integrates the taper in sub-steps so a long step cannot overshoot the acceptance
        curve; stops at `target_soc`.
        """
        if dt_s < 0:
            raise BatteryError(f"dt_s must be >= 0, got {dt_s}")
        if offered_w <= 0 or dt_s == 0 or self.soc >= target_soc:
            return 0.0
        steps = 1 if self.soc + offered_w * dt_s / 3600 / self.capacity_wh < self.transition_soc else 10
        sub = dt_s / steps
        drawn_wh = 0.0
        for _ in range(steps):
            power_w = min(offered_w, self.acceptance_w())
            stored_wh = power_w * self.efficiency * sub / 3600.0
            room_wh = (target_soc - self.soc) * self.capacity_wh
            if stored_wh >= room_wh:
                drawn_wh += room_wh / self.efficiency
                self.soc = target_soc
                break
            drawn_wh += power_w * sub / 3600.0
            self.soc = min(1.0, self.soc + stored_wh / self.capacity_wh)
        return drawn_wh * 3600.0 / dt_s
