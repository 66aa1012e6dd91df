"""OCPP 2.0.1 meter values -> normalised, unit-tagged samples (Wh, W, A, V, %).

Public names: `MeterSample`, `normalise_meter_value`, `latest_sample`, `to_base_unit`,
`MeterValueError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from csms.errors import PayloadValueError

ENERGY_IMPORT = "Energy.Active.Import.Register"
POWER_IMPORT = "Power.Active.Import"
CURRENT_IMPORT = "Current.Import"
VOLTAGE = "Voltage"
SOC = "SoC"

# unit -> (base unit, factor to base)
_UNITS: dict[str, tuple[str, float]] = {
    "Wh": ("Wh", 1.0), "kWh": ("Wh", 1000.0), "MWh": ("Wh", 1e6),
    "W": ("W", 1.0), "kW": ("W", 1000.0), "MW": ("W", 1e6),
    "A": ("A", 1.0), "mA": ("A", 0.001),
    "V": ("V", 1.0), "kV": ("V", 1000.0),
    "Percent": ("Percent", 1.0), "%": ("Percent", 1.0),
    "varh": ("varh", 1.0), "kvarh": ("varh", 1000.0), "var": ("var", 1.0), "kvar": ("var", 1000.0),
}
_DEFAULT_UNIT = {ENERGY_IMPORT: "Wh", POWER_IMPORT: "W", CURRENT_IMPORT: "A", VOLTAGE: "V", SOC: "Percent"}
_PHASE_NAMES = ("L1", "L2", "L3")


class MeterValueError(PayloadValueError):
    """A sampled value cannot be interpreted (bad number or unknown unit)."""


@dataclass(frozen=True)
class MeterSample:
    """One normalised meter reading; None = not reported."""

    ts: str
    energy_wh: float | None = None
    power_w: float | None = None
    current_a: float | None = None
    voltage_v: float | None = None
    soc: float | None = None
    phases: int | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the `tx:{ref}:meter` list entry)."""
        out: dict[str, Any] = {"ts": self.ts, "energy_wh": self.energy_wh, "power_w": self.power_w,
                               "current_a": self.current_a, "voltage_v": self.voltage_v, "soc": self.soc,
                               "phases": self.phases}  # dataclasses.asdict, without its deep copies
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    def is_empty(self) -> bool:
        """True if the sample carries none of the tracked measurands."""
        return all(v is None for v in (self.energy_wh, self.power_w, self.current_a, self.soc))


def to_base_unit(value: float, unit: str | None, multiplier: int = 0,
                 measurand: str = ENERGY_IMPORT) -> float:
    """`value` (with OCPP `unit` and power-of-ten `multiplier`) in the base unit of its measurand."""
    unit = unit or _DEFAULT_UNIT.get(measurand, "Wh")
    try:
        _, factor = _UNITS[unit]
    except KeyError as err:
        raise MeterValueError(f"unknown unit {unit!r} for {measurand}") from err
    return float(value) * factor * (10.0 ** multiplier)


def _reading(sv: Mapping[str, Any]) -> tuple[str, str | None, float]:
    measurand = str(sv.get("measurand") or ENERGY_IMPORT)
    uom = sv.get("unitOfMeasure") or {}
    try:
        value = float(sv["value"])
    except (KeyError, TypeError, ValueError) as err:
        raise MeterValueError(f"sampled value without a number: {sv!r}") from err
    base = to_base_unit(value, uom.get("unit"), int(uom.get("multiplier", 0) or 0), measurand)
    phase = sv.get("phase")
    return measurand, (str(phase) if phase else None), base


def normalise_meter_value(meter_value: Mapping[str, Any]) -> MeterSample:
    """One OCPP MeterValue (camelCase dict) -> MeterSample.

    Phase-less readings win; otherwise power is summed over L1..L3, current is the largest
    phase current, voltage the mean phase voltage. Only `Outlet` (default) or unspecified
    locations count; EV-side SoC is kept whatever its location.
    """
    ts = str(meter_value.get("timestamp", ""))
    totals: dict[str, float] = {}
    phased: dict[str, dict[str, float]] = {}
    for sv in meter_value.get("sampledValue") or []:
        location = sv.get("location") or "Outlet"
        measurand, phase, base = _reading(sv)
        if location not in ("Outlet", "EV") and measurand != SOC:
            continue
        if phase is None:
            totals.setdefault(measurand, base)
        else:
            phased.setdefault(measurand, {})[phase] = base

    def phase_values(m: str) -> list[float]:
        return [v for p, v in phased.get(m, {}).items() if p.split("-")[0] in _PHASE_NAMES]

    power = totals.get(POWER_IMPORT)
    if power is None and phase_values(POWER_IMPORT):
        power = sum(phase_values(POWER_IMPORT))
    current = totals.get(CURRENT_IMPORT)
    currents = phase_values(CURRENT_IMPORT)
    if current is None and currents:
        current = max(currents)
    voltage = totals.get(VOLTAGE)
    volts = phase_values(VOLTAGE)
    if voltage is None and volts:
        voltage = sum(volts) / len(volts)
    phases = sum(1 for c in currents if c > 0.5) or None
    energy = totals.get(ENERGY_IMPORT)
    if energy is None and phase_values(ENERGY_IMPORT):
        energy = sum(phase_values(ENERGY_IMPORT))
    return MeterSample(ts=ts, energy_wh=energy, power_w=power, current_a=current, voltage_v=voltage,
                       soc=totals.get(SOC), phases=phases)


def latest_sample(meter_values: Iterable[Mapping[str, Any]]) -> MeterSample | None:
    """Merge a list of MeterValues into the newest reading per measurand (None if empty)."""
    samples = sorted((normalise_meter_value(mv) for mv in meter_values), key=lambda s: s.ts)
    if not samples:
        return None
    merged: dict[str, Any] = {"ts": samples[-1].ts}
    for s in samples:
        for name in ("energy_wh", "power_w", "current_a", "voltage_v", "soc", "phases"):
            value = getattr(s, name)
            if value is not None:
                merged[name] = value
    return MeterSample(**merged)
