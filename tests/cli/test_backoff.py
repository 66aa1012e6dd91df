"""evfleet.backoff: exponential caps, full jitter (waits spread over [0, cap]), reset, seeded waits."""

from __future__ import annotations

import random

import pytest

from evfleet.backoff import Backoff


def test_caps_double_up_to_the_maximum_and_reset() -> None:
    b = Backoff(0.5, 4.0, random.Random(1))
    caps = []
    for _ in range(6):
        caps.append(b.cap())
        b.next_delay()
    assert caps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.cap() == 0.5 and b.attempt == 0


def test_full_jitter_spreads_waits_over_the_whole_window() -> None:
    waits = []
    for seed in range(400):
        b = Backoff(1.0, 60.0, random.Random(seed))
        b.attempt = 3  # cap 8 s
        waits.append(b.next_delay())
    assert all(0.0 <= w <= 8.0 for w in waits)
    assert min(waits) < 0.5 and max(waits) > 7.5  # not the old [cap/2, cap] window
    assert 3.0 < sum(waits) / len(waits) < 5.0  # mean cap/2


def test_seeded_waits_repeat_and_bad_bounds_are_refused() -> None:
    a, b = Backoff(1.0, 30.0, random.Random(7)), Backoff(1.0, 30.0, random.Random(7))
    assert [a.next_delay() for _ in range(5)] == [b.next_delay() for _ in range(5)]
    assert Backoff(0.5, 0.2).cap() == 0.2  # a maximum under the base caps the first wait too
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    huge = Backoff(1.0, 60.0)
    huge.attempt = 10_000
    assert huge.cap() == 60.0
