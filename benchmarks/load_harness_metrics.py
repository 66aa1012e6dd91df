"""What a load_harness run reads from the csms nodes' /metrics (not a benchmark): smart-charging
counters and garbage-collection / event-loop figures (benchmarks/load_harness.py)."""

from __future__ import annotations

import httpx

SMART_CHARGING_COUNTERS = ("evfleet_smart_charging_profiles_sent_total", "evfleet_k16_replans_skipped_total",
                           "evfleet_smart_charging_passes_total", "evfleet_noncompliant_marked_total",
                           "evfleet_smart_charging_profile_answers_total")


def smart_charging_stats(metrics_urls: list[str]) -> dict[str, float]:
    """Summed over the nodes' /metrics: TxProfiles sent by kind, K16 skips, whole-site passes by
    cause, non-compliance marks, answers to SetChargingProfile by status (`timeout` among them)
    (`SMART_CHARGING_COUNTERS`, one entry per label set); empty when a node does not answer."""
    out: dict[str, float] = {}
    for url in metrics_urls:
        try:
            reply = httpx.get(url, timeout=30)
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
            reply = httpx.get(url, timeout=30)
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
