"""The rolling horizon starts at now: a plan made at any minute of a step delivers what it reports.

Pure path of the worker: site state -> instance (optimizer.snapshot) -> solve -> plan document
(optimizer.publish.plan_documents) -> TxProfile (evfleet.txprofile.build_tx_profile, as the csms
builds it at `now`). The energy the profile lets the EV draw between now and its departure is
compared with the energy the plan says it delivers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evfleet.txprofile import EvLimits, EvseElectrical, build_tx_profile, profile_series_w, value_at
from optimizer.publish import plan_documents
from optimizer.snapshot import EvseState, SessionState, SiteState, SnapshotConfig, build_instance
from optimizer.solve import solve

GRID = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
EVSE = EvseElectrical(rate_unit="W", phases=3, max_power_w=11_000)


def _site(now: datetime, departure: datetime, energy_wh: float) -> SiteState:
    needs = {"departure_time": departure.isoformat(), "energy_amount_wh": energy_wh, "transaction_id": "tx"}
    return SiteState("s", 50.0, [EvseState("cs", 1, max_power_w=11_000, rate_unit="W")],
                     [SessionState("tx", "cs", 1, now - timedelta(minutes=30), needs=needs,
                                   energy_at_needs_wh=0.0)])


def _allowed_kwh(payload: dict[str, object], since: datetime, until: datetime, cap_w: float) -> float:
    """Energy a profile lets the EV draw in [since, until] (1 s resolution), at most `cap_w`."""
    start, periods = profile_series_w(payload)
    t0 = (since - start).total_seconds()
    seconds = int((until - since).total_seconds())
    return sum(min(cap_w, value_at(periods, t0 + s + 0.5)) for s in range(seconds)) / 3.6e6


def _plan_and_deliver(now: datetime, departure: datetime, energy_kwh: float) -> tuple[float, float]:
    snap = build_instance(_site(now, departure, energy_kwh * 1000), now, SnapshotConfig(horizon_steps=16))
    schedule = solve(snap.instance, "cost")
    hours = snap.instance.step_hours()
    planned = sum(p * h for p, h in zip(schedule.ev_power_kw["tx"], hours, strict=True))
    need = snap.instance.evs[0].energy_kwh  # capped by what fits between now and departure
    assert planned == pytest.approx(need - schedule.ev_unmet_kwh["tx"], abs=1e-6)
    plan, _ = plan_documents("s", snap, schedule, plan_id="p", limit_kw=50.0, computed_at=now, solve_s=0.0,
                             strategy="cost")
    payload = build_tx_profile(evse_id=1, transaction_id="tx", start=datetime.fromisoformat(plan["start"]),
                               step_s=plan["step_s"], limits_kw=plan["evses"]["cs/1"], evse=EVSE,
                               ev=EvLimits(), profile_id=1, now=now)
    start, _ = profile_series_w(payload)
    assert start == now.replace(microsecond=0)  # the profile starts at now, not at the step's start
    return planned, _allowed_kwh(payload, now, departure, EVSE.max_power_w)


@pytest.mark.parametrize("minute", range(15))
def test_plan_made_at_any_minute_delivers_what_it_reports(minute: int) -> None:
    now = GRID + timedelta(minutes=minute, seconds=20)
    departure = GRID + timedelta(hours=1)  # 10 kWh at 11 kW needs 55 min: tight late in the step
    planned, deliverable = _plan_and_deliver(now, departure, 10.0)
    assert planned == pytest.approx(deliverable, abs=0.1)
    assert planned <= 11.0 * (departure - now).total_seconds() / 3600 + 1e-6  # nothing before now counts


@pytest.mark.parametrize("minute", [0, 7, 14])
def test_no_energy_counted_after_departure(minute: int) -> None:
    now = GRID + timedelta(minutes=minute)
    departure = GRID + timedelta(minutes=52)  # inside a step: rounded down to 18:45
    planned, deliverable = _plan_and_deliver(now, departure, 20.0)
    assert planned == pytest.approx(11.0 * (45 - minute) / 60, abs=1e-3)
    assert planned == pytest.approx(deliverable, abs=0.1)


def test_partial_first_step_is_in_the_instance() -> None:
    now = GRID + timedelta(minutes=14)
    site = _site(now, GRID + timedelta(hours=2), 10_000)
    snap = build_instance(site, now, SnapshotConfig(horizon_steps=16))
    inst = snap.instance
    assert inst.start == GRID and inst.first_step_minutes == pytest.approx(1.0)
    assert inst.horizon_start == now
    assert inst.step_hours()[:2] == pytest.approx([1 / 60, 0.25])
    assert inst.evs[0].departure == 8
