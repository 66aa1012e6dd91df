"""Site power history in Redis: what the dashboard's site chart shows, the same on every API node
and across restarts.

One writer per deployment: `record_site_power` runs under the service lease `site-power`
(`csms.leases.run_singleton`), so with several API nodes exactly one samples. Every
`CLOCK_INTERVAL_S` of the csms clock, and at most once per `REAL_TICK_S` real second (a fast
simulated clock is sampled once a second), it reads each site's document (`StateReader.sites`)
and adds one sample per site to the ZSET `site:{id}:power` (score: the csms clock's timestamp, so
a simulated clock gives a simulated time axis). Each write trims the set to the last
`RETENTION_S` of clock time and at most `MAX_SAMPLES` samples: about 5,800 samples (0.8 MB) per
site in real time, at most `MAX_SAMPLES` x 140 bytes (2.8 MB) under a fast simulated clock.
Reads thin the range inside Redis (a Lua script doing `thin`), so a long range is not shipped
to be dropped, nor decoded in the node's event loop.

A member is `ts|power_kw|limit_kw|planned_kw` (an empty field: unknown): compact, and unique per
timestamp. Encoding, decoding and thinning are pure functions, tested without Redis.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from csms.api.reader import StateReader, s
from evfleet.keys import Keys

log = logging.getLogger(__name__)

CLOCK_INTERVAL_S = 30.0
"""Clock seconds between two samples of every site."""
REAL_TICK_S = 1.0
"""Real seconds between two looks at the clock (the finest sampling under a fast simulated clock)."""
RETENTION_S = 48 * 3600.0
"""Clock seconds a sample is kept."""
MAX_SAMPLES = 20_000
"""Samples kept per site at most (5.5 h of a 1 s sampling under a fast simulated clock)."""
LEASE = "site-power"


@dataclass(frozen=True)
class PowerSample:
    """One site sample: clock time and kW figures (None: unknown)."""

    ts: float
    power_kw: float | None
    limit_kw: float | None
    planned_kw: float | None

    def encode(self) -> str:
        """The ZSET member."""
        return "|".join([_num(self.ts, 3)] + [_num(v, 3) for v in (self.power_kw, self.limit_kw,
                                                                    self.planned_kw)])

    @classmethod
    def decode(cls, member: str) -> PowerSample | None:
        """A member back to a sample; None when it is not one."""
        parts = member.split("|")
        if len(parts) != 4:
            return None
        try:
            values = [float(p) if p else None for p in parts]
        except ValueError:
            return None
        if values[0] is None:
            return None
        return cls(values[0], values[1], values[2], values[3])

    def to_doc(self) -> dict[str, Any]:
        """The API's sample document."""
        return {"ts": datetime.fromtimestamp(self.ts, UTC).isoformat(), "power_kw": self.power_kw,
                "limit_kw": self.limit_kw, "planned_kw": self.planned_kw}


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else repr(round(float(value), digits))


def sample_of(site: dict[str, Any], ts: float) -> PowerSample:
    """The sample of a site document (`csms.api.views.site_view`) at clock time `ts`."""
    return PowerSample(ts, site.get("power_kw"), site.get("limit_kw"), site.get("planned_kw_now"))


def thin(samples: list[PowerSample], max_points: int) -> list[PowerSample]:
    """At most `max_points` samples spread evenly over the list (the first and last kept)."""
    if max_points <= 0:
        return []
    n = len(samples)
    if n <= max_points:
        return samples
    if max_points == 1:
        return [samples[-1]]
    step = (n - 1) / (max_points - 1)
    return [samples[math.floor(i * step + 0.5)] for i in range(max_points)]


_THIN = """
local all = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2])
local n, m = #all, tonumber(ARGV[3])
if n <= m then return all end
if m == 1 then return {all[n]} end
local out, step = {}, (n - 1) / (m - 1)
for i = 0, m - 1 do out[i + 1] = all[math.floor(i * step + 0.5) + 1] end
return out
"""
"""`thin` inside Redis: a day of samples is not sent (and decoded) to be dropped."""


class PowerHistory:
    """Reads and writes the site power ZSETs."""

    def __init__(self, redis: Any, keys: Keys, retention_s: float = RETENTION_S,
                 max_samples: int = MAX_SAMPLES) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_s = retention_s
        self.max_samples = max_samples

    async def record(self, sites: list[dict[str, Any]], ts: float) -> None:
        """Add one sample per site and trim each set (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for site in sites:
            key = self.keys.site_power(site["site_id"])
            sample = sample_of(site, ts)
            pipe.zadd(key, {sample.encode(): ts})
            pipe.zremrangebyscore(key, "-inf", f"({ts - self.retention_s}")
            pipe.zremrangebyrank(key, 0, -self.max_samples - 1)
        await pipe.execute()

    async def read(self, site_id: str, since: float | None, until: float | None,
                   max_points: int) -> list[PowerSample]:
        """Samples in [since, until] (clock timestamps; None = open), oldest first, thinned."""
        raw = await self.redis.eval(_THIN, 1, self.keys.site_power(site_id),
                                    "-inf" if since is None else repr(since),
                                    "+inf" if until is None else repr(until), str(max(1, max_points)))
        return [x for x in (PowerSample.decode(s(m)) for m in raw or []) if x is not None]


def due(now_ts: float, last_ts: float | None, interval_s: float) -> bool:
    """Whether a sample is due at clock time `now_ts` (a clock that went back starts over)."""
    return last_ts is None or now_ts - last_ts >= interval_s or now_ts < last_ts


async def record_site_power(reader: StateReader, history: PowerHistory) -> None:
    """Sample every site every `CLOCK_INTERVAL_S` of the clock until cancelled (run it under the
    `site-power` lease)."""
    last_ts: float | None = None
    while True:
        now_ts = reader.clock.timestamp()
        if due(now_ts, last_ts, CLOCK_INTERVAL_S):
            try:
                await history.record(await reader.sites(), now_ts)
                last_ts = now_ts
            except asyncio.CancelledError:
                raise
            except Exception:  # a Redis hiccup costs one sample, not the recorder
                log.exception("site power history: sampling failed; retrying")
        await asyncio.sleep(REAL_TICK_S)
