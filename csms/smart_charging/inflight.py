"""TxProfile calls one service has out at once.

A pass (`sending.execute`) awaits every answer of a batch (each call is bounded by the call
timeout); needs that arrive meanwhile get their provisional share during that wait
(`sending.await_answers`). Until 2026-12-06 a pass could go on without slow answers, counting
them at max(old, new) in a ledger laid over every read; that path failed
`tests/iso15118/test_fleet_hlc.py` at a short patience and was removed (commit a54044a gives the runs).
One case remains: when the site's limit changes, a pass stops and hands the calls whose answers
stopped coming to `aside` (`sending.execute`), where no other profile goes to their EVSEs until
their answers are recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

SENDS_OUT_MAX = 256
"""TxProfile calls one service has out at once (`InFlight.slots`, held by `sending.send`; the
TxDefaultProfiles are bounded by their own batches, `defaults.DEFAULTS_BATCH`). Without it a
loaded node could start batch after batch while its stations answer late: at 20,000 stations the
calls and their store writes exhausted the node's Redis pool (1,024 connections; 16,241 sends
failed with "No connection available"). A send waiting for a slot is simply a slower answer: its
pass awaits it like any other."""


@dataclass
class InFlight:
    """The calls out of one service."""

    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SENDS_OUT_MAX))
    """At most `SENDS_OUT_MAX` calls out at once (`sending.send`)."""
