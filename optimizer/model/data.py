"""Instance -> numpy arrays over (ev, t), (storage, t) and (charger, t): the one input of every model.

All model builders (Pyomo reference, direct HiGHS LP) and baselines read this, never the
pydantic objects, so bounds and masks are computed once and identically for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from optimizer.problem import EV, Instance, PerStep, Storage
from optimizer.robust import planned_evs

STICKINESS_PRICE_FLOOR = 0.1
"""Price per kWh that stickiness is scaled by at least (see ProblemData.stickiness_weight)."""

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def per_step(value: PerStep | None, steps: int) -> FloatArray:
    """A constant or a per-step list as a float array of length `steps` (None -> zeros)."""
    if value is None:
        return np.zeros(steps)
    if isinstance(value, list):
        return np.asarray(value, dtype=float)
    return np.full(steps, float(value))


@dataclass(frozen=True)
class ProblemData:
    """Arrays describing an Instance. Shapes: E evs, C chargers, S storages, T steps."""

    steps: int
    dt_h: float
    """Nominal step length [h] (steps 1..)."""
    step_h: FloatArray
    """(T,): length of each step [h]; step 0 is shorter when the horizon starts inside a step."""
    ev_ids: list[str]
    charger_ids: list[str]
    storage_ids: list[str]
    # site and tariff, shape (T,)
    import_limit_kw: FloatArray
    export_limit_kw: FloatArray
    base_load_kw: FloatArray
    pv_kw: FloatArray
    import_price: FloatArray
    export_price: FloatArray
    co2_g_per_kwh: FloatArray
    has_co2: bool
    peak_price_per_kw: float
    # chargers, shape (C,) and (C, T)
    charger_max_kw: FloatArray
    charger_bidirectional: BoolArray
    charger_free: BoolArray
    """(C, T): charger not occupied by an EV fixed to it."""
    # evs, shape (E,) and (E, T)
    ev_charger: IntArray
    """(E,): index of the fixed charger, -1 = the optimizer assigns one."""
    available: BoolArray
    """(E, T): EV present (arrival <= t < departure)."""
    p_max_kw: FloatArray
    """(E, T): max charge power at the charger (0 where absent)."""
    d_max_kw: FloatArray
    """(E, T): max V2G discharge power (0 where absent or not allowed)."""
    ev_max_kw: FloatArray
    need_kwh: FloatArray
    initial_kwh: FloatArray
    capacity_kwh: FloatArray
    min_kwh: FloatArray
    efficiency: FloatArray
    priority: FloatArray
    arrival: IntArray
    departure: IntArray
    # storage, shape (S,)
    st_capacity_kwh: FloatArray
    st_initial_kwh: FloatArray
    st_final_kwh: FloatArray
    st_max_charge_kw: FloatArray
    st_max_discharge_kw: FloatArray
    st_efficiency: FloatArray
    # objective
    kind: str
    unmet_penalty_per_kwh: float | None
    degradation_per_kwh: float
    tie_break: float | None
    reference_kw: FloatArray
    """(E, T): power a previous solve planned (NaN = no reference)."""
    stickiness: float
    """Cost per kWh of deviation from `reference_kw`, relative to prices (0 = off; `stickiness_weight`)."""
    estimated: BoolArray
    """(E,): the EV's energy is the operator's estimate, not a need it reported (`EV.energy_estimated`)."""

    @cached_property
    def charge_cells(self) -> tuple[IntArray, IntArray]:
        """(EV, step) indices where the EV can charge (p_max_kw > 0), row-major: the LP's p columns.

        Computed once per ProblemData (build, extraction and cost read it); the arrays are read-only."""
        return _frozen_nonzero(self.p_max_kw > 0)

    @cached_property
    def discharge_cells(self) -> tuple[IntArray, IntArray]:
        """(EV, step) indices where the EV can discharge (d_max_kw > 0): the LP's d columns."""
        return _frozen_nonzero(self.d_max_kw > 0)

    @property
    def n_ev(self) -> int:
        """Number of EVs."""
        return len(self.ev_ids)

    @property
    def n_storage(self) -> int:
        """Number of storages."""
        return len(self.storage_ids)

    @property
    def pool(self) -> BoolArray:
        """(E,): EVs whose charger the optimizer assigns."""
        return self.ev_charger < 0

    @property
    def needs_assignment(self) -> bool:
        """True if some EV has no fixed charger (the model needs assignment binaries)."""
        return bool(self.pool.any())

    @property
    def price_scale(self) -> float:
        """A typical price magnitude (for tie-break weights and default penalties)."""
        scale = float(np.max(np.abs(np.concatenate([self.import_price, self.export_price, [0.0]]))))
        return scale if scale > 0 else 1.0

    @property
    def stickiness_weight(self) -> float:
        """Absolute cost per kWh of deviation from `reference_kw` (0 = off).

        Relative to the largest price, but at least to STICKINESS_PRICE_FLOOR: on a site without a
        tariff the LP's only prices are tiny time preferences, which would otherwise outweigh it.
        """
        return self.stickiness * max(self.price_scale, STICKINESS_PRICE_FLOOR)


def _frozen_nonzero(mask: BoolArray) -> tuple[IntArray, IntArray]:
    """np.nonzero of a 2-D mask, as read-only arrays (they are shared through a cache)."""
    rows, cols = np.nonzero(mask)
    rows.flags.writeable = False
    cols.flags.writeable = False
    return rows, cols


def _charger_caps(charger_max: FloatArray, charger_bidir: npt.NDArray[np.bool_],
                  ev_charger: npt.NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
    """Per EV, the charging and the discharging cap of its charger (-1 = any charger: the largest,
    and the largest bidirectional one)."""
    fixed = ev_charger >= 0
    if not len(charger_max):
        return np.zeros(len(ev_charger)), np.zeros(len(ev_charger))
    pool_cap = float(charger_max.max())
    pool_bidir_cap = float(charger_max[charger_bidir].max()) if charger_bidir.any() else 0.0
    ch_idx = np.where(fixed, ev_charger, 0)
    ch_cap = np.where(fixed, charger_max[ch_idx], pool_cap)
    ch_bidir_cap = np.where(fixed, np.where(charger_bidir[ch_idx], charger_max[ch_idx], 0.0), pool_bidir_cap)
    return ch_cap, ch_bidir_cap


def _storage_arrays(st: list[Storage]) -> dict[str, FloatArray]:
    """The `st_*` arrays of `ProblemData` (one entry per storage unit)."""
    return {
        "st_capacity_kwh": np.array([s.capacity_kwh for s in st], dtype=float),
        "st_initial_kwh": np.array([s.initial_kwh for s in st], dtype=float),
        "st_final_kwh": np.array([s.initial_kwh if s.final_kwh is None else s.final_kwh for s in st],
                                 dtype=float),
        "st_max_charge_kw": np.array([s.max_charge_kw for s in st], dtype=float),
        "st_max_discharge_kw": np.array([s.max_discharge_kw for s in st], dtype=float),
        "st_efficiency": np.array([s.efficiency for s in st], dtype=float),
    }


def build_data(inst: Instance) -> ProblemData:
    """Compute all arrays of an instance (vectorised; one pass over EVs for their scalars)."""
    steps = inst.steps
    t = np.arange(steps)
    charger_index = {c.id: i for i, c in enumerate(inst.chargers)}
    charger_max = np.array([c.max_kw for c in inst.chargers], dtype=float)
    charger_bidir = np.array([c.bidirectional for c in inst.chargers], dtype=bool)
    evs = planned_evs(inst)  # the site's safety margins (Instance.robustness), if any
    ev_charger = np.array(
        [charger_index[e.charger] if e.charger is not None else -1 for e in evs], dtype=np.int64
    )
    arrival = np.array([e.arrival for e in evs], dtype=np.int64)
    departure = np.array([e.departure for e in evs], dtype=np.int64)
    ev_max = np.array([e.max_kw for e in evs], dtype=float)
    v2g = np.array([e.v2g for e in evs], dtype=bool)
    available = (t[None, :] >= arrival[:, None]) & (t[None, :] < departure[:, None])

    fixed = ev_charger >= 0
    ch_cap, ch_bidir_cap = _charger_caps(charger_max, charger_bidir, ev_charger)
    p_max = np.minimum(ev_max, ch_cap)[:, None] * available
    d_max = (np.minimum(ev_max, ch_bidir_cap) * v2g)[:, None] * available

    charger_free = np.ones((len(inst.chargers), steps), dtype=bool)
    if fixed.any():
        for e in np.flatnonzero(fixed):
            charger_free[ev_charger[e], arrival[e] : departure[e]] = False

    st = inst.storage
    tariff, site, obj = inst.tariff, inst.site, inst.objective
    return ProblemData(
        steps=steps,
        dt_h=inst.dt_h,
        step_h=np.asarray(inst.step_hours(), dtype=float),
        ev_ids=[e.id for e in evs],
        charger_ids=[c.id for c in inst.chargers],
        storage_ids=[s.id for s in st],
        import_limit_kw=per_step(site.import_limit_kw, steps),
        export_limit_kw=per_step(site.export_limit_kw, steps),
        base_load_kw=per_step(site.base_load_kw, steps),
        pv_kw=per_step(site.pv_kw, steps),
        import_price=per_step(tariff.import_price, steps),
        export_price=per_step(tariff.export_price, steps),
        co2_g_per_kwh=per_step(tariff.co2_g_per_kwh, steps),
        has_co2=tariff.co2_g_per_kwh is not None,
        peak_price_per_kw=tariff.peak_price_per_kw,
        charger_max_kw=charger_max,
        charger_bidirectional=charger_bidir,
        charger_free=charger_free,
        ev_charger=ev_charger,
        available=available,
        p_max_kw=p_max,
        d_max_kw=d_max,
        ev_max_kw=ev_max,
        need_kwh=np.array([e.energy_kwh for e in evs], dtype=float),
        initial_kwh=np.array([e.initial_kwh for e in evs], dtype=float),
        capacity_kwh=np.array([e.capacity_kwh for e in evs], dtype=float),
        min_kwh=np.array([e.min_kwh for e in evs], dtype=float),
        efficiency=np.array([e.efficiency for e in evs], dtype=float),
        priority=np.array([e.priority for e in evs], dtype=float),
        arrival=arrival,
        departure=departure,
        **_storage_arrays(st),
        kind=obj.kind,
        unmet_penalty_per_kwh=obj.unmet_penalty_per_kwh,
        degradation_per_kwh=obj.degradation_per_kwh,
        tie_break=obj.tie_break,
        reference_kw=_references(evs, steps),
        stickiness=obj.stickiness,
        estimated=np.array([e.energy_estimated for e in evs], dtype=bool),
    )


def _references(evs: list[EV], steps: int) -> FloatArray:
    """(E, T) reference powers, NaN where an EV has none."""
    none = [None] * steps
    # dtype=float turns None into NaN in C (one call, not a Python loop over E x T values)
    return np.array([none if ev.reference_kw is None else ev.reference_kw for ev in evs],
                    dtype=float).reshape(len(evs), steps)
