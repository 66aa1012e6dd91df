"""csms.runtime: garbage-collector tuning and the event-loop choice (no sockets)."""

from __future__ import annotations

import asyncio
import gc
import re

import pytest

from csms.runtime import (
    GC_PAUSE_CPU_SECONDS,
    GC_PAUSES,
    GC_STALLS,
    event_loop_kind,
    freeze_after_start,
    new_event_loop,
    tune_gc,
)
from csms.settings import CsmsSettings


def test_tune_gc_sets_thresholds_and_times_collections() -> None:
    before = gc.get_threshold()
    try:
        tune_gc((50_000, 20, 100))
        assert gc.get_threshold() == (50_000, 20, 100)
        assert GC_PAUSES in gc.callbacks and gc.callbacks.count(GC_PAUSES) == 1
        tune_gc(None)  # keeps the thresholds, installs the hook once
        assert gc.get_threshold() == (50_000, 20, 100) and gc.callbacks.count(GC_PAUSES) == 1
        gc.collect()
        assert GC_PAUSES.longest[2] > 0
    finally:
        gc.set_threshold(*before)


def test_freeze_moves_live_objects_out_of_the_collectors_reach() -> None:
    try:
        frozen = freeze_after_start()
        assert frozen > 1000 and gc.get_freeze_count() == frozen
        assert gc.get_count()[2] == 0
    finally:
        gc.unfreeze()


def test_auto_event_loop_is_uvloop_unless_the_callback_watch_needs_the_standard_one() -> None:
    """`event_loop = auto` (the default) runs uvloop, a dependency; a callback watch asks for asyncio."""
    pytest.importorskip("uvloop")
    assert CsmsSettings().event_loop == "auto"
    assert event_loop_kind("auto", 0.0) == "uvloop"
    assert event_loop_kind("auto", 50.0) == "asyncio"
    assert event_loop_kind("asyncio", 0.0) == "asyncio"
    assert event_loop_kind("uvloop", 50.0) == "uvloop"


def test_event_loop_choice() -> None:
    assert new_event_loop("asyncio") is asyncio.new_event_loop
    with pytest.raises(ValueError, match="asyncio or uvloop"):
        new_event_loop("trio")


def test_smart_charging_skips_meter_events_of_sites_held_elsewhere() -> None:
    """An idle node does not parse the meter events of sites another node holds."""
    from csms.smart_charging.service import SmartChargingService

    svc = SmartChargingService.__new__(SmartChargingService)
    svc.held, svc._station_site = {"mine"}, {"CS9": "theirs"}
    meter = {"type": "meter.values", "station_id": "CS1", "site_id": "theirs", "data": "{}"}
    assert svc.foreign_power_event(meter)
    assert not svc.foreign_power_event({**meter, "site_id": "mine"})
    assert not svc.foreign_power_event({**meter, "type": "tx.started"})  # lifecycle: always parsed
    assert not svc.foreign_power_event({**meter, "site_id": ""})  # site unknown here: parsed
    assert svc.foreign_power_event({**meter, "site_id": "", "station_id": "CS9"})
    assert svc.foreign_power_event({**meter, "type": "tx.updated"})


def test_schemas_are_compiled_before_the_first_message() -> None:
    """After warm_up, the first message of a station action compiles nothing on the event loop."""
    from csms.protocol import framing

    assert framing.warm_up() == len(framing.STATION_ACTIONS) + 2 * len(framing.WARM_CALLS)
    misses = framing._fast_check.cache_info().misses
    assert framing.schema_violation("Heartbeat", {}) is None
    assert framing.schema_violation("SetChargingProfile", {"status": "Accepted"}, request=False) is None
    assert framing.schema_violation("GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"}) is None
    assert framing._fast_check.cache_info().misses == misses


def test_a_long_collection_is_logged_with_its_size(caplog: pytest.LogCaptureFixture) -> None:
    tune_gc(None)
    cycles = []
    for _ in range(20_000):
        a: list[object] = []
        a.append(a)  # garbage only the collector frees
        cycles.append(a)
    del cycles, a
    GC_PAUSES.log_over_s = 0.0
    try:
        with caplog.at_level("WARNING", logger="csms.runtime"):
            gc.collect()
    finally:
        GC_PAUSES.log_over_s = None
    lines = [r.getMessage() for r in caplog.records if "generation 2 collection took" in r.getMessage()]
    assert lines and int(lines[0].split(" objects collected")[0].rsplit(" ", 1)[1]) >= 20_000
    caplog.clear()
    gc.collect()
    assert not [r for r in caplog.records if "collection took" in r.getMessage()]  # off: nothing


class _Marker:
    """A type only this test makes, to find in the profile."""


def test_the_gc_profile_names_what_a_collection_walked_and_where_it_started(
        caplog: pytest.LogCaptureFixture) -> None:
    tune_gc(None)
    gc.collect()
    gc.disable()  # the young generation holds the markers when ours starts
    try:
        markers = [_Marker() for _ in range(5_000)]
        GC_PAUSES.profile_over_s = 0.0
        with caplog.at_level("WARNING", logger="csms.runtime"):
            gc.collect(0)
    finally:
        GC_PAUSES.profile_over_s = None
        gc.enable()
    lines = [r.getMessage() for r in caplog.records if "gc profile: generation 0" in r.getMessage()]
    sampled = re.search(r"\('_Marker', (\d+)\)", lines[0]) if lines else None
    assert sampled and 490 <= int(sampled.group(1)) <= 510  # 1 in PROFILE_SAMPLE of 5,000
    assert "test_the_gc_profile_names_what_a_collection_walked" in lines[0]  # the stack that started it
    caplog.clear()
    gc.collect(0)
    assert len(markers) == 5_000 and not [r for r in caplog.records if "gc profile" in r.getMessage()]


def test_a_collection_counts_its_cpu_time_and_one_over_10_ms_of_cpu_is_a_stall() -> None:
    tune_gc(None)
    gc.disable()  # no automatic collection while the objects are made: only ours is counted
    try:
        live = [[i] for i in range(600_000)]  # a full collection walks them all: well over 10 ms of CPU
        cpu_before = GC_PAUSE_CPU_SECONDS.labels("2")._value.get()
        stalls_before = GC_STALLS.labels("2")._value.get()
        gc.collect()
        del live
    finally:
        gc.enable()
    used = GC_PAUSE_CPU_SECONDS.labels("2")._value.get() - cpu_before
    assert used >= 0.010
    assert GC_STALLS.labels("2")._value.get() == stalls_before + 1
    young_stalls = GC_STALLS.labels("0")._value.get()
    young_cpu = GC_PAUSE_CPU_SECONDS.labels("0")._value.get()
    gc.collect(0)  # a young collection of almost nothing: CPU counted, no stall
    assert GC_PAUSE_CPU_SECONDS.labels("0")._value.get() > young_cpu
    assert GC_STALLS.labels("0")._value.get() == young_stalls
