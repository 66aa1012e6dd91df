"""Scenario generators, packaged files and the conversion to the optimizer's instance."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from evse_sim.scenarios import (
    DATA_DIR,
    PAPER,
    ScenarioError,
    load_scenario,
    random_fleet,
    seed001_fleet,
)
from evse_sim.scenarios.generators import FLEET_MODELS


def test_packaged_files_match_generators() -> None:
    for name in ("seed001", "seed003", "seed004", "random"):
        packaged = load_scenario(name)
        assert packaged == PAPER[name](), name
        assert (DATA_DIR / f"{name}.json").exists()


def test_seed001_fleet_mix_and_headroom() -> None:
    s = load_scenario("seed001")
    assert len(s.stations) == len(s.evs) == 278
    assert Counter(e.model for e in s.evs) == {m[0]: m[3] for m in FLEET_MODELS}
    caps = {m[0]: m[1] for m in FLEET_MODELS}
    assert all(e.capacity_kwh == caps[e.model] for e in s.evs)
    assert min(s.series("import_limit_kw")) >= 1000.0 - 1e-6
    assert all(0.0 < e.need_kwh <= 0.8 * e.capacity_kwh + 1e-6 for e in s.evs)
    assert 0.3 < sum(e.hlc for e in s.evs) / 278 < 0.9
    inst = s.to_optimizer_instance()
    assert len(inst.evs) == 278 and len(inst.chargers) == 278


def test_seed001_driving_energy_depends_on_weekday() -> None:
    monday_need = sum(
        e.need_kwh for e in seed001_fleet(2000, day=date(2025, 3, 2)).evs
    )  # charging for Monday
    sunday_need = sum(
        e.need_kwh for e in seed001_fleet(2000, day=date(2025, 3, 8)).evs
    )  # charging for Sunday
    assert sunday_need < 0.8 * monday_need


def test_seed003_depot_matches_paper_and_optimizer_case() -> None:
    s = load_scenario("seed003")
    assert len(s.evs) == 20 and len(s.stations) == 4
    assert all(st.evses[0].max_power_kw == 11.0 for st in s.stations)
    assert s.site.bess is not None and (s.site.bess.capacity_kwh, s.site.bess.max_power_kw) == (193.5, 100.0)
    assert s.unplug_when_full and all(e.station is None for e in s.evs)
    assert {e.priority for e in s.evs} <= {1.0, 2.0, 3.0}
    assert len(s.series("pv_kw")) == len(s.series("base_load_kw")) == 24
    from optimizer.cases.seed003 import company_fleet

    ours, theirs = s.to_optimizer_instance(), company_fleet()
    assert [(e.arrival, e.departure, e.capacity_kwh, e.max_kw) for e in ours.evs] == [
        (e.arrival, e.departure, e.capacity_kwh, e.max_kw) for e in theirs.evs
    ]
    assert [e.energy_kwh for e in ours.evs] == pytest.approx([e.energy_kwh for e in theirs.evs], abs=0.01)


def test_seed004_shared_source() -> None:
    s = load_scenario("seed004")
    assert s.site.import_limit_kw == 22.0
    assert sum(e.max_ac_kw for e in s.evs) == pytest.approx(22.3)
    assert sorted(round(e.need_kwh, 3) for e in s.evs) == [3.7, 4.6, 6.6, 7.4]


def test_random_fleet_is_seeded_and_sized() -> None:
    a, b = random_fleet(50, seed=4), random_fleet(50, seed=4)
    assert a == b and len(a.stations) == 50
    assert a != random_fleet(50, seed=5)
    kinds = Counter(e.kind for s in a.stations for e in s.evses)
    assert kinds["AC"] > kinds["DC"] > 0
    assert load_scenario("random", stations=120).evse_count >= 120
    a.to_optimizer_instance()


def test_replicated_and_file_scenarios(tmp_path: Path) -> None:
    s = load_scenario("seed004", stations=10)
    assert len(s.stations) == 12 and len({st.id for st in s.stations}) == 12
    path = tmp_path / "s.json"
    path.write_text(s.model_dump_json())
    assert load_scenario(str(path)) == s
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    with pytest.raises(ScenarioError, match="invalid scenario file"):
        load_scenario(str(bad))
    with pytest.raises(ScenarioError, match="unknown scenario"):
        load_scenario("nope")
