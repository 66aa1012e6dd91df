"""K17 with modelled HLC over the real csms: an EV that ignores PMax behind a lenient SECC is caught."""

from __future__ import annotations

import asyncio
import functools
import json
import random
from datetime import timedelta
from typing import Any

from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.iso15118.link import ModelledHlcLink
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.iso15118.conftest import KEYS, PASSWORD, csms_loop, stop_stations
from tests.waiting import until


async def test_k17_ev_plan_above_profile_is_flagged_counted_and_profile_resent(redis_url: str) -> None:
    async with csms_loop(redis_url, limit_kw=12.0) as lp:
        ids = ["K17-GOOD-1", "K17-GOOD-2", "K17-BAD"]
        await lp.provision(ids)
        conn = ConnectionConfig(lp.node.url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3)
        links = {sid: ModelledHlcLink(loop_interval_s=0.5, enforce_pmax=sid != "K17-BAD",
                                      ev_ignores_pmax=sid == "K17-BAD") for sid in ids}
        stations = [SimStation(StationConfig(sid, (EvseSpec.ac(11.0),), aligned_interval_s=0), conn, lp.clock,
                               hlc=links[sid], rng=random.Random(i)) for i, sid in enumerate(ids)]
        runners = [asyncio.create_task(s.run()) for s in stations]
        try:
            await until(lambda: all(s.online for s in stations), 20, "stations online")
            now = lp.clock.now()
            txs = {}
            for i, station in enumerate(stations):
                ev = Ev(EvSpec(f"EV-{i}", "ID.3", 58.0, 0.2, 0.8, 11.0, 100.0, now, now + timedelta(hours=3),
                               hlc=True))
                txs[station.id] = station.plug_in(1, ev)

            async def loop_of(sid: str) -> dict[str, str]:
                raw: dict[Any, Any] = await lp.redis.hgetall(KEYS.session_loop(f"{sid}:{txs[sid]}"))
                return {str(k): str(v) for k, v in raw.items()}

            async def bad_caught() -> bool:
                h = await loop_of("K17-BAD")
                return int(h.get("k17_violations", 0)) >= 1 and int(h.get("k17_resent", 0)) >= 1

            bad = links["K17-BAD"].history[0]
            try:
                await until(bad_caught, 30, "K17 violation counted and the profile re-sent")
            except AssertionError:
                raise AssertionError(f"not caught: loop={await loop_of('K17-BAD')} "
                                     f"doc={await lp.redis.get(KEYS.ev_schedule('K17-BAD', 1))!r} "
                                     f"secc={bad.secc.state} offered={bad.secc.offered_version} "
                                     f"sent={bad.schedules_sent} errors={bad.errors}") from None
            renegotiations = bad.renegotiations

            async def checked_doc() -> dict[str, Any]:
                # the EV may have sent a newer plan meanwhile: its record reads within_limits None
                # until the K17 check has annotated it
                doc = json.loads(await lp.redis.get(KEYS.ev_schedule("K17-BAD", 1)) or "{}")
                return doc if doc.get("within_limits") is not None else {}

            doc = await until(checked_doc, 20, "the bad plan's K17 record")
            assert doc.get("within_limits") is False and doc.get("worst_excess_w", 0) > 100
            # the re-sent profile reaches the station and the SECC renegotiates with the EV
            await until(lambda: bad.renegotiations > renegotiations, 20, "renegotiation after the re-send")
            for sid in ("K17-GOOD-1", "K17-GOOD-2"):
                h = await loop_of(sid)
                assert int(h.get("k17_violations", 0)) == 0, (sid, h)
                await until(functools.partial(_checked_ok, lp, sid), 20, f"{sid} plan checked within limits")
        finally:
            await stop_stations(stations, runners, 10)


async def _checked_ok(lp: object, sid: str) -> bool:
    from tests.iso15118.conftest import Loop

    assert isinstance(lp, Loop)
    doc = json.loads(await lp.redis.get(KEYS.ev_schedule(sid, 1)) or "{}")
    return doc.get("within_limits") is True
