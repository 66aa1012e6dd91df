"""Pure EVSE hardware model: AC (1/3-phase) or DC, its maximum, and how it applies a limit to an EV."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from evse_sim.smart_charging import Electrical


class EvseKind(StrEnum):
    """Kind of EVSE."""

    AC = "AC"
    DC = "DC"


@dataclass(frozen=True, slots=True)
class EvseSpec:
    """Static hardware data of one EVSE (one connector)."""

    kind: EvseKind = EvseKind.AC
    max_power_kw: float = 11.0
    phases: int = 3
    voltage_v: float = 230.0

    def __post_init__(self) -> None:
        if self.max_power_kw <= 0:
            raise ValueError(f"max_power_kw must be positive, got {self.max_power_kw}")
        if self.phases not in (1, 2, 3):
            raise ValueError(f"phases must be 1, 2 or 3, got {self.phases}")

    @classmethod
    def ac(cls, power_kw: float = 11.0, phases: int = 3) -> EvseSpec:
        """An AC EVSE (11 or 22 kW 3-phase are the usual)."""
        return cls(EvseKind.AC, power_kw, phases, 230.0)

    @classmethod
    def dc(cls, power_kw: float = 50.0) -> EvseSpec:
        """A DC EVSE; A-limits convert at 400 V single 'phase'."""
        return cls(EvseKind.DC, power_kw, 1, 400.0)

    @property
    def max_power_w(self) -> float:
        """Hardware maximum [W]."""
        return self.max_power_kw * 1000.0

    @property
    def electrical(self) -> Electrical:
        """A<->W conversion for limits on this EVSE."""
        return Electrical(self.voltage_v, self.phases)

    @property
    def max_current_a(self) -> float:
        """Hardware maximum per-phase current [A]."""
        return self.electrical.w_to_a(self.max_power_w)


def offered_power_w(limit_w: float, min_rate_w: float, spec: EvseSpec) -> float:
    """Power [W] the EVSE offers under a composite `limit_w`: capped by hardware; 0 below minChargingRate."""
    offered = min(max(0.0, limit_w), spec.max_power_w)
    if min_rate_w > 0 and offered < min_rate_w:
        return 0.0
    return offered
