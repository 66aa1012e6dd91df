"""What a load_harness run reads from the csms nodes' /metrics (not a benchmark): smart-charging
counters and garbage-collection / event-loop figures (benchmarks/load_harness.py)."""

from __future__ import annotations

import time
from typing import Any

import httpx

SMART_CHARGING_COUNTERS = ("evfleet_smart_charging_profiles_sent_total", "evfleet_k16_replans_skipped_total",
                           "evfleet_smart_charging_passes_total", "evfleet_noncompliant_marked_total",
                           "evfleet_smart_charging_profile_answers_total")
"""Asked by name: none starts with a prefix of `csms.api.metrics.READ_FROM_REDIS` (`evfleet_site_`, ...),
so the scrape makes the node read nothing from Redis (the over-limit alarms, evfleet_site_..., are
counted from the node logs instead: benchmarks/loop_stalls.py)."""


GC_SERIES = ("evfleet_event_loop_slow_callbacks_total", "evfleet_event_loop_slow_turns_total",
             "evfleet_gc_thaws_total", "evfleet_gc_stalls_total", "evfleet_gc_pause_cpu_seconds_total",
             "evfleet_gc_pause_max_seconds", "evfleet_gc_collections_total", "evfleet_gc_pause_seconds_total")
"""The series `gc_stats` reads: asked by name (`/metrics?name[]=`), so the scrape at the window's
start costs the node no Redis read of every live session (`csms.api.metrics.needs_refresh`)."""


def _scrape(url: str, names: tuple[str, ...]) -> httpx.Response:
    """The node's /metrics, only `names`."""
    return httpx.get(url, params={"name[]": list(names)}, timeout=30)


def smart_charging_stats(metrics_urls: list[str]) -> dict[str, float]:
    """Summed over the nodes' /metrics: TxProfiles sent by kind, K16 skips, whole-site passes by
    cause, non-compliance marks, answers to SetChargingProfile by status (`timeout` among them)
    (`SMART_CHARGING_COUNTERS`, one entry per label set); empty when a node does not answer."""
    out: dict[str, float] = {}
    for url in metrics_urls:
        try:
            reply = _scrape(url, SMART_CHARGING_COUNTERS)
        except httpx.HTTPError:
            return {}
        if reply.status_code != 200:
            return {}
        for line in reply.text.splitlines():
            if line.startswith(SMART_CHARGING_COUNTERS):
                name, value = line.rsplit(" ", 1)
                name = name.replace("evfleet_", "").replace("_total", "")
                out[name] = out.get(name, 0.0) + float(value)
    return out


def gc_stats(metrics_urls: list[str]) -> dict[str, float]:
    """Summed over the nodes' /metrics: gen-2 collections, seconds in gen-2, longest gen-2 pause;
    longest gen-0/gen-1 pause, longest event-loop lag observed (`evfleet_event_loop_lag_seconds`
    bucket bound), slow callbacks and busy loop turns logged (nodes run with `slow_callback_ms`);
    CPU seconds of young collections, and collections of >= 10 ms CPU (any generation); csms.refreeze
    thaws by rule ("thaws:REASON")."""
    out = {"gen2_collections": 0.0, "gen2_seconds": 0.0, "gen2_max_ms": 0.0, "gen0_max_ms": 0.0,
           "gen1_max_ms": 0.0, "slow_callbacks": 0.0, "young_collections": 0.0, "young_seconds": 0.0,
           "young_cpu_seconds": 0.0, "gc_stalls": 0.0, "slow_turns": 0.0}
    for url in metrics_urls:
        try:
            reply = _scrape(url, GC_SERIES)
        except httpx.HTTPError:
            reply = None
        if reply is None or reply.status_code != 200:  # a node too busy: no figure, not a wrong one
            return {k: float("nan") for k in out}
        for line in reply.text.splitlines():
            if line.startswith("evfleet_event_loop_slow_callbacks_total"):
                out["slow_callbacks"] += float(line.rsplit(" ", 1)[1])
            if line.startswith("evfleet_event_loop_slow_turns_total"):
                out["slow_turns"] += float(line.rsplit(" ", 1)[1])
            if line.startswith("evfleet_gc_thaws_total{"):  # csms.refreeze thaws, by the rule that fired
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                out[f"thaws:{reason}"] = out.get(f"thaws:{reason}", 0.0) + float(line.rsplit(" ", 1)[1])
            if line.startswith("evfleet_gc_stalls_total"):  # collections of >= 10 ms CPU, any generation
                out["gc_stalls"] += float(line.rsplit(" ", 1)[1])
            if line.startswith("evfleet_gc_pause_cpu_seconds_total") and 'generation="2"' not in line:
                out["young_cpu_seconds"] += float(line.rsplit(" ", 1)[1])
            for young in ("0", "1"):
                if line.startswith(f'evfleet_gc_pause_max_seconds{{generation="{young}"}}'):
                    pause_ms = float(line.rsplit(" ", 1)[1]) * 1000
                    out[f"gen{young}_max_ms"] = max(out[f"gen{young}_max_ms"], pause_ms)
            if line.startswith(("evfleet_gc_collections_total", "evfleet_gc_pause_seconds_total")) \
                    and 'generation="2"' not in line:
                young = "young_collections" if line.startswith("evfleet_gc_collections") else "young_seconds"
                out[young] += float(line.rsplit(" ", 1)[1])
            if 'generation="2"' not in line:
                continue
            name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
            if name == "evfleet_gc_collections_total":
                out["gen2_collections"] += value
            elif name == "evfleet_gc_pause_seconds_total":
                out["gen2_seconds"] += value
            elif name == "evfleet_gc_pause_max_seconds":
                out["gen2_max_ms"] = max(out["gen2_max_ms"], value * 1000)
    return out


LAG_SERIES = "evfleet_stream_lag_seconds"


class StreamLagSampler:
    """Samples the nodes' `evfleet_stream_lag_seconds{consumer}` every `every_s` in a thread, through
    `/metrics?name[]=...` (no Redis read on the node: `csms.api.metrics.needs_refresh`); `summary()`
    gives, per consumer, the max and median over every sample of every process and each process's
    max (in the order of `metrics_urls`: the nodes, then the optimizer workers)."""

    def __init__(self, metrics_urls: list[str], every_s: float = 2.0) -> None:
        import threading

        self.urls = metrics_urls
        self.every_s = every_s
        self.samples: dict[str, list[list[float]]] = {}
        """consumer -> per node, its samples."""
        self.failed = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-lag-sampler", daemon=True)

    def __enter__(self) -> StreamLagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                for i, url in enumerate(self.urls):
                    self._sample(client, i, url)
                self.rounds += 1
                self._stop.wait(max(0.0, self.every_s - (time.monotonic() - started)))

    def _sample(self, client: httpx.Client, node: int, url: str) -> None:
        try:
            reply = client.get(url, params={"name[]": LAG_SERIES})
        except httpx.HTTPError:
            self.failed += 1
            return
        if reply.status_code != 200:
            self.failed += 1
            return
        for line in reply.text.splitlines():
            if line.startswith(LAG_SERIES + "{"):
                consumer = line.split('consumer="', 1)[1].split('"', 1)[0]
                per_node = self.samples.setdefault(consumer, [[] for _ in self.urls])
                per_node[node].append(float(line.rsplit(" ", 1)[1]))

    def summary(self) -> dict[str, dict[str, object]]:  # called after __exit__
        """Per consumer: max and median seconds over all samples, each process's max, samples taken."""
        import statistics

        out: dict[str, dict[str, object]] = {}
        for consumer, per_node in sorted(self.samples.items()):
            every = [v for node in per_node for v in node]
            if not every:
                continue
            out[consumer] = {"max_s": round(max(every), 2), "median_s": round(statistics.median(every), 2),
                             "max_s_each": [round(max(node), 2) if node else None for node in per_node],
                             "samples": len(every)}
        out["scrapes"] = {"rounds": self.rounds, "failed": self.failed}
        return out


def lease_spread(redis_url: str, station_ids: list[str]) -> dict[str, Any]:
    """Who acts for which site at the end of the window: smart-charging site leases per node, and
    the share of stations whose site is held by the node they are connected to (their calls go in
    process there, the others' through Redis: `csms.smart_charging.calls`)."""
    import redis

    from evfleet.keys import Keys

    keys = Keys()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        prefix = keys.smart_charging_lease("")
        holders = {k[len(prefix):]: client.get(k) for k in client.scan_iter(prefix + "*", count=1000)}
        pipe = client.pipeline(transaction=False)
        for sid in station_ids:
            pipe.hmget(keys.station(sid), ["site_id", "node"])
        rows = pipe.execute()
    finally:
        client.close()
    per_node: dict[str, int] = {}
    for token in holders.values():
        if token:
            node = token.split("~", 1)[0]
            per_node[node] = per_node.get(node, 0) + 1
    local = sum(1 for site, node in rows
                if site and node and (holders.get(site) or "").split("~", 1)[0] == node)
    return {"sites_per_node": dict(sorted(per_node.items())),
            "sites_unheld": sum(1 for t in holders.values() if not t),
            "stations_on_site_holder": round(local / len(station_ids), 3) if station_ids else None}
