"""Scenario generators: the seed 001 fleet, the seed 003 depot, the seed 004 shared source, random fleets.

Each function is deterministic for a given seed. The papers give structure and some numbers;
what they leave out (arrival spread, Gamma parameters, price and load curves) is a documented
assumption here and in docs/simulator.md.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np

from evse_sim.scenarios.model import BessModel, EvModel, EvseModel, Scenario, SiteModel, StationModel
from optimizer.cases.seed001 import FLEET_MODELS, GUARANTEED_KW_PER_278
from optimizer.cases.seed003 import draw_fleet, factory_load_kw, mibel_like_price, pv_kw

# --- seed 001: 278 cars, ten-model mix (the paper's table), 1 MW guaranteed -------------------------
# FLEET_MODELS: (model, battery kWh, consumption kWh/km, cars of the 278) as printed in the paper's
# table; one copy, shared with the optimizer's seed 001 case.
# max DC power per model [kW] (manufacturer data; the paper has none)
FLEET_DC_KW = (170.0, 170.0, 50.0, 50.0, 150.0, 77.0, 100.0, 120.0, 150.0, 135.0)
# daily driving distance ~ Gamma(k_w, theta_w) [km] by weekday (Mon..Sun): commuting on weekdays,
# fewer but longer trips at the weekend. The paper fits such laws on 10 cars but prints no values.
WEEKDAY_GAMMA_KM: tuple[tuple[float, float], ...] = (
    (2.4, 20.0),
    (2.4, 20.0),
    (2.4, 20.5),
    (2.4, 20.5),
    (2.2, 23.0),
    (1.6, 26.0),
    (1.3, 24.0),
)
FLEET_CHARGER_KW = 11.0
SEED001_DAY = date(2025, 3, 4)  # a Tuesday; scenario runs 12:00 -> 12:00 next day


def _tou_price(start_hour: float, steps: int, step_minutes: float) -> list[float]:
    hours = (start_hour + np.arange(steps) * step_minutes / 60.0) % 24
    price = np.full(steps, 0.16)
    price[(hours >= 17) & (hours < 21)] = 0.24
    price[(hours >= 23) | (hours < 7)] = 0.09
    return [float(x) for x in price.round(4)]


def _household_load_kw(n_cars: int, steps: int, step_minutes: float, start_hour: float) -> np.ndarray:
    hours = (start_hour + np.arange(steps) * step_minutes / 60.0) % 24
    shape = (
        0.45 + 0.35 * np.exp(-(((hours - 19.0) % 24) ** 2) / 6.0) + 0.15 * np.exp(-((hours - 8.0) ** 2) / 3.0)
    )
    return np.asarray(shape * 2.2 * n_cars)


def seed001_fleet(
    n_cars: int = 278, seed: int = 1, day: date = SEED001_DAY, hlc_share: float = 0.6, prefix: str = "S001-"
) -> Scenario:
    """The seed 001 fleet: one 11 kW AC charger per car, overnight visits, ToU prices, household headroom.

    Daily energy = Gamma(k_w, θ_w) km for the weekday of the *next* day (the day the charge is
    for) times the model's kWh/km, capped at 80 % of the battery; the car arrives with
    ``target - energy`` and must be back at ``target`` SoC by its departure.
    """
    if n_cars < 1:
        raise ValueError("n_cars must be >= 1")
    rng = np.random.default_rng(seed)
    counts = np.array([m[3] for m in FLEET_MODELS], dtype=float)
    if n_cars == 278:
        model_idx = np.repeat(np.arange(len(FLEET_MODELS)), counts.astype(int))
    else:
        model_idx = rng.choice(len(FLEET_MODELS), size=n_cars, p=counts / counts.sum())
    steps, step_min, start_hour = 96, 15.0, 12.0
    start = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
    k, theta = WEEKDAY_GAMMA_KM[(day + timedelta(days=1)).weekday()]
    km = rng.gamma(k, theta, size=n_cars)
    arrival_min = rng.uniform(4 * 60, 9 * 60, size=n_cars)  # 16:00-21:00
    departure_min = rng.uniform(18 * 60, 21 * 60, size=n_cars)  # 06:00-09:00 next day
    target = rng.uniform(0.8, 0.9, size=n_cars)
    hlc = rng.uniform(size=n_cars) < hlc_share
    stations, evs = [], []
    for i in range(n_cars):
        name, battery, per_km, _count = FLEET_MODELS[model_idx[i]]
        need = min(km[i] * per_km, 0.8 * battery, target[i] * battery - 0.05 * battery)
        sid = f"{prefix}{i + 1:05d}"
        stations.append(StationModel(id=sid, evses=[EvseModel(kind="AC", max_power_kw=FLEET_CHARGER_KW)]))
        evs.append(
            EvModel(
                id=f"car{i + 1:05d}",
                model=name,
                capacity_kwh=battery,
                initial_soc=round(float(target[i] - need / battery), 4),
                target_soc=round(float(target[i]), 4),
                max_ac_kw=11.0,
                max_dc_kw=FLEET_DC_KW[model_idx[i]],
                arrival_min=round(float(arrival_min[i]), 1),
                departure_min=round(float(departure_min[i]), 1),
                hlc=bool(hlc[i]),
                station=sid,
            )
        )
    household = _household_load_kw(n_cars, steps, step_min, start_hour)
    guaranteed = GUARANTEED_KW_PER_278 * n_cars / 278
    headroom = np.maximum(guaranteed + household.max() - household, guaranteed)
    return Scenario(
        name="seed001",
        source="seed 000/001 (Rubenis et al., 278-car fleet, ten-model mix, Gamma driving laws)",
        description=f"{n_cars} cars, one 11 kW charger each, overnight 12:00->12:00, headroom >= "
        f"{guaranteed:.0f} kW guaranteed, ToU prices",
        start=start,
        step_minutes=step_min,
        steps=steps,
        site=SiteModel(
            id="fleet",
            import_limit_kw=[round(float(x), 3) for x in headroom],
            import_price=_tou_price(start_hour, steps, step_min),
        ),
        stations=stations,
        evs=evs,
    )


# --- seed 003: company depot, 20 EVs / 4 x 11 kW, PV, factory load, BESS ------------------------------
SEED003_START = datetime(2025, 2, 4, 0, 0, tzinfo=UTC)


def seed003_depot(seed: int = 3, hlc_share: float = 0.5, prefix: str = "S003-") -> Scenario:
    """The seed 003 depot: 20 EVs/PHEVs share 4 chargers of 11 kW; PV, factory load, 193.5 kWh / 100 kW BESS.

    The draws (capacities, SoCs, hours, priorities) and the site's profiles are those of
    `optimizer.cases.seed003` (`draw_fleet`), so the simulated day and the optimizer case describe
    the same cars. Cars plug into the first
    free charger on arrival (first come, first served) and leave it when full or at departure.
    """
    steps = 24
    d = draw_fleet(seed)
    capacity, max_kw, soc0, soc_req = d.capacity_kwh, d.max_kw, d.soc0, d.soc_req
    arrival_h, departure_h, priority = d.arrival_h, d.departure_h, d.priority
    n = len(capacity)
    hlc = np.random.default_rng(seed + 1000).uniform(size=n) < hlc_share
    evs = [
        EvModel(
            id=f"ev{i + 1:02d}",
            model="PHEV" if capacity[i] < 20 else "BEV",
            capacity_kwh=float(capacity[i]),
            initial_soc=round(float(soc0[i]), 4),
            target_soc=round(float(soc_req[i]), 4),
            max_ac_kw=float(max_kw[i]),
            max_dc_kw=50.0,
            ac_phases=1 if max_kw[i] < 4 else 3,
            arrival_min=float(arrival_h[i] * 60),
            departure_min=float(departure_h[i] * 60),
            hlc=bool(hlc[i]),
            priority=float(priority[i]),
        )
        for i in range(n)
    ]
    # the optimizer case keeps the draws in floats; round SoCs so JSON round-trips stay exact
    stations = [
        StationModel(id=f"{prefix}cp{c + 1}", evses=[EvseModel(kind="AC", max_power_kw=11.0)])
        for c in range(4)
    ]
    return Scenario(
        name="seed003",
        source="seed 003 (Almeida et al., MIBEL company fleet with PV and BESS)",
        description="20 EVs and PHEVs, 4 chargers of 11 kW (first come, first served), factory load, "
        "PV, 193.5 kWh / 100 kW BESS, 300 kW grid connection, hourly MIBEL-like prices",
        start=SEED003_START,
        step_minutes=60,
        steps=steps,
        unplug_when_full=True,
        site=SiteModel(
            id="depot",
            import_limit_kw=300.0,
            base_load_kw=factory_load_kw(steps),
            pv_kw=pv_kw(steps),
            import_price=mibel_like_price(steps),
            bess=BessModel(capacity_kwh=193.5, max_power_kw=100.0, efficiency=0.95, initial_soc=0.5),
        ),
        stations=stations,
        evs=evs,
    )


# --- seed 004: four EVs on chargers fed by one 22 kW source ----------------------------------------
SEED004_NEED_KWH = (3.7, 4.6, 6.6, 7.4)  # the paper's m_i; requested power sum 22.3 kW > 22 kW
SEED004_START = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def seed004_shared_source(hlc: bool = True, prefix: str = "S004-") -> Scenario:
    """The seed 004 case: 4 EVs start together on 4 chargers behind one 22 kW source.

    Each EV asks for its need m_i within one hour (3.7, 4.6, 6.6, 7.4 kW: 22.3 kW in total), so
    the source is 0.3 kW short and power must be redistributed. 40 kWh batteries starting at
    20 % keep the cars below the CV taper, as the paper's linear model assumes.
    """
    evs = [
        EvModel(
            id=f"ev{i + 1}",
            model="level-2 EV",
            capacity_kwh=40.0,
            initial_soc=0.2,
            target_soc=round(0.2 + need / 40.0, 4),
            max_ac_kw=need,
            max_dc_kw=need,
            ac_phases=3,
            efficiency=1.0,
            arrival_min=0.0,
            departure_min=240.0,
            hlc=hlc,
            station=f"{prefix}{i + 1}",
        )
        for i, need in enumerate(SEED004_NEED_KWH)
    ]
    stations = [
        StationModel(id=f"{prefix}{i + 1}", evses=[EvseModel(kind="AC", max_power_kw=22.0)]) for i in range(4)
    ]
    return Scenario(
        name="seed004",
        source="seed 004 (power redistribution between 4 chargers on one 22 kW source)",
        description="4 EVs needing 3.7/4.6/6.6/7.4 kWh in one hour on 4 chargers fed by one 22 kW source",
        start=SEED004_START,
        step_minutes=5,
        steps=48,
        site=SiteModel(id="shared22", import_limit_kw=22.0, import_price=0.2),
        stations=stations,
        evs=evs,
    )


# --- random fleets ------------------------------------------------------------------------------
def random_fleet(
    n_stations: int,
    seed: int = 0,
    hlc_share: float = 0.5,
    dc_share: float = 0.1,
    evs_per_evse: float = 1.0,
    start: datetime | None = None,
    hours: float = 24.0,
    prefix: str = "SIM-",
) -> Scenario:
    """Random stations (AC 11/22 kW, some 2-EVSE, some DC 50-150 kW) and EV visits over `hours`."""
    if n_stations < 1:
        raise ValueError("n_stations must be >= 1")
    rng = np.random.default_rng(seed)
    start = start or datetime(2025, 6, 2, 0, 0, tzinfo=UTC)
    stations = []
    for i in range(n_stations):
        if rng.uniform() < dc_share:
            evses = [EvseModel(kind="DC", max_power_kw=float(rng.choice([50.0, 100.0, 150.0])), phases=1)]
        else:
            power = float(rng.choice([11.0, 22.0], p=[0.7, 0.3]))
            evses = [EvseModel(kind="AC", max_power_kw=power) for _ in range(1 if rng.uniform() < 0.7 else 2)]
        stations.append(StationModel(id=f"{prefix}{i + 1:05d}", evses=evses))
    counts = np.array([m[3] for m in FLEET_MODELS], dtype=float)
    horizon_min = hours * 60
    evs = []
    slots = [(s, e + 1) for s in stations for e in range(len(s.evses))]
    n_evs = int(round(len(slots) * evs_per_evse))
    for j in range(n_evs):
        station, evse = slots[j % len(slots)]
        visits = j // len(slots)
        m = int(rng.choice(len(FLEET_MODELS), p=counts / counts.sum()))
        name, battery, _per_km, _c = FLEET_MODELS[m]
        window = horizon_min / max(1.0, np.ceil(evs_per_evse))
        lo = visits * window
        arrival = lo + rng.uniform(0, window * 0.5)
        departure = min(lo + window, arrival + rng.uniform(60, max(90.0, window * 0.9)))
        soc0 = float(rng.uniform(0.1, 0.6))
        evs.append(
            EvModel(
                id=f"ev{j + 1:06d}",
                model=name,
                capacity_kwh=battery,
                initial_soc=round(soc0, 4),
                target_soc=round(float(rng.uniform(max(soc0, 0.7), 0.95)), 4),
                max_ac_kw=11.0 if m != 2 else 7.4,
                max_dc_kw=FLEET_DC_KW[m],
                arrival_min=round(float(arrival), 1),
                departure_min=round(float(max(departure, arrival + 15)), 1),
                hlc=bool(rng.uniform() < hlc_share),
                station=station.id,
                evse=evse,
            )
        )
    total_kw = sum(e.max_power_kw for s in stations for e in s.evses)
    steps = int(np.ceil(hours * 4))
    return Scenario(
        name="random",
        source=f"random_fleet(n_stations={n_stations}, seed={seed})",
        description=f"{n_stations} random stations, {n_evs} EV visits over {hours:g} h",
        start=start,
        step_minutes=15,
        steps=steps,
        site=SiteModel(
            id="random",
            import_limit_kw=round(0.6 * total_kw, 1),
            import_price=_tou_price(start.hour + start.minute / 60, steps, 15.0),
        ),
        stations=stations,
        evs=evs,
    )
