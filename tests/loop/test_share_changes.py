"""A whole-site re-share sends only what changes what the EVSEs count, and the limit holds.

Issue 14: on a 20,000-EVSE site every start re-shares the site; a pass built a profile for every
session and sent one to every new EVSE whose default was still out, besides that default. Against the
in-memory store, the stations' side sampled after every answer (`Stations.worst_sum_w`).
"""

from __future__ import annotations

from typing import Any

import pytest

from csms.settings import CsmsSettings
from csms.smart_charging import budget, planner, safety
from csms.smart_charging.service import SmartChargingService
from evfleet.keys import tx_ref
from evfleet.store.memory import InMemoryStateStore
from tests.loop.test_budget import _bisected_fair_shares
from tests.loop.test_service_unit import SITE, T0, FixedClock, Stations, _session


def _service(store: InMemoryStateStore, stations: Stations, clock: FixedClock,
             **settings: Any) -> SmartChargingService:
    cfg = CsmsSettings(default_site=SITE, replan_threshold_kw=0.5, **settings)
    svc = SmartChargingService(store, clock, cfg, "node-a", stations)  # type: ignore[arg-type]
    svc._fallback.add(SITE)  # no plan: the sessions share (fallback mode)
    return svc


def _new_session(store: InMemoryStateStore, sid: str, default_w: float | None = 0.0) -> str:
    """A session that just started: no profile for it; its default confirmed (`default_w`) or not."""
    ref = tx_ref(sid, f"tx-{sid}")
    fields = {"max_power_w": "22000", "rate_unit": "W", "tx_ref": ref, "transaction_id": f"tx-{sid}"}
    if default_w is not None:
        fields["default_limit_w"] = repr(default_w)
    store.add_evse(sid, 1, site_id=SITE, **fields)
    return ref


def _five_sessions(limit_kw: float) -> tuple[FixedClock, InMemoryStateStore, Stations, list[str]]:
    """A site of `limit_kw` with five sessions holding 2 kW interim shares, the stations at 2 kW."""
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": f"{limit_kw:g}"}
    old = [f"CP-{i}" for i in range(5)]
    for sid in old:
        _session(store, sid, 2_000.0, kind="interim")
    stations = Stations(clock, limit_kw * 1000.0)
    stations.limits_w = dict.fromkeys(old, 2_000.0)
    return clock, store, stations, old


def _counting_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []
    build = safety._share_payload

    def counted(svc: Any, info: Any, share: Any, now_s: float) -> Any:
        built.append(info.station_id)
        return build(svc, info, share, now_s)

    monkeypatch.setattr(safety, "_share_payload", counted)
    return built


async def test_one_more_session_sends_only_its_own_share_when_the_others_keep_theirs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Shares capped at 2 kW (fallback_limit_kw) on a 100 kW site: a sixth session changes no one
    else's share, so only it gets a profile, and no profile is built for the five others (fails if
    every sharer gets a profile built, or one sent, per pass)."""
    clock, store, stations, _ = _five_sessions(100.0)
    svc = _service(store, stations, clock, fallback_limit_kw=2.0)
    built = _counting_builds(monkeypatch)
    _new_session(store, "CP-NEW")
    assert await safety.share_fairly(svc, SITE) == 1
    assert [sid for sid, _ in stations.sent] == ["CP-NEW"] and built == ["CP-NEW"]
    assert stations.limits_w["CP-NEW"] == pytest.approx(2_000.0, abs=1.0)
    assert await safety.share_fairly(svc, SITE) == 0 and len(stations.sent) == 1  # nothing changes
    assert stations.worst_sum_w <= 100_000.0 + 1.0


async def test_one_more_session_on_a_full_site_lowers_the_others_first_within_the_limit() -> None:
    """A full 10 kW site: five sessions at 2 kW, a sixth starts. Every share drops to 1/6 of the
    site: the five decreases are answered before the increase goes out, and the stations' sum never
    exceeds the limit (fails if the pass's changes were ordered without counting the EVSEs it
    leaves alone, e.g. if `next_batch` did not count every EVSE of the site)."""
    clock, store, stations, old = _five_sessions(10.0)
    svc = _service(store, stations, clock)
    _new_session(store, "CP-NEW")
    await safety.share_fairly(svc, SITE)
    order = [sid for sid, _ in stations.sent]
    assert sorted(order[:5]) == old and order[5:] == ["CP-NEW"]
    assert stations.worst_sum_w <= 10_000.0 + 1.0
    assert sum(stations.limits_w.values()) == pytest.approx(10_000.0, abs=6.0)


async def test_a_share_equal_to_the_default_out_is_left_to_that_default() -> None:
    """A full site (five idle EVSEs reserve 2 kW each of 10 kW): a new EVSE, its 0 W default still
    out (so it counts its 22 kW maximum), gets a 0 W share: no TxProfile goes to it, its default's
    answer brings it there, and nothing else rises meanwhile (the skip lowers nothing counted).
    Once there is headroom, a new EVSE's share goes out at once, default out or not (fails if a
    pass sends a profile equal to the default that is out, or holds back an admission for it)."""
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "10"}
    for i in range(5):  # idle EVSEs holding a 2 kW reservation: fixed loads
        store.add_evse(f"IDLE-{i}", 1, site_id=SITE, max_power_w="22000", rate_unit="W",
                       default_limit_w="2000.0")
    stations = Stations(clock, 10_000.0)
    svc = _service(store, stations, clock)
    _new_session(store, "CP-NEW", default_w=None)
    svc.defaults.inflight[SITE] = {("CP-NEW", 1)}
    svc.defaults.limit_out_w[("CP-NEW", 1)] = 0.0
    assert await safety.share_fairly(svc, SITE) == 0 and stations.sent == []
    # its default answered (0 W): it counts 0 W, its share is 0 W: still nothing to send
    svc.defaults.answered(SITE, ("CP-NEW", 1))
    store.evses[("CP-NEW", 1)]["default_limit_w"] = "0.0"
    assert await safety.share_fairly(svc, SITE) == 0 and stations.sent == []
    # the site limit rises to 14 kW: 4 kW to share, 2 kW each, sent at once to both
    store.sites[SITE]["limit_kw"] = "14"
    _new_session(store, "CP-TWO", default_w=None)
    svc.defaults.inflight[SITE] = {("CP-TWO", 1)}
    svc.defaults.limit_out_w[("CP-TWO", 1)] = 0.0
    assert await safety.share_fairly(svc, SITE) == 2
    assert sorted(sid for sid, _ in stations.sent) == ["CP-NEW", "CP-TWO"]
    assert stations.limits_w == pytest.approx({"CP-NEW": 2_000.0, "CP-TWO": 2_000.0}, abs=1.0)


def test_total_adds_constants_without_sampling_them_and_equals_the_sampled_sum() -> None:
    t0 = T0.timestamp()
    series = [planner.constant(1_000.0, t0), [(t0, 500.0), (t0 + 900, 2_000.0)],
              planner.constant(250.0, t0 + 60)]
    points = planner.grid(series, t0)
    assert points == [t0, t0 + 60, t0 + 900]
    sampled = [sum(planner.sample(s, [p])[0] for s in series) for p in points]
    assert planner.total(series, points) == pytest.approx(sampled) == [1_750.0, 1_750.0, 3_250.0]


def test_fair_shares_of_20000_sessions_grouped_by_bounds_match_the_bisection() -> None:
    """Grouped by (minimum, cap): 20,000 sessions of three kinds get what the reference bisection
    gives each, paused ones (the largest minimums) included, within the budget."""
    kinds = [(11_000.0, 0.0), (22_000.0, 4_140.0), (7_400.0, 1_380.0)]
    caps = {f"S{i:05d}": kinds[i % 3][0] for i in range(20_000)}
    mins = {f"S{i:05d}": kinds[i % 3][1] for i in range(20_000)}
    shares = budget.fair_shares(20_000_000.0, caps, mins)
    reference = _bisected_fair_shares(20_000_000.0, caps, mins)
    assert all(shares[k] == pytest.approx(reference[k], rel=1e-9, abs=1e-6) for k in caps)
    assert sum(shares.values()) <= 20_000_000.0
    paused = [k for k, v in shares.items() if v == 0.0]
    assert paused and all(mins[k] == 4_140.0 for k in paused)  # the largest minimum waits first
