"""The site's over-limit alarm on a real csms node, real Redis and real WebSocket stations: a mass
re-share on a full site (a new session) raises no alarm although the lowered stations' last
readings, taken before their decreases, stay in the metered sum for a while; a station that
really draws above its limit raises it promptly (its readings count in full from `READING_LAG_S`
after its own latest answer: the alarm follows `over_limit_after_s` later).

The stations meter only when the test says so: after each re-share the lowered ones do not meter
for `STALE_S` (> `over_limit_after_s`), as stations metering every 30-60 s do after a re-share.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

from csms.smart_charging.metered import READING_LAG_S
from tests.loop.harness import SITE, Loop, LoopStation, closed_loop

LIMIT_KW = 12.0
STALE_S = 0.5
"""How long the lowered stations' pre-decrease readings stay their last (> `over_limit_after_s`)."""


def _limit_now_w(cp: LoopStation) -> float:
    return cp.limit_w_at(datetime.now(UTC))


async def _alarms(lp: Loop) -> list[dict[str, object]]:
    return [json.loads(f["data"]) for _, f in await lp.redis.xrange(lp.keys.events())
            if f["type"] == "site.over_limit"]


async def _meter(cps: list[LoopStation]) -> None:
    """Each station meters what its limit allows now (a fresh reading)."""
    for cp in cps:
        await cp.meter(cp.tx_id, _limit_now_w(cp))


async def _lowered(lp: Loop, cps: list[LoopStation], below_w: dict[str, float], what: str) -> None:
    await lp.wait_for(lambda: all(_limit_now_w(cp) < below_w[cp.id] - 1.0 for cp in cps), timeout=5,
                      what=what)


async def _stale_window(lp: Loop, fresh: list[LoopStation]) -> None:
    """`fresh` meter their new limits now and every 0.1 s for `STALE_S`; the others do not."""
    end = time.monotonic() + STALE_S
    while time.monotonic() < end:
        await _meter(fresh)
        await asyncio.sleep(0.1)


async def test_a_mass_reshare_on_a_full_site_raises_no_alarm_and_an_overdraw_does(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=LIMIT_KW, worker=False, interim_profile_after_s=0.3,
                           over_limit_after_s=0.2, watchdog_interval_s=0.05,
                           noncompliant_after_s=2.0) as lp:
        cps = [await lp.add_station(f"CP-{i}") for i in range(1, 5)]
        await lp.wait_for(lambda: all(cp.defaults for cp in cps), what="default profiles")
        full, late = cps[:3], cps[3]
        for i, cp in enumerate(full, start=1):
            await cp.start_tx(f"tx-{i}", token=f"T{i}")
            lp.active[cp.id] = True
        await lp.wait_for(lambda: sum(_limit_now_w(cp) for cp in full) > LIMIT_KW * 1000 - 400, timeout=5,
                          what="the three sharing the whole limit")
        await _meter(full)  # the site is full, metered at its limit

        # a new session on the full site: the three are lowered (confirmed first), then CP-4 raised;
        # CP-4 meters at once, the three's last readings stay from before their decreases
        before = {cp.id: _limit_now_w(cp) for cp in full}
        await late.start_tx("tx-4", token="T4")
        lp.active[late.id] = True
        await _lowered(lp, full, before, "the three lowered")
        await lp.wait_for(lambda: _limit_now_w(late) > 2_000, timeout=5, what="CP-4 admitted")
        await _stale_window(lp, [late])
        await _meter(cps)
        await asyncio.sleep(0.2)
        assert await _alarms(lp) == [], "a re-share with readings from before it raised the alarm"
        assert lp.violations == [], lp.violations[:3]

        # a real overdraw: CP-1 ignores its limit and meters 11 kW (fresh readings), the others theirs
        full[0].ignore_limits = True
        t0 = time.monotonic()
        while not await _alarms(lp):
            assert time.monotonic() - t0 < READING_LAG_S + 1.0, "an overdraw raised no alarm"
            await _meter(cps)
            await asyncio.sleep(0.1)
        alarm = (await _alarms(lp))[0]
        assert alarm["state"] == "over" and float(str(alarm["metered_kw"])) > LIMIT_KW
        assert await lp.redis.hget(lp.keys.site(SITE), "over_limit") == "1"
