"""A site pass over many EVSEs leaves the event loop to station messages between chunks.

At 800 stations on one site and one message per second each, the watchdog's verdict loop, the
re-share's profile builds and the sends of a batch each held the loop for 20-30 ms per pass (issue
14's p99). Each loop now yields every `sending.PASS_CHUNK` EVSEs (a re-share's: every
`sending.SLICE_S` of time, `sending.Slices`). Against the in-memory store: the
other task gets the loop between chunks, what the pass decides is the same, and the site limit holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from csms.smart_charging import safety, sending, watchdog
from csms.smart_charging.sending import PASS_CHUNK, pause_every
from csms.smart_charging.service import SmartChargingService
from evfleet.store.memory import InMemoryStateStore
from tests.interleave import alongside
from tests.loop.test_service_unit import SITE, FixedClock, Stations, _service, _session
from tests.loop.test_watchdog_incremental import _reading

T = TypeVar("T")
N = 2 * PASS_CHUNK + PASS_CHUNK // 2


def _runs(log: list[str], mark: str) -> list[int]:
    """Lengths of the runs of `mark` that no turn of the other task interrupts."""
    runs, n = [], 0
    for entry in [*log, "o"]:
        if entry == mark:
            n += 1
        elif entry == "o" and n:
            runs.append(n)
            n = 0
    return runs


def _logging(log: list[str], mark: str, fn: Callable[..., T]) -> Callable[..., T]:
    def wrapped(*args: Any, **kwargs: Any) -> T:
        log.append(mark)
        return fn(*args, **kwargs)
    return wrapped


async def test_pause_every_yields_on_non_zero_multiples_only() -> None:
    log: list[str] = []
    await alongside(_each(log, 7, 3), log)
    assert _runs(log, "x") == [3, 3, 1]


async def _each(log: list[str], n: int, chunk: int) -> None:
    for i in range(n):
        await pause_every(i, chunk)
        log.append("x")


async def test_a_watchdog_pass_judges_the_site_in_chunks_and_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "10000"}
    refs = {f"CP-{i:03d}": _session(store, f"CP-{i:03d}", 10_000.0) for i in range(N)}
    svc = _service(store, Stations(clock, 10_000_000.0), clock)
    for sid, ref in refs.items():
        await svc.dispatch(_reading(sid, ref, 9_000.0))
    log: list[str] = []
    judge = watchdog._judge

    async def judged(*args: Any, **kwargs: Any) -> Any:
        log.append("j")
        return await judge(*args, **kwargs)

    monkeypatch.setattr(watchdog, "_judge", judged)
    await alongside(watchdog.tick(svc, SITE), log)
    assert _runs(log, "j") == [PASS_CHUNK, PASS_CHUNK, PASS_CHUNK // 2]  # others ran between chunks
    assert watchdog.SITE_METERED_KW.labels(SITE)._value.get() == N * 9.0  # every reading counted


def _fallback_site(n: int) -> tuple[InMemoryStateStore, Stations, SmartChargingService]:
    """A site of `n` sessions in fallback mode (no plan), alternately at 1 and 4 kW, the limit their sum
    at 4 kW each; the stations hold those limits."""
    clock, store = FixedClock(), InMemoryStateStore()
    limit_w = n * 4_000.0
    store.sites[SITE] = {"limit_kw": str(limit_w / 1000.0)}
    for i in range(n):
        _session(store, f"CP-{i:03d}", 4_000.0 if i % 2 else 1_000.0)
    stations = Stations(clock, limit_w)
    stations.limits_w = {f"CP-{i:03d}": 4_000.0 if i % 2 else 1_000.0 for i in range(n)}
    svc = _service(store, stations, clock)
    svc._fallback.add(SITE)
    return store, stations, svc


async def test_a_re_share_builds_and_sends_in_chunks_within_the_site_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Fallback mode, no plan: every session of the site re-shares (a profile each)."""
    _, stations, svc = _fallback_site(N)
    limit_w = N * 4_000.0
    log: list[str] = []
    monkeypatch.setattr(sending, "SLICE_S", 0.0)  # a time slice per EVSE: every loop yields each time
    monkeypatch.setattr(safety, "_share_payload", _logging(log, "p", safety._share_payload))
    monkeypatch.setattr(sending, "send", _logging(log, "s", sending.send))
    accepted = await alongside(safety.share_fairly(svc, SITE), log)
    # only the 1 kW sessions' shares change: a profile built for each (the first one's tells what
    # the 4 kW share allows, so none is built for the 4 kW ones), each in its own slice
    assert log.count("p") == N // 2 and max(_runs(log, "p")) == 1
    sends = log.count("s")
    assert accepted == sends == N // 2 and max(_runs(log, "s")) <= PASS_CHUNK
    assert stations.worst_sum_w <= limit_w + 1.0  # the limit held at every answer
    assert sum(stations.limits_w.values()) <= limit_w + 1.0
