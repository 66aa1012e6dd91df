"""Scenarios: the days the simulator plays (files under `data/` and generator functions).

`load_scenario("seed001" | "seed003" | "seed004" | "random" | path.json, stations=N, seed=S)`:
a name without `stations` loads the packaged file (the paper-sized case); with `stations`,
generators build a fleet of that size (seed001, random) or replicate the site (seed003,
seed004). `python -m evse_sim.scenarios` rewrites the packaged files from the generators.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from evse_sim.scenarios.generators import random_fleet, seed001_fleet, seed003_depot, seed004_shared_source
from evse_sim.scenarios.model import BessModel, EvModel, EvseModel, Scenario, SiteModel, StationModel

DATA_DIR = Path(__file__).parent / "data"


class ScenarioError(ValueError):
    """A scenario name is unknown or a scenario file is unreadable or invalid."""


def _random10() -> Scenario:
    return random_fleet(10)


PAPER: dict[str, Callable[[], Scenario]] = {
    "seed001": seed001_fleet,
    "seed003": seed003_depot,
    "seed004": seed004_shared_source,
    "random": _random10,
}
"""The packaged scenarios and the generator calls that produce them."""


BUILTIN = ("seed001", "seed003", "seed004", "random")


def list_scenarios() -> list[str]:
    """Names `load_scenario` accepts besides file paths."""
    return list(BUILTIN)


def replicate(scenario: Scenario, n_stations: int) -> Scenario:
    """Copies of the scenario's site (ids suffixed -c2, -c3, ...) until it has >= `n_stations` stations."""
    copies = max(1, math.ceil(n_stations / len(scenario.stations)))
    if copies == 1:
        return scenario
    stations, evs = [], []
    for c in range(copies):
        sfx = "" if c == 0 else f"-c{c + 1}"
        stations += [s.model_copy(update={"id": s.id + sfx}) for s in scenario.stations]
        evs += [
            e.model_copy(update={"id": e.id + sfx, "station": None if e.station is None else e.station + sfx})
            for e in scenario.evs
        ]
    return scenario.model_copy(
        update={
            "stations": stations,
            "evs": evs,
            "description": f"{scenario.description} (x{copies} copies of the site)",
        }
    )


def load_scenario(name_or_file: str, stations: int | None = None, seed: int | None = None) -> Scenario:
    """A builtin scenario by name (optionally resized/reseeded) or a scenario JSON file."""
    if name_or_file in BUILTIN:
        if stations is None and seed is None and (DATA_DIR / f"{name_or_file}.json").exists():
            return _read(DATA_DIR / f"{name_or_file}.json")
        if name_or_file == "seed001":
            return seed001_fleet(stations or 278, seed=1 if seed is None else seed)
        if name_or_file == "random":
            return random_fleet(stations or 10, seed=0 if seed is None else seed)
        base = (
            seed003_depot(seed=3 if seed is None else seed)
            if name_or_file == "seed003"
            else seed004_shared_source()
        )
        return replicate(base, stations or len(base.stations))
    path = Path(name_or_file)
    if not path.exists():
        raise ScenarioError(
            f"unknown scenario {name_or_file!r}: not one of {', '.join(BUILTIN)} and no such file"
        )
    scenario = _read(path)
    return replicate(scenario, stations) if stations else scenario


def _read(path: Path) -> Scenario:
    try:
        return Scenario.model_validate_json(path.read_text())
    except (OSError, ValidationError, json.JSONDecodeError) as err:
        raise ScenarioError(f"invalid scenario file {path}: {err}") from err


def write_packaged(directory: Path = DATA_DIR) -> list[Path]:
    """(Re)write the packaged scenario files from the generators."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name in BUILTIN:
        path = directory / f"{name}.json"
        path.write_text(PAPER[name]().model_dump_json(indent=1) + "\n")
        out.append(path)
    return out


__all__ = [
    "BUILTIN",
    "DATA_DIR",
    "PAPER",
    "BessModel",
    "EvModel",
    "EvseModel",
    "Scenario",
    "ScenarioError",
    "SiteModel",
    "StationModel",
    "list_scenarios",
    "load_scenario",
    "random_fleet",
    "replicate",
    "seed001_fleet",
    "seed003_depot",
    "seed004_shared_source",
    "write_packaged",
]
