"""A whole-site re-share leaves the event loop between the steps of its site-wide pure work (issue 14).

At 20,000 EVSEs on one site (no optimizer, every session shares), three parts of a pass ran without
yielding: the notes of the site read (`DefaultsState.note_read`), the choice of the sharers in
`safety.share_fairly` and the water-filling of the shares (`provisional.headroom_shares`), 110-150 ms
in one stretch. Counted here, not timed: with the step sizes shrunk, the other task gets the loop
between the steps of each of them, and the pass still sends the same profiles within the site limit.
"""

from __future__ import annotations

from typing import Any

import pytest

from csms.smart_charging import budget, defaults, safety, sending, service
from tests.interleave import TURN, alongside
from tests.loop.test_pass_yields import _fallback_site, _logging, _runs
from tests.loop.test_service_unit import SITE

N = 250
STEP = 10


def _turns_between(log: list[str], first: str, then: str) -> int:
    """The other task's turns from the last `first` to the first `then` after it."""
    end = log.index(then)
    start = max(i for i, entry in enumerate(log[:end]) if entry == first)
    return log[start:end].count(TURN)


async def test_a_whole_site_share_yields_between_the_steps_of_its_site_wide_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, stations, svc = _fallback_site(N)
    limit_w = N * 4_000.0
    log: list[str] = []
    monkeypatch.setattr(sending, "SLICE_S", 0.0)  # every loop of the pass yields at each due step
    monkeypatch.setattr(budget, "STEP_KEYS", STEP, raising=False)
    monkeypatch.setattr(defaults, "NOTE_CHUNK", STEP, raising=False)
    decode_all = service.decode_all

    async def decoded(*args: Any, **kwargs: Any) -> Any:
        out = await decode_all(*args, **kwargs)
        log.append("d")
        return out

    monkeypatch.setattr(service, "decode_all", decoded)
    monkeypatch.setattr(svc.aside, "busy", _logging(log, "b", svc.aside.busy))
    monkeypatch.setattr(safety, "ev_caps_w", _logging(log, "c", safety.ev_caps_w))
    monkeypatch.setattr(safety, "_holds_share", _logging(log, "h", safety._holds_share))
    accepted = await alongside(safety.share_fairly(svc, SITE), log)
    assert _turns_between(log, "d", "b") >= N // STEP  # the read's notes: a turn per step (was 0)
    choice = log[:log.index("c")]  # the sharers' choice: a turn after each EVSE (was one run of N)
    assert choice.count("b") == N and max(_runs(choice, "b")) == 1
    assert _turns_between(log, "c", "h") >= N // STEP  # the water-filling (was the one turn before it)
    assert accepted == N // 2  # only the 1 kW sessions' shares change, as in one go
    assert stations.worst_sum_w <= limit_w + 1.0  # the limit held at every answer
    assert sum(stations.limits_w.values()) <= limit_w + 1.0
