"""A re-plan with nothing material changed keeps the standing plan (optimizer.standing, pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from optimizer.problem import Instance
from optimizer.snapshot import Snapshot
from optimizer.standing import kept_documents, plan_inputs, planned_kwh, standing_plan_holds

T0 = datetime(2026, 12, 6, 5, 3, tzinfo=UTC)
START = datetime(2026, 12, 6, 5, 0, tzinfo=UTC)


def _snap(energy: tuple[float, ...] = (10.0, 20.0), departure: int = 20, fixed: float = 0.0) -> Snapshot:
    evs = [{"id": f"tx{i}", "charger": f"CP{i}/1", "arrival": 0, "departure": departure, "energy_kwh": e,
            "max_kw": 11.0, "capacity_kwh": 100.0} for i, e in enumerate(energy)]
    inst = Instance.model_validate({
        "start": START, "step_minutes": 15, "steps": 96, "first_step_minutes": 12.0,
        "site": {"import_limit_kw": 50.0}, "tariff": {"import_price": [0.25] * 96},
        "chargers": [{"id": f"CP{i}/1", "max_kw": 11.0} for i in range(len(energy))], "evs": evs,
        "objective": {"kind": "cost"}})
    return Snapshot(inst, {f"tx{i}": f"CP{i}/1" for i in range(len(energy))}, fixed, {}, [0.25] * 96)


def _plan(snap: Snapshot) -> dict:
    return {"plan_id": "p1", "site_id": "s", "start": START.isoformat(), "step_s": 900, "status": "optimal",
            "strategy": "cost", "computed_at": T0.isoformat(), "message": "",
            "evses": {"CP0/1": [8.0] * 96, "CP1/1": [4.0] * 96},
            "transactions": {"CP0/1": "tx0", "CP1/1": "tx1"},
            "notes": {"CP0/1": ["departure=needs", 0.0], "CP1/1": ["", 0.0]},
            "inputs": plan_inputs(snap, {"tx0": 4.2}, 50.0, T0)}


def test_same_inputs_keep_the_plan_also_with_a_meter_that_has_not_reported() -> None:
    snap = _snap()
    plan = _plan(snap)
    assert standing_plan_holds(plan, snap, {"tx0": 4.2}, 50.0, T0 + timedelta(seconds=60))
    # the meter reported what the plan gave (8 kW x 60 s = 0.133 kWh)
    moved = _snap(energy=(10.0 - 8.0 / 60, 20.0 - 4.0 / 60))
    assert standing_plan_holds(plan, moved, {"tx0": 4.2}, 50.0, T0 + timedelta(seconds=60))


def test_material_changes_re_solve() -> None:
    snap = _snap()
    plan = _plan(snap)
    later = T0 + timedelta(seconds=60)
    assert not standing_plan_holds(plan, snap, {"tx0": 4.2}, 40.0, later)  # site limit
    assert not standing_plan_holds(plan, _snap(energy=(11.0, 20.0)), {"tx0": 4.2}, 50.0, later)  # need grew
    assert not standing_plan_holds(plan, _snap(energy=(9.0, 20.0)), {"tx0": 4.2}, 50.0, later)  # far less
    assert not standing_plan_holds(plan, _snap(energy=(10.0, 20.0, 5.0)), {"tx0": 4.2}, 50.0, later)  # new EV
    assert not standing_plan_holds(plan, _snap(departure=19), {"tx0": 4.2}, 50.0, later)
    assert not standing_plan_holds(plan, _snap(fixed=11.0), {"tx0": 4.2}, 50.0, later)
    assert not standing_plan_holds(plan, snap, {"tx0": 6.0}, 50.0, later)  # EV minimum
    moved = replace(snap, instance=snap.instance.model_copy(update={"start": START + timedelta(minutes=15)}))
    assert not standing_plan_holds(plan, moved, {"tx0": 4.2}, 50.0, later)  # next step of the horizon
    assert not standing_plan_holds({**plan, "status": "fallback"}, snap, {"tx0": 4.2}, 50.0, later)
    assert not standing_plan_holds({k: v for k, v in plan.items() if k != "inputs"}, snap, {}, 50.0, later)


def test_kept_documents_republish_the_same_limits() -> None:
    plan = _plan(_snap())
    kept, per_evse = kept_documents(plan, "p2", T0 + timedelta(seconds=60), START)
    assert kept["plan_id"] == "p2" and kept["kept"] == "p1" and kept["evses"] == plan["evses"]
    assert kept["inputs"] == plan["inputs"]  # drift is measured from the solve that made the plan
    assert per_evse["CP0/1"]["limits_kw"] == [8.0] * 96 and per_evse["CP0/1"]["tx_ref"] == "tx0"
    assert per_evse["CP0/1"]["note"] == "departure=needs"
    assert abs(planned_kwh(plan, "CP0/1", START, START + timedelta(minutes=30)) - 4.0) < 1e-9


def test_a_rolled_horizon_keeps_the_plan_shifted() -> None:
    snap = _snap()
    plan = _plan(snap)
    plan["evses"]["CP0/1"] = [float(i) for i in range(96)]
    plan["planned_kw"] = [1.0] * 96
    later = START + timedelta(minutes=15)
    rolled = replace(_snap(departure=19), instance=_snap(departure=19).instance.model_copy(
        update={"start": later, "first_step_minutes": None}))
    # the plan gave tx0 step 0's 0 kW and tx1 4 kW for 12 min since T0: tx1's need may drop by 0.8 kWh
    rolled = replace(rolled, instance=rolled.instance.model_copy(update={"evs": [
        rolled.instance.evs[0], rolled.instance.evs[1].model_copy(update={"energy_kwh": 19.2})]}))
    assert standing_plan_holds(plan, rolled, {"tx0": 4.2}, 50.0, later)
    dearer = replace(rolled, prices=[0.3] + [0.25] * 95)
    assert not standing_plan_holds(plan, dearer, {"tx0": 4.2}, 50.0, later)
    kept, per_evse = kept_documents(plan, "p2", later, later)
    assert kept["start"] == later.isoformat() and per_evse["CP0/1"]["start"] == later.isoformat()
    assert kept["evses"]["CP0/1"][:3] == [1.0, 2.0, 3.0] and kept["evses"]["CP0/1"][-1] == 0.0
    assert len(kept["evses"]["CP0/1"]) == 96 and kept["planned_kw"][-1] == 0.0
