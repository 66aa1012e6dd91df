"""A session that starts while another node holds its site, and that node dies, still gets K15's
interim share from the node that takes the site over (issue 14's failover test: such a session had
no interim timer, its start event having been passed over, and waited at 0 W for a plan)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tests.loop.harness import SITE, Loop, closed_loop

DEAD = "node-x~0001"
"""The token of a node that held the site's lease and dies (its liveness key lapses)."""


async def test_a_session_started_under_a_dead_holder_gets_its_interim_share_at_the_take_over(
        redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0, worker=False, interim_profile_after_s=0.3,
                           smart_charging_alive_ttl_s=4.5) as lp:
        await lp.redis.set(lp.keys.smart_charging_lease(SITE), DEAD, px=60_000)
        await lp.redis.set(lp.keys.node_alive("node-x"), DEAD, px=2_000)  # dies in 2 s
        cp = await lp.add_station("CP-1")
        await cp.start_tx("tx-1")
        lp.active["CP-1"] = True
        started = time.monotonic()
        await lp.wait_for(lambda: _lease_is(lp, "loop-node"), timeout=10, what="the take-over")
        taken_s = time.monotonic() - started
        await lp.wait_for(lambda: cp.limit_w_at(datetime.now(UTC)) > 0, timeout=5,
                          what="an interim share after the take-over")
        assert taken_s > 1.0  # the session started before the take-over (its start was passed over)
        assert 0 < cp.limit_w_at(datetime.now(UTC)) <= 20_000
        assert lp.violations == [], lp.violations[:3]


async def _lease_is(lp: Loop, node: str) -> bool:
    token = await lp.redis.get(lp.keys.smart_charging_lease(SITE))
    return str(token or "").startswith(node)
