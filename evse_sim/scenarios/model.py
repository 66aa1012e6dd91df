"""The scenario model: a site, its stations and the EVs that visit them (pydantic, JSON files).

Times are offsets in minutes from `start`, so one file can be replayed on any day (`at`).
Series (limits, prices, PV, base load) are a constant or one value per step of
`step_minutes`. `to_optimizer_instance()` turns a scenario into the optimizer's `Instance`
(optimizer/problem.py) for the same day.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evse_sim.ev import EvSpec
from evse_sim.evse import EvseKind, EvseSpec
from evse_sim.station import StationConfig

if TYPE_CHECKING:  # pragma: no cover
    from optimizer.problem import Instance

PerStep = float | list[float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvseModel(_Model):
    """One EVSE of a station."""

    kind: Literal["AC", "DC"] = "AC"
    max_power_kw: float = Field(default=11.0, gt=0, le=400)
    phases: int = Field(default=3, ge=1, le=3)

    def spec(self) -> EvseSpec:
        """The simulator's hardware model."""
        if self.kind == "DC":
            return EvseSpec.dc(self.max_power_kw)
        return EvseSpec.ac(self.max_power_kw, self.phases)


class StationModel(_Model):
    """One charging station on the site."""

    id: str = Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    evses: list[EvseModel] = Field(min_length=1)
    quirks: list[Literal["no_smart_charging", "duplicate_ended", "reject_profiles", "ignore_limits"]] = Field(
        default_factory=list, description="real-charger behaviours to imitate (evse_sim.station.QUIRKS)"
    )

    def config(self, **kwargs: Any) -> StationConfig:
        """A `StationConfig` for `SimStation` (extra fields passed through)."""
        return StationConfig(
            self.id, tuple(e.spec() for e in self.evses), quirks=frozenset(self.quirks), **kwargs
        )


class BessModel(_Model):
    """Stationary battery on the site (data for the optimizer; the simulator does not run it)."""

    capacity_kwh: float = Field(gt=0)
    max_power_kw: float = Field(gt=0)
    efficiency: float = Field(default=0.95, gt=0, le=1)
    initial_soc: float = Field(default=0.5, ge=0, le=1)


class SiteModel(_Model):
    """Grid connection, prices and on-site load/PV per step."""

    id: str = "default"
    import_limit_kw: PerStep = Field(
        description="grid import limit of the site [kW] (optimizer: site.import_limit_kw)"
    )
    base_load_kw: PerStep = 0.0
    pv_kw: PerStep = 0.0
    import_price: PerStep = Field(default=0.2, description="energy price per kWh")
    export_price: PerStep = 0.0
    bess: BessModel | None = None


class EvModel(_Model):
    """One EV visit: battery, limits, arrival and departure (minutes after the scenario start)."""

    id: str = Field(min_length=1)
    model: str = "generic"
    capacity_kwh: float = Field(gt=0)
    initial_soc: float = Field(ge=0, le=1)
    target_soc: float = Field(ge=0, le=1)
    max_ac_kw: float = Field(default=11.0, gt=0)
    max_dc_kw: float = Field(default=50.0, gt=0)
    ac_phases: int = Field(default=3, ge=1, le=3)
    efficiency: float = Field(default=0.92, gt=0, le=1)
    arrival_min: float = Field(ge=0)
    departure_min: float
    hlc: bool = False
    priority: float = Field(default=1.0, gt=0)
    station: str | None = Field(
        default=None, description="fixed station id, or null: first free EVSE of the site"
    )
    evse: int = Field(default=1, ge=1)
    id_token: str = ""

    @model_validator(mode="after")
    def _check(self) -> EvModel:
        if self.departure_min <= self.arrival_min:
            raise ValueError(f"EV {self.id}: departure_min must be after arrival_min")
        if self.target_soc < self.initial_soc:
            raise ValueError(f"EV {self.id}: target_soc below initial_soc")
        return self

    @property
    def need_kwh(self) -> float:
        """Battery energy needed [kWh]."""
        return (self.target_soc - self.initial_soc) * self.capacity_kwh

    def spec(self, start: datetime) -> EvSpec:
        """The simulator's EV for a scenario starting at `start`."""
        return EvSpec(
            ev_id=self.id,
            model=self.model,
            capacity_kwh=self.capacity_kwh,
            initial_soc=self.initial_soc,
            target_soc=self.target_soc,
            max_ac_power_kw=self.max_ac_kw,
            max_dc_power_kw=self.max_dc_kw,
            arrival=start + timedelta(minutes=self.arrival_min),
            departure=start + timedelta(minutes=self.departure_min),
            efficiency=self.efficiency,
            ac_phases=self.ac_phases,
            hlc=self.hlc,
            priority=int(self.priority),
            id_token=self.id_token,
        )


class Scenario(_Model):
    """A what-if day: site, stations and EV visits."""

    name: str
    description: str = ""
    source: str = ""
    start: datetime
    step_minutes: float = Field(default=15.0, gt=0)
    steps: int = Field(default=96, gt=0, le=10_000)
    unplug_when_full: bool = Field(
        default=False, description="EVs leave the charger once full (depots with queues)"
    )
    site: SiteModel
    stations: list[StationModel] = Field(min_length=1)
    evs: list[EvModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        ids = [s.id for s in self.stations]
        if len(set(ids)) != len(ids):
            raise ValueError("station ids must be unique")
        ev_ids = [e.id for e in self.evs]
        if len(set(ev_ids)) != len(ev_ids):
            raise ValueError("EV ids must be unique")
        by_id = {s.id: s for s in self.stations}
        for ev in self.evs:
            if ev.station is not None:
                if ev.station not in by_id:
                    raise ValueError(f"EV {ev.id}: unknown station {ev.station!r}")
                if ev.evse > len(by_id[ev.station].evses):
                    raise ValueError(f"EV {ev.id}: station {ev.station} has no EVSE {ev.evse}")
        for name in ("import_limit_kw", "base_load_kw", "pv_kw", "import_price", "export_price"):
            value = getattr(self.site, name)
            if isinstance(value, list) and len(value) != self.steps:
                raise ValueError(f"site.{name} has {len(value)} values, expected steps={self.steps}")
        return self

    @property
    def horizon(self) -> timedelta:
        """Length of the scenario."""
        return timedelta(minutes=self.step_minutes * self.steps)

    @property
    def evse_count(self) -> int:
        """Number of EVSEs over all stations."""
        return sum(len(s.evses) for s in self.stations)

    def at(self, start: datetime) -> Scenario:
        """The same scenario starting at `start` (offsets are kept)."""
        return self.model_copy(update={"start": start})

    def series(self, name: str) -> list[float]:
        """A site series as one value per step."""
        value = getattr(self.site, name)
        return list(value) if isinstance(value, list) else [float(value)] * self.steps

    def ev_specs(self) -> list[EvSpec]:
        """Every EV of the scenario, timed from `start`."""
        return [ev.spec(self.start) for ev in self.evs]

    def to_optimizer_instance(self) -> Instance:
        """The optimizer's `Instance` for this scenario (charger per EVSE, EVs on fixed or free chargers)."""
        from optimizer.problem import EV, Charger, Instance, Site, Storage, Tariff

        def charger_id(station: str, evse: int) -> str:
            return f"{station}/{evse}"

        chargers = [
            Charger(id=charger_id(s.id, i), max_kw=e.max_power_kw)
            for s in self.stations
            for i, e in enumerate(s.evses, start=1)
        ]
        kinds = {charger_id(s.id, i): e.kind for s in self.stations for i, e in enumerate(s.evses, start=1)}
        evs = []
        for ev in self.evs:
            arrival = max(0, math.ceil(ev.arrival_min / self.step_minutes - 1e-9))
            departure = min(self.steps, math.floor(ev.departure_min / self.step_minutes + 1e-9))
            if departure <= arrival:
                continue  # visit shorter than a step or outside the horizon
            fixed = charger_id(ev.station, ev.evse) if ev.station is not None else None
            dc = fixed is not None and kinds[fixed] == EvseKind.DC.value
            evs.append(
                EV(
                    id=ev.id,
                    charger=fixed,
                    arrival=arrival,
                    departure=departure,
                    energy_kwh=round(ev.need_kwh, 3),
                    max_kw=ev.max_dc_kw if dc else ev.max_ac_kw,
                    capacity_kwh=ev.capacity_kwh,
                    initial_kwh=round(ev.initial_soc * ev.capacity_kwh, 3),
                    efficiency=ev.efficiency,
                    priority=ev.priority,
                )
            )
        storage = []
        if self.site.bess is not None:
            b = self.site.bess
            storage.append(
                Storage(
                    id="bess",
                    capacity_kwh=b.capacity_kwh,
                    initial_kwh=b.initial_soc * b.capacity_kwh,
                    max_charge_kw=b.max_power_kw,
                    max_discharge_kw=b.max_power_kw,
                    efficiency=b.efficiency,
                )
            )
        site = self.site
        return Instance(
            start=self.start,
            step_minutes=self.step_minutes,
            steps=self.steps,
            site=Site(import_limit_kw=site.import_limit_kw, base_load_kw=site.base_load_kw, pv_kw=site.pv_kw),
            tariff=Tariff(import_price=site.import_price, export_price=site.export_price),
            chargers=chargers,
            evs=evs,
            storage=storage,
        )
