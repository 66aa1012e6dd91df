"""/metrics reads the operator values from Redis at most once per `REFRESH_MIN_S`: scrapes close
together (two scrapers, or the load harness asking twice) share one read of every live session."""

from __future__ import annotations

import asyncio
from typing import Any

from csms.api import metrics
from evfleet.keys import Keys


class CountingReader:
    """What `refresh_site_metrics` reads, counting the whole-deployment reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.limit_kw = 100.0

    async def sites(self) -> list[dict[str, Any]]:
        self.reads += 1
        await asyncio.sleep(0.01)  # a read yields: concurrent scrapes overlap it
        return [{"site_id": "depot", "power_kw": 7.0, "active_sessions": 1, "limit_kw": self.limit_kw,
                 "planned_kw_now": None}]

    async def active_tx_ids(self) -> set[str]:
        return {"CP-1:tx:1"}

    class clock:  # noqa: N801 - the reader's clock attribute
        @staticmethod
        def timestamp() -> float:
            return 0.0

    keys = Keys()

    class redis:  # noqa: N801 - the reader's client: no consumer group yet (evfleet.store.lag.GroupLagPoll)
        @staticmethod
        async def xinfo_groups(stream: str) -> list[dict[str, Any]]:
            return []


def _limit_kw() -> float | None:
    for sample in metrics.COLLECTOR.collect():
        if sample.name == "evfleet_site_limit_kw":
            return sample.samples[0].value if sample.samples else None
    return None


async def test_scrapes_within_the_interval_share_one_read() -> None:
    reader = CountingReader()
    refresh = metrics.SiteMetricsRefresh(reader, min_interval_s=60.0)  # type: ignore[arg-type]
    assert await asyncio.gather(*(refresh.refresh() for _ in range(3))) == [True, False, False]
    assert await refresh.refresh() is False
    assert reader.reads == 1  # fails if every scrape read every live session again
    assert _limit_kw() == 100.0


async def test_a_scrape_after_the_interval_reads_again() -> None:
    reader = CountingReader()
    refresh = metrics.SiteMetricsRefresh(reader, min_interval_s=0.0)  # type: ignore[arg-type]
    assert await refresh.refresh() is True
    reader.limit_kw = 80.0  # the grid operator cut the site
    assert await refresh.refresh() is True
    assert reader.reads == 2
    assert _limit_kw() == 80.0  # the new limit is what the scrape shows
