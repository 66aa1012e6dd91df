"""The uncontrolled counterfactual: the same cars, arrivals and needs, charged without a plan.

Every car draws the most it can from the moment it plugs in (its own and the EVSE's
maximum, tapered near full by the simulator's battery model `evse_sim.battery.Battery`)
until it reaches its target state of charge or leaves; when the site limit would be
exceeded, cars are served first come, first served. This is what the site would have
drawn with unmanaged chargers behind a main breaker. Pure and fast: no OCPP, no
optimizer, a simulated day in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from evfleet.app.demo.report import CarRecord, LoadSeries, ReportError
from evse_sim.battery import Battery
from evse_sim.ev import EvSpec
from evse_sim.evse import EvseKind, EvseSpec


@dataclass(frozen=True)
class CarSpec:
    """What the scenario says about one car (the same for both runs)."""

    car_id: str
    station_id: str
    evse_id: int
    arrival: datetime
    departure: datetime
    capacity_kwh: float
    initial_soc: float
    target_soc: float
    max_kw: float  # min(EV max on this EVSE kind, EVSE max), grid side
    efficiency: float = 0.92
    iso15118: bool = True
    battery_max_kw: float | None = None  # the battery's own maximum (taper scale); None = max_kw

    @property
    def need_kwh(self) -> float:
        """Energy through the meter that brings the battery from initial to target SoC."""
        return max(0.0, self.target_soc - self.initial_soc) * self.capacity_kwh / self.efficiency


def replay_uncontrolled(cars: Sequence[CarSpec], site_limit_kw: float, start: datetime, end: datetime,
                        step_s: float = 60.0) -> tuple[LoadSeries, list[CarRecord]]:
    """Charge `cars` at full power from arrival, first come first served under `site_limit_kw`.

    Returns the site load over [start, end) in steps of `step_s` and every car's record
    (energy delivered through the meter; `left` False for cars still plugged in at `end`).
    """
    if site_limit_kw <= 0:
        raise ReportError(f"site limit must be positive, got {site_limit_kw} kW")
    if step_s <= 0:
        raise ReportError(f"step must be positive, got {step_s} s")
    n_steps = max(1, int(round((end - start).total_seconds() / step_s)))
    order = sorted(cars, key=lambda c: (c.arrival, c.car_id))
    batteries = {c.car_id: Battery(capacity_wh=c.capacity_kwh * 1000.0, soc=c.initial_soc,
                                   max_power_w=(c.battery_max_kw or c.max_kw) * 1000.0,
                                   efficiency=c.efficiency)
                 for c in order}
    delivered_kwh = {c.car_id: 0.0 for c in order}
    load_kw: list[float] = []
    for i in range(n_steps):
        t = start + timedelta(seconds=i * step_s)
        headroom_w = site_limit_kw * 1000.0
        for car in order:
            if headroom_w <= 1e-6 or not car.arrival <= t < car.departure:
                continue
            drawn_w = batteries[car.car_id].charge(min(car.max_kw * 1000.0, headroom_w), step_s,
                                                   car.target_soc)
            delivered_kwh[car.car_id] += drawn_w * step_s / 3.6e6
            headroom_w -= drawn_w
        load_kw.append(site_limit_kw - headroom_w / 1000.0)
    records = [
        CarRecord(car_id=c.car_id, station_id=c.station_id, evse_id=c.evse_id, arrival=c.arrival,
                  departure=c.departure, need_kwh=c.need_kwh, delivered_kwh=delivered_kwh[c.car_id],
                  iso15118=c.iso15118, left=c.departure <= end)
        for c in order
    ]
    return LoadSeries(start, step_s, tuple(load_kw)), records


def car_spec(ev: EvSpec, station_id: str, evse_id: int, evse: EvseSpec) -> CarSpec:
    """The replay's view of a simulator EV on an EVSE (same limits as `evse_sim.ev.Ev.charge`)."""
    dc = evse.kind == EvseKind.DC
    vehicle_kw = ev.max_dc_power_kw if dc else ev.max_ac_power_kw
    return CarSpec(
        car_id=ev.ev_id, station_id=station_id, evse_id=evse_id, arrival=ev.arrival, departure=ev.departure,
        capacity_kwh=ev.capacity_kwh, initial_soc=ev.initial_soc, target_soc=ev.target_soc,
        max_kw=min(vehicle_kw, evse.max_power_kw), efficiency=ev.efficiency, iso15118=ev.hlc,
        battery_max_kw=max(ev.max_ac_power_kw, ev.max_dc_power_kw))
