"""A station that never answers a call the site's task makes to it alone (the K17 re-send of our
profile) holds up nothing else of its site, and the site limit holds meanwhile (`aside`).

Real csms node, real Redis, real WebSockets, `ocpp` v201 stations (tests/loop/harness.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from tests.loop.harness import Loop, LoopStation, closed_loop, later

SITE_KW = 20.0


class SilentStation(LoopStation):
    """A station that, once `silent` is set, never answers a TxProfile. It may have applied it (the
    csms cannot know), so it holds it from the moment it arrives: the worst the site could see.
    Its receive loop goes on (its own calls are still answered)."""

    def __init__(self, station_id: str, connection: Any) -> None:
        super().__init__(station_id, connection)
        self.silent = False
        self.unanswered: list[dict[str, Any]] = []

    async def route_message(self, raw_msg: str) -> None:
        """Swallow a SetChargingProfile (TxProfile) while silent; route everything else."""
        msg = json.loads(raw_msg)
        if (self.silent and msg[0] == 2 and msg[2] == "SetChargingProfile"
                and msg[3]["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"):
            self.profiles.append(msg[3])
            self.unanswered.append(msg[3])
            return
        await super().route_message(raw_msg)


def _station_sum_w(lp: Loop) -> float:
    now = datetime.now(UTC)
    return sum(cp.limit_w_at(now, lp.active[sid]) for sid, cp in lp.stations.items()
               if cp.profiles or cp.defaults)


async def test_a_station_that_never_answers_a_k17_resend_holds_up_no_other_share(redis_url: str) -> None:
    """CP-1 holds an 11 kW provisional share on a 20 kW site; its EV plans 22 kW (K17 breach), so
    the csms re-sends our profile, and CP-1 never answers it (call timeout 30 s). CP-2's needs
    arrive meanwhile: its provisional share must reach it within 2 s (fails when the site's task
    awaits CP-1's answer inline: it waited for the 30 s timeout), and must be what CP-1 leaves
    counted at max(before, the re-sent profile), 20 - 11.04 kW. Sampled at the stations' side
    every second for 6 s (and by the harness every 20 ms), their limits never sum above 20 kW."""
    async with closed_loop(redis_url, limit_kw=SITE_KW, worker=False, call_timeout_s=30.0,
                           interim_profile_after_s=60.0) as lp:
        cp1 = await lp.add_station("CP-1", SilentStation)
        assert isinstance(cp1, SilentStation)
        cp2 = await lp.add_station("CP-2")
        await lp.wait_for(lambda: cp1.defaults and cp2.defaults, what="default profiles")
        await cp1.start_tx("tx-1", token="T1")
        lp.active["CP-1"] = True
        await cp1.needs(later(8), 60_000, max_current_a=16)
        await lp.wait_for(lambda: cp1.profiles, what="CP-1 provisional share")
        assert cp1.limit_w_at(datetime.now(UTC)) > 11_000
        await cp2.start_tx("tx-2", token="T2")
        lp.active["CP-2"] = True
        await asyncio.sleep(0.5)  # the start is handled (no share before needs: no plan, no fallback)
        assert not cp2.profiles
        # CP-1's EV plans 32 A on 3 phases (22 kW): a breach; our profile is re-sent, never answered
        cp1.silent = True
        await cp1.ev_schedule([(0, 32.0)], datetime.now(UTC))
        await lp.wait_for(lambda: cp1.unanswered, timeout=5, what="K17 re-send at CP-1")
        samples = [_station_sum_w(lp)]
        t0 = time.monotonic()
        await cp2.needs(later(8), 60_000, max_current_a=16)
        while not cp2.profiles:
            assert time.monotonic() - t0 < 2.0, "CP-2's share waited for CP-1's answer"
            await asyncio.sleep(0.01)
        now = datetime.now(UTC)
        assert cp2.limit_w_at(now) <= SITE_KW * 1000 - 11_040 + 1
        assert cp2.limit_w_at(now) > 8_000  # what CP-1 leaves, not 0
        for _ in range(6):  # CP-1 still silent: every second, the stations' limits fit the site
            samples.append(_station_sum_w(lp))
            await asyncio.sleep(1.0)
        assert max(samples) <= SITE_KW * 1000 + 1, samples
        assert lp.violations == [], lp.violations[:3]
        assert lp.samples > 100
