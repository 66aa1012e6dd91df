"""What keeps a whole-site pass's objects few (issue 14): at 20,000 EVSEs every container a pass
holds alive is one more for each young garbage collection to walk, and enough of them start one.

- `EvseInfo` is slotted (no `__dict__`: one object per EVSE, not two) and `clone` copies every slot;
- an unchanged EVSE's documents are the read's own, not copies, and its applied series is parsed
  once per document, not once per pass (the next read's `applied` is the same series object);
- so every document must stay as parsed: after passes that send, answer and rewrite records on a
  real Redis, each document the store's read memo hands out still equals its stored text;
- what EVSEs count from now on at one value is one series per value in a pass (`sending.counted`);
- the shares of a one-instant re-share are one series per distinct share, equal to the water-filling.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import fields
from typing import Any

import redis as sync_redis

from csms.command_types import CommandReply, Outcome
from csms.settings import CsmsSettings
from csms.smart_charging import budget, provisional, safety, sending, watchdog
from csms.smart_charging.evse import EvseInfo, decode_evse
from csms.smart_charging.service import SmartChargingService
from csms.store.port_redis import RedisStateStore
from evfleet.clock import RealClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evfleet.store.port import StoredEvse

K = Keys("evfleet")
SITE = "depot"
N = 40


class _Accepting:
    """Stations that accept every profile at once."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> CommandReply:
        self.calls += 1
        return CommandReply(request_id="r", station_id=station_id, action=action, outcome=Outcome.RESULT,
                            payload={"status": "Accepted"})


def _populate(r: sync_redis.Redis, n: int) -> None:
    """n stations of SITE in a session each, with an interim profile record and charging needs."""
    for i in range(n):
        sid, ref = f"CP{i:03d}", f"CP{i:03d}:tx-{i}"
        r.sadd(K.stations(), sid)
        r.sadd(K.site_stations(SITE), sid)
        r.hset(K.station(sid), mapping={"site_id": SITE, "online": "1"})
        r.hset(K.station_connectors(sid), "1/1", "{}")
        r.hset(K.transaction(ref), mapping={"station_id": sid, "evse_id": "1"})
        r.sadd(K.active_for(sid), ref)
        r.sadd(K.station_active(sid), ref)
        r.hset(K.station_evse(sid, 1), mapping={"max_power_w": "22000", "phases": "3", "voltage_v": "230",
                                                "tx_ref": ref, "transaction_id": f"tx-{i}",
                                                "default_limit_w": "0.0"})
        r.set(K.applied_profile(sid, 1), json.dumps({
            "tx_ref": ref, "kind": "interim", "status": "Accepted", "limit_w": 4140.0,
            "answered_at": "2027-01-15T08:00:00+00:00", "applied_series_w": [[1.8e9, 4140.0]]}))
        r.set(K.charging_needs(sid, 1), json.dumps({"tx_ref": ref, "ev_max_current_a": 32,
                                                    "ev_min_current_a": 6 if i % 2 else 0}))


def test_evse_info_is_slotted_and_its_clone_copies_every_slot() -> None:
    info = decode_evse(StoredEvse("CP-1", 1, {"online": "1"}, {"tx_ref": "CP-1:tx", "max_power_w": "11000"},
                                  {"tx_ref": "CP-1:tx", "applied_series_w": [[0, 5.0]]},
                                  {"tx_ref": "CP-1:tx"}))
    assert not hasattr(info, "__dict__")
    for n, f in enumerate(fields(EvseInfo)):  # a distinct value in every slot (a new field too)
        setattr(info, f.name, ("value", n))
    copy = info.clone()
    assert copy is not info
    slots = EvseInfo.__slots__
    assert [getattr(copy, name) for name in slots] == [getattr(info, name) for name in slots]


async def test_unchanged_documents_are_shared_parsed_once_and_never_changed_by_passes(redis_url: str) -> None:
    r = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    _populate(r, N)
    client = connect_redis(redis_url)
    store = RedisStateStore(client, K)
    settings = CsmsSettings(default_site=SITE, default_site_limit_kw=60.0)
    svc = SmartChargingService(store, RealClock(), settings, "n1", _Accepting())
    try:
        now_s = time.time()
        first = await svc.site_evses(SITE)
        again = await svc.site_evses(SITE)
        one, two = first["CP000/1"], again["CP000/1"]
        assert two is not one  # each read's own EvseInfo (callers set its fields)
        assert two.record is one.record and two.needs is one.needs  # the documents: not copied
        assert two.applied(now_s) is one.applied(now_s)  # parsed once, not per pass
        # passes that send and rewrite records: fallback re-shares (the optimizer silent), then
        # with the limit lowered (decreases), a watchdog pass
        svc._fallback.add(SITE)
        svc._late_since[SITE] = time.monotonic() - 3600
        assert await safety.share_fairly(svc, SITE) > 0
        r.hset(K.site(SITE), "limit_kw", "30")
        assert await safety.share_fairly(svc, SITE) > 0
        await watchdog.tick(svc, SITE)
        await safety.share_fairly(svc, SITE)
        changed = (await svc.site_evses(SITE))["CP000/1"]
        assert changed.record is not one.record  # rewritten by the passes: parsed anew
        assert changed.applied(now_s) == [(float(t), float(w)) for t, w in changed.record["applied_series_w"]]
        # every document the read memo holds is still what its stored text says (nothing changed
        # one in place: they are every later read's)
        assert len(store._evses) == N
        for raw, rec in store._evses.values():
            assert rec.profile == json.loads(raw[2]) and rec.needs == json.loads(raw[3])
            assert rec.profile == json.loads(r.get(K.applied_profile(rec.station_id, rec.evse_id)))
    finally:
        await client.aclose()
        r.close()


def test_one_instant_shares_are_the_water_filling_one_series_per_distinct_share() -> None:
    now_s = 1.8e9
    caps = {f"k{i}": 7000.0 if i % 3 else 3000.0 for i in range(30)}
    mins = {f"k{i}": 4140.0 if i % 2 else 0.0 for i in range(30)}
    others = [[(now_s - 60, 1000.0)], [(now_s - 5, 2500.0)]]  # constants: one instant
    for budget_w in (0.0, 20_000.0, 90_000.0, 500_000.0):
        shares = provisional.headroom_shares(others, budget_w, caps, mins, now_s)
        fair = budget.fair_shares(budget_w - 3500.0, caps, mins)
        assert list(shares) == list(caps)
        assert shares == {k: [(now_s, w)] for k, w in fair.items()}
        by_w: dict[float, int] = {}
        for series in shares.values():
            by_w.setdefault(series[0][1], id(series))
            assert id(series) == by_w[series[0][1]]
    # -0.0 and 0.0 are one dict key: each share keeps its own sign
    out: dict[str, Any] = {}
    for _ in provisional._constant_shares(now_s, 0.0, {"a": 0.0, "b": -0.0}, {}, out):
        pass
    assert [math.copysign(1.0, s[0][1]) for s in out.values()] == [
        math.copysign(1.0, w) for w in budget.fair_shares(0.0, {"a": 0.0, "b": -0.0}).values()]


async def test_a_pass_counts_one_series_per_constant_value() -> None:
    now_s = 1.8e9

    def evse(sid: str, fields: dict[str, str], profile: dict[str, Any] | None = None) -> EvseInfo:
        hash_ = {"max_power_w": "11000", **fields}
        return decode_evse(StoredEvse(sid, 1, {"online": "1"}, hash_, profile, None))

    session = {"tx_ref": "C:tx", "transaction_id": "tx"}
    infos = {"A/1": evse("A", {"default_limit_w": "0.0"}), "B/1": evse("B", {"default_limit_w": "0.0"}),
             "C/1": evse("C", {**session, "default_limit_w": "0.0"}), "D/1": evse("D", {}),
             "E/1": evse("E", {"default_limit_w": "-0.0"}),
             "F/1": evse("F", session, {"tx_ref": "C:tx", "applied_series_w": [[now_s - 9, 0.0]]})}
    applied = await sending.counted(infos, now_s, sending.Slices())
    assert applied == {k: i.applied(now_s) for k, i in infos.items()}
    assert applied["A/1"] is applied["B/1"] is applied["C/1"] and applied["D/1"] == [(now_s, 11000.0)]
    assert math.copysign(1.0, applied["E/1"][0][1]) == -1.0  # its own sign
    assert applied["F/1"] == [(now_s - 9, 0.0)] and applied["F/1"] is infos["F/1"].applied(now_s)
