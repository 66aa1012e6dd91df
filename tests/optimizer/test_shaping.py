"""optimizer.shaping: the published schedule keeps the site limit even if a reshaping step breaks it."""

from __future__ import annotations

import pytest

from optimizer import shaping
from optimizer.min_power import site_excess_kw
from optimizer.problem import Instance, Schedule
from tests.optimizer.test_min_power import full_site, full_site_schedule


def test_a_shaped_plan_over_the_limit_gives_way_to_the_lps_own(monkeypatch: pytest.MonkeyPatch) -> None:
    inst = full_site({"energy_kwh": 30})
    lp = full_site_schedule([3.69, 3.69, 3.69, 6.0, 6.0, 6.0])
    assert site_excess_kw(inst, lp) == {}

    def rounds_up(instance: Instance, schedule: Schedule, min_kw: object) -> Schedule:
        power = dict(schedule.ev_power_kw)
        power["a"] = [max(p, 4.14) if p else 0.0 for p in power["a"]]  # the bug that was: no room check
        return schedule.model_copy(update={"ev_power_kw": power})

    monkeypatch.setattr(shaping, "enforce_min_power", rounds_up)
    monkeypatch.setattr(shaping, "level_peak", lambda instance, schedule, min_kw: schedule)
    published, refused = shaping.shape(inst, lp, {"a": 4.14})
    assert published is lp
    assert set(refused) == {1, 2} and refused[1] == pytest.approx(0.44)  # 4.14 + 20.3 against 24
    assert site_excess_kw(inst, published) == {}


def test_a_shaped_plan_within_the_limit_is_published() -> None:
    inst = full_site({"energy_kwh": 30})
    lp = full_site_schedule([4.15, 3.69, 3.69, 6.0, 6.0, 6.0])
    published, refused = shaping.shape(inst, lp, {"a": 4.14})
    assert refused == {}
    assert published is not lp and all(p == 0 or p >= 4.14 for p in published.ev_power_kw["a"])
    assert site_excess_kw(inst, published) == {}
