"""Operator-level Prometheus metrics, served with the csms node's OCPP metrics on /metrics.

Values read from Redis (active sessions, site power and limit, the optimizer's latest plan
per site) are refreshed right before a scrape by `refresh_site_metrics` (through
`SiteMetricsRefresh`: at most once per `REFRESH_MIN_S`, so scrapes close together share one
read) and exposed by one collector registered on the default registry. The OCPP metrics of `csms.metrics`
(connected stations, messages by action and result, handler latency) live in the same
registry when that module is imported, and so do the event stream's lag gauges
(`evfleet.store.lag`: `evfleet_stream_lag_seconds{consumer}` of this node's readers, computed at
scrape time from ids they already hold, and the consumer groups' unread entries).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from csms.api.reader import StateReader
from csms.api.views import parse_time
from evfleet.store.lag import GroupLagPoll

log = logging.getLogger(__name__)

PLAN_STATUSES = ("optimal", "fallback", "infeasible", "error", "over_limit")

API_REQUESTS = Counter("evfleet_api_requests_total", "operator API requests",
                       ["method", "route", "status"])
API_LATENCY = Histogram("evfleet_api_request_seconds", "operator API request latency", ["route"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


@dataclass
class SiteSnapshot:
    """What the collector exposes; replaced as a whole on each refresh."""

    active_sessions: int = 0
    sites: list[dict[str, Any]] = field(default_factory=list)
    now_ts: float = 0.0


class OperatorCollector(Collector):
    """Exposes the latest `SiteSnapshot` as gauges."""

    def __init__(self) -> None:
        self.snapshot = SiteSnapshot()

    def collect(self) -> Iterator[Metric]:
        """Gauge families for the current snapshot."""
        snap = self.snapshot
        active = GaugeMetricFamily("evfleet_active_sessions", "charging sessions not yet ended")
        active.add_metric([], snap.active_sessions)
        yield active
        power = GaugeMetricFamily("evfleet_site_power_kw", "site load: sum of live session power (kW)",
                                  labels=["site"])
        limit = GaugeMetricFamily("evfleet_site_limit_kw", "site power limit (kW)", labels=["site"])
        planned = GaugeMetricFamily("evfleet_site_planned_kw", "optimizer's planned site load now (kW)",
                                    labels=["site"])
        sessions = GaugeMetricFamily("evfleet_site_active_sessions", "live sessions per site",
                                     labels=["site"])
        solve = GaugeMetricFamily("evfleet_optimizer_solve_seconds", "solve time of the latest site plan",
                                  labels=["site"])
        status = GaugeMetricFamily("evfleet_optimizer_status",
                                   "1 for the status of the latest site plan", labels=["site", "status"])
        age = GaugeMetricFamily("evfleet_optimizer_plan_age_seconds", "clock time since the latest plan",
                                labels=["site"])
        objective = GaugeMetricFamily("evfleet_optimizer_objective", "objective of the latest site plan",
                                      labels=["site"])
        for site in snap.sites:
            sid = site["site_id"]
            power.add_metric([sid], site["power_kw"])
            sessions.add_metric([sid], site["active_sessions"])
            if site["limit_kw"] is not None:
                limit.add_metric([sid], site["limit_kw"])
            if site["planned_kw_now"] is not None:
                planned.add_metric([sid], site["planned_kw_now"])
            opt = site.get("optimizer")
            if not opt:
                continue
            if isinstance(opt.get("solve_s"), int | float):
                solve.add_metric([sid], float(opt["solve_s"]))
            if isinstance(opt.get("objective"), int | float):
                objective.add_metric([sid], float(opt["objective"]))
            current = str(opt.get("status") or "unknown")
            for name in sorted({*PLAN_STATUSES, current}):
                status.add_metric([sid, name], 1.0 if name == current else 0.0)
            computed = parse_time(opt.get("computed_at"))
            if computed is not None:
                age.add_metric([sid], max(0.0, snap.now_ts - computed.timestamp()))
        yield from (power, limit, planned, sessions, solve, status, age, objective)


COLLECTOR = OperatorCollector()
REGISTRY.register(COLLECTOR)


def load_ocpp_metrics() -> bool:
    """Import the csms node's OCPP metrics module so its series share the registry."""
    try:
        importlib.import_module("csms.metrics")
    except ImportError:
        return False
    return True


async def refresh_site_metrics(reader: StateReader) -> None:
    """Read the operator values from Redis into the collector, and the event streams' consumer
    groups (`evfleet.store.lag`: the optimizer's unread entries, at most once per `GROUP_POLL_S`)."""
    sites = await reader.sites()
    active = len(await reader.active_tx_ids())
    COLLECTOR.snapshot = SiteSnapshot(active_sessions=active, sites=sites, now_ts=reader.clock.timestamp())
    await GROUP_LAG.poll(reader.redis, reader.keys.event_streams())


GROUP_LAG = GroupLagPoll()
"""XINFO GROUPS of the event streams for /metrics (one per process: the gauges are the process's)."""


REFRESH_MIN_S = 5.0
"""Scrapes within this many seconds of the last refresh get its values: a refresh reads every live
session's power (at 10,000 stations about a tenth of a second of a node's CPU), and two scrapers, or
one scraping twice (the load harness), need not pay it twice."""


class SiteMetricsRefresh:
    """`refresh_site_metrics` for one app, at most once per `min_interval_s` (concurrent scrapes
    wait for the refresh under way and get its values)."""

    def __init__(self, reader: StateReader, min_interval_s: float = REFRESH_MIN_S) -> None:
        self.reader = reader
        self.min_interval_s = min_interval_s
        self._lock = asyncio.Lock()
        self._done_at = -float("inf")

    async def refresh(self) -> bool:
        """Refresh unless the last refresh ended less than `min_interval_s` ago; whether it did."""
        async with self._lock:
            if time.monotonic() - self._done_at < self.min_interval_s:
                return False
            await refresh_site_metrics(self.reader)
            self._done_at = time.monotonic()
            return True


READ_FROM_REDIS = ("evfleet_active_sessions", "evfleet_site_", "evfleet_optimizer_", "evfleet_stream_group_")
"""Prefixes of the series `refresh_site_metrics` reads from Redis."""


def needs_refresh(names: Sequence[str] | None) -> bool:
    """Whether a scrape of `names` (None: every series) needs `refresh_site_metrics` (`READ_FROM_REDIS`):
    a scrape of, say, `evfleet_stream_lag_seconds` alone costs the node no Redis read (load_harness
    samples it every few seconds)."""
    return not names or any(name.startswith(READ_FROM_REDIS) for name in names)


def render(registry: CollectorRegistry = REGISTRY, names: Sequence[str] | None = None) -> bytes:
    """Prometheus text exposition of the registry (only the series `names`, if given)."""
    return generate_latest(registry.restricted_registry(names) if names else registry)
