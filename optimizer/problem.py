"""The optimizer's problem as data: `Instance` (input) and `Schedule` (output).

Both are pydantic v2 models; their JSON Schemas are published under `docs/schemas/`
(`python -m optimizer.schemas` regenerates them). Time is discrete: `steps` steps of
`step_minutes` from `start`; step indices are 0-based and `departure` is exclusive, so an EV
with `arrival=2, departure=5` can charge during steps 2, 3 and 4.

Units: power in kW (positive = drawn from the grid / into a battery), energy in kWh, prices per
kWh in the tariff's currency, CO2 intensity in g/kWh.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, field_validator, model_validator

PerStep = float | list[float]
"""A constant or one value per step (length `steps`)."""

Kind = Literal["cost", "profit", "service_time"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Site(_Model):
    """Grid connection of the site: headroom, export limit, on-site load and PV."""

    import_limit_kw: PerStep = Field(
        description="Grid import limit (site headroom) [kW], constant or per step."
    )
    export_limit_kw: PerStep = Field(default=0.0, description="Grid export limit [kW], constant or per step.")
    base_load_kw: PerStep = Field(default=0.0, description="Non-EV site load [kW], constant or per step.")
    pv_kw: PerStep = Field(default=0.0, description="PV generation available [kW], constant or per step.")


class Tariff(_Model):
    """Energy prices, demand charge and grid CO2 intensity."""

    import_price: PerStep = Field(description="Price of imported energy [per kWh], constant or per step.")
    export_price: PerStep = Field(default=0.0, description="Price paid for exported energy [per kWh].")
    peak_price_per_kw: NonNegativeFloat = Field(
        default=0.0, description="Demand charge on the highest import step of the horizon [per kW]."
    )
    co2_g_per_kwh: PerStep | None = Field(
        default=None, description="Grid CO2 intensity [g/kWh] (for the CO2 metric)."
    )


class Charger(_Model):
    """One charging point (EVSE)."""

    id: str = Field(min_length=1)
    max_kw: float = Field(gt=0, description="Maximum power of the charger [kW].")
    bidirectional: bool = Field(default=False, description="Can discharge an EV to the site (V2G).")


class EV(_Model):
    """One vehicle and its charging need."""

    id: str = Field(min_length=1)
    charger: str | None = Field(
        default=None,
        description="Charger the EV is plugged into, or null to let the optimizer assign one per step.",
    )
    arrival: int = Field(ge=0, description="First step the EV is present.")
    departure: int = Field(description="Step the EV leaves (exclusive).")
    energy_kwh: NonNegativeFloat = Field(description="Energy needed at the battery by departure [kWh].")
    max_kw: float = Field(gt=0, description="Maximum charge (and V2G discharge) power of the EV [kW].")
    capacity_kwh: float = Field(gt=0, description="Usable battery capacity [kWh].")
    initial_kwh: NonNegativeFloat = Field(default=0.0, description="Battery energy at arrival [kWh].")
    min_kwh: NonNegativeFloat = Field(default=0.0, description="Lowest battery energy V2G may leave [kWh].")
    efficiency: float = Field(
        default=1.0, gt=0, le=1, description="Charger-to-battery efficiency (both directions)."
    )
    priority: float = Field(default=1.0, gt=0, description="Weight of this EV's unmet-energy penalty.")
    session_need_kwh: NonNegativeFloat | None = Field(
        default=None,
        description="The whole estimated need of this charging session [kWh], when a rolling re-plan "
        "already delivered part of it (session_delivered_kwh). Only robustness.energy_margin reads it: "
        "the plan then targets (1 + margin) x session_need_kwh in total, so the margin does not shrink "
        "to nothing as the estimate is delivered. null = energy_kwh is the whole need.",
    )
    energy_estimated: bool = Field(
        default=False,
        description="energy_kwh is the operator's estimate (e.g. from the driver's history), not a need the "
        "EV reported (ISO 15118); robustness.estimated_only applies the energy margin to these EVs only.",
    )
    session_delivered_kwh: NonNegativeFloat = Field(
        default=0.0, description="Energy delivered in this session before the horizon [kWh]."
    )
    v2g: bool = Field(default=False, description="The EV may discharge (needs a bidirectional charger).")
    reference_kw: list[float | None] | None = Field(
        default=None,
        description="Charge power a previous solve planned for this EV, one value per step of this "
        "instance (null inside the list = no reference for that step) [kW]. With objective.stickiness the "
        "optimizer stays near it wherever that costs (almost) nothing, so rolling re-plans do not move "
        "EVs for no gain (OCPP K16). null = no reference.",
    )

    @model_validator(mode="after")
    def _check(self) -> EV:
        if self.departure <= self.arrival:
            raise ValueError(f"departure ({self.departure}) must be after arrival ({self.arrival})")
        if self.initial_kwh > self.capacity_kwh + 1e-9:
            raise ValueError(f"initial_kwh ({self.initial_kwh}) exceeds capacity_kwh ({self.capacity_kwh})")
        if self.initial_kwh + self.energy_kwh > self.capacity_kwh + 1e-9:
            raise ValueError(
                f"initial_kwh + energy_kwh ({self.initial_kwh + self.energy_kwh:g}) exceeds "
                f"capacity_kwh ({self.capacity_kwh:g})"
            )
        if self.min_kwh > self.initial_kwh + 1e-9:
            raise ValueError(f"min_kwh ({self.min_kwh}) exceeds initial_kwh ({self.initial_kwh})")
        return self


class Storage(_Model):
    """Stationary battery (BESS) on the site."""

    id: str = Field(min_length=1)
    capacity_kwh: float = Field(gt=0)
    initial_kwh: NonNegativeFloat = 0.0
    max_charge_kw: NonNegativeFloat
    max_discharge_kw: NonNegativeFloat
    efficiency: float = Field(
        default=1.0, gt=0, le=1, description="One-way efficiency (applied to charge and discharge)."
    )
    final_kwh: NonNegativeFloat | None = Field(
        default=None,
        description="Lowest energy at the end of the horizon [kWh]; null = initial_kwh (energy-neutral).",
    )

    @model_validator(mode="after")
    def _check(self) -> Storage:
        if self.initial_kwh > self.capacity_kwh + 1e-9:
            raise ValueError(f"initial_kwh ({self.initial_kwh}) exceeds capacity_kwh ({self.capacity_kwh})")
        if self.final_kwh is not None and self.final_kwh > self.capacity_kwh + 1e-9:
            raise ValueError(f"final_kwh ({self.final_kwh}) exceeds capacity_kwh ({self.capacity_kwh})")
        return self


class Objective(_Model):
    """What the optimizer minimises (or maximises, for profit)."""

    kind: Kind = Field(default="cost", description="cost | profit | service_time")
    unmet_penalty_per_kwh: NonNegativeFloat | None = Field(
        default=None,
        description="Soft energy needs: penalty per kWh not delivered, times the EV's priority. "
        "null = needs are hard constraints.",
    )
    degradation_per_kwh: NonNegativeFloat = Field(
        default=0.0, description="Battery wear cost per kWh discharged by V2G."
    )
    tie_break: NonNegativeFloat | None = Field(
        default=None,
        description="Weight of the secondary terms (lower peak; earlier charging on vertex models) that pick "
        "among equal-cost optima, relative to the largest price; 0 disables them, a value may trade a price "
        "difference below it. null = automatic: 1e-4 for models solved to a vertex (simplex, MILP); for the "
        "direct LP the lowest peak at a weight that cannot change the cost optimum (half the smallest price "
        "gap, at most 1e-2), off with V2G, storage, stickiness references, a demand charge or above 20,000 "
        "charge columns (optimizer.model.ties, docs/optimizer.md).",
    )
    stickiness: NonNegativeFloat = Field(
        default=1e-3,
        description="Cost per kWh of deviation from an EV's reference_kw, relative to the largest price "
        "(taken as at least 0.1 per kWh); 0 ignores the references. Small enough that any real price "
        "difference wins over staying put.",
    )


class Robustness(_Model):
    """How this site plans for departures and energy needs it only knows as estimates (seed 001/003).

    Both margins are off by default (plan on the estimates). The optimizer plans with them; the
    schedule's unmet energy is then measured against the planned (margin-inflated) need and departure.
    """

    energy_margin: NonNegativeFloat = Field(
        default=0.0,
        description="Safety margin on energy needs: plan each EV's need x (1 + energy_margin), capped at "
        "its battery room (capacity_kwh - initial_kwh). 0 = plan the estimate.",
    )
    departure_margin_minutes: NonNegativeFloat = Field(
        default=0.0,
        description="Chance-constrained departure: plan each EV to leave this many minutes earlier than its "
        "estimated departure (rounded up to whole steps, never before arrival + 1 step). With departures "
        "~ N(estimate, sigma), z_(1-alpha) x sigma keeps P(leaves before the plan ends) <= alpha. 0 = off.",
    )
    estimated_only: bool = Field(
        default=False,
        description="Apply energy_margin only to EVs whose energy_estimated is true (needs not reported by "
        "the EV); false = to every EV.",
    )


class Instance(_Model):
    """One fleet scheduling problem over a horizon of `steps` steps."""

    start: datetime = Field(
        description="Start of step 0 of the step grid (ISO 8601); first_step_minutes makes step 0 partial."
    )
    step_minutes: float = Field(gt=0)
    steps: int = Field(gt=0, le=10_000)
    first_step_minutes: float | None = Field(
        default=None,
        gt=0,
        description="Length of step 0 when the horizon starts inside a step (a rolling re-plan made after "
        "the step began): step 0 covers only the last first_step_minutes of [start, start + step_minutes), "
        "i.e. the horizon begins at start + step_minutes - first_step_minutes; step k >= 1 still starts at "
        "start + k * step_minutes. Power is power in every step, so step 0 holds power x "
        "first_step_minutes of energy. null = step_minutes (all steps full).",
    )
    site: Site
    tariff: Tariff
    chargers: list[Charger] = Field(default_factory=list)
    evs: list[EV] = Field(default_factory=list)
    storage: list[Storage] = Field(default_factory=list)
    objective: Objective = Field(default_factory=lambda: Objective.model_validate({}))
    robustness: Robustness = Field(
        default_factory=lambda: Robustness.model_validate({}),
        description="Safety margins on uncertain energy needs and departures (per site).",
    )

    @property
    def dt_h(self) -> float:
        """Step length in hours (of steps 1..; step 0 may be shorter, see `step_hours`)."""
        return self.step_minutes / 60.0

    def step_hours(self) -> list[float]:
        """Length of every step in hours (step 0 is `first_step_minutes` when set)."""
        out = [self.dt_h] * self.steps
        if self.first_step_minutes is not None:
            out[0] = self.first_step_minutes / 60.0
        return out

    @property
    def horizon_start(self) -> datetime:
        """When the horizon begins: `start`, or later within step 0 when `first_step_minutes` is set."""
        if self.first_step_minutes is None:
            return self.start
        return self.start + timedelta(minutes=self.step_minutes - self.first_step_minutes)

    @field_validator("chargers")
    @classmethod
    def _unique_chargers(cls, chargers: list[Charger]) -> list[Charger]:
        _check_unique([c.id for c in chargers], "chargers")
        return chargers

    @model_validator(mode="after")
    def _check(self) -> Instance:
        for path, value in _per_step_fields(self):
            if isinstance(value, list) and len(value) != self.steps:
                raise ValueError(f"{path}: has {len(value)} values, expected steps={self.steps}")
        if self.first_step_minutes is not None and self.first_step_minutes > self.step_minutes + 1e-9:
            raise ValueError(f"first_step_minutes ({self.first_step_minutes:g}) exceeds step_minutes "
                             f"({self.step_minutes:g})")
        for name in ("import_limit_kw", "export_limit_kw", "base_load_kw", "pv_kw"):
            if min(_as_list(getattr(self.site, name), self.steps)) < 0:
                raise ValueError(f"site.{name}: values must be >= 0")
        _check_unique([e.id for e in self.evs], "evs")
        _check_unique([s.id for s in self.storage], "storage")
        chargers = {c.id: c for c in self.chargers}
        for i, ev in enumerate(self.evs):
            where = f"evs[{i}] ({ev.id})"
            if ev.departure > self.steps:
                raise ValueError(f"{where}.departure: {ev.departure} is beyond steps={self.steps}")
            if ev.charger is not None and ev.charger not in chargers:
                raise ValueError(f"{where}.charger: unknown charger id {ev.charger!r}")
            if ev.reference_kw is not None and len(ev.reference_kw) != self.steps:
                raise ValueError(f"{where}.reference_kw: has {len(ev.reference_kw)} values, "
                                 f"expected steps={self.steps}")
            if ev.charger is None and not chargers:
                raise ValueError(f"{where}.charger: null (assign one) but the instance has no chargers")
        _check_fixed_overlaps(self.evs)
        return self


def _as_list(value: PerStep, steps: int) -> list[float]:
    return list(value) if isinstance(value, list) else [float(value)] * steps


def _per_step_fields(inst: Instance) -> list[tuple[str, PerStep | None]]:
    return [
        ("site.import_limit_kw", inst.site.import_limit_kw),
        ("site.export_limit_kw", inst.site.export_limit_kw),
        ("site.base_load_kw", inst.site.base_load_kw),
        ("site.pv_kw", inst.site.pv_kw),
        ("tariff.import_price", inst.tariff.import_price),
        ("tariff.export_price", inst.tariff.export_price),
        ("tariff.co2_g_per_kwh", inst.tariff.co2_g_per_kwh),
    ]


def _check_unique(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what}: duplicate id {i!r}")
        seen.add(i)


def _check_fixed_overlaps(evs: list[EV]) -> None:
    by_charger: dict[str, list[EV]] = {}
    for ev in evs:
        if ev.charger is not None:
            by_charger.setdefault(ev.charger, []).append(ev)
    for cid, group in by_charger.items():
        group.sort(key=lambda e: e.arrival)
        for a, b in zip(group, group[1:], strict=False):
            if b.arrival < a.departure:
                raise ValueError(
                    f"evs: {a.id!r} and {b.id!r} are both on charger {cid!r} during overlapping steps "
                    f"({a.arrival}-{a.departure} and {b.arrival}-{b.departure}); set charger to null "
                    "to let the optimizer share it"
                )


class SolveStatus(StrEnum):
    """Outcome of a solve, as a value (never an exception)."""

    OPTIMAL = "optimal"
    """Solved to optimality (within the MIP gap for MILPs)."""
    FEASIBLE = "feasible"
    """A feasible schedule, not proven optimal (time limit, or LP relaxation + rounding)."""
    HEURISTIC = "heuristic"
    """A baseline strategy's schedule (baselines are heuristics by design)."""
    FALLBACK = "fallback"
    """The optimizer failed (infeasible, no solution in time, error); a safe baseline is returned."""


class Metrics(_Model):
    """Figures of merit of a schedule, computed the same way for every strategy."""

    energy_cost: float = Field(description="Import cost minus export revenue [currency].")
    total_cost: float = Field(
        description="The cost objective evaluated on this schedule: energy cost + demand charge + V2G "
        "degradation + unmet-energy penalties (priority-weighted; 0 when needs are hard) [currency]. "
        "Comparable across strategies; profit = -total_cost."
    )
    peak_grid_kw: float = Field(description="Highest grid import over the horizon [kW].")
    unmet_kwh: float = Field(description="Energy needs not delivered by departure, summed over EVs [kWh].")
    delivered_kwh: float = Field(description="Energy delivered to EV batteries (net of V2G) [kWh].")
    pv_self_consumption: float | None = Field(
        description="Share of PV generation used on site (0..1); null without PV."
    )
    co2_kg: float | None = Field(description="CO2 of imported energy [kg]; null without co2_g_per_kwh.")
    demand_charge: float = Field(default=0.0, description="peak_price_per_kw times peak_grid_kw [currency].")
    v2g_discharged_kwh: float = Field(default=0.0, description="Energy discharged by EVs (grid side) [kWh].")
    degradation_cost: float = Field(
        default=0.0, description="degradation_per_kwh times V2G discharge [currency]."
    )
    service_time_h: float = Field(
        description="Sum over EVs of the time from arrival until the need is met (departure if never) [h]."
    )
    soc_compliance: float | None = Field(
        description="Share of EVs whose need is met (0..1); null without EVs."
    )
    build_seconds: float = Field(
        default=0.0, description="Time to build the model (or run the baseline) [s]."
    )
    solve_seconds: float = Field(
        default=0.0, description="Time in the solver, incl. translation and extraction [s]."
    )


class Schedule(_Model):
    """A charging schedule for an `Instance`: per-step power of every EV and storage, and its metrics."""

    strategy: str
    status: SolveStatus
    message: str = Field(default="", description="Why the status is what it is (fallback reason, gap, ...).")
    objective_kind: Kind
    objective_value: float | None = Field(
        description="Objective of the model (cost incl. penalties; profit for kind=profit; "
        "hours for service_time); null for baselines."
    )
    mip_gap: float | None = None
    start: datetime
    step_minutes: float
    steps: int
    first_step_minutes: float | None = Field(
        default=None, description="Length of step 0 when shorter than step_minutes (as in the instance)."
    )
    ev_power_kw: dict[str, list[float]] = Field(
        description="Per EV id: power at the charger per step [kW], negative = V2G discharge."
    )
    storage_power_kw: dict[str, list[float]] = Field(
        default_factory=dict, description="Per storage id: power per step [kW], negative = discharge."
    )
    grid_kw: list[float] = Field(description="Net grid power per step [kW], positive = import.")
    assignment: dict[str, list[str | None]] = Field(
        description="Per EV id: charger id used at each step (null when not plugged in/charging)."
    )
    ev_final_kwh: dict[str, float] = Field(description="Per EV id: battery energy at departure [kWh].")
    ev_unmet_kwh: dict[str, float] = Field(description="Per EV id: need not delivered by departure [kWh].")
    metrics: Metrics


StrategyName = Annotated[str, Field(description="A name in optimizer.strategies.STRATEGIES")]


def load_instance(text: str) -> Instance:
    """Parse and validate an instance from JSON text (raises pydantic.ValidationError)."""
    return Instance.model_validate_json(text)
