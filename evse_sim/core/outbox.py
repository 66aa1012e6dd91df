"""The outbound queue of a station: which CALLs wait, which survive a lost link, what an answer does.

Pure state (no asyncio): the connection driver sends `peek()`, then reports the outcome with
`answered`, `call_error`, `timed_out` or `bad_answer`; `link_down()` keeps only the persistent
messages (TransactionEvents, NotifyEVChargingNeeds, NotifyEVChargingSchedule), which are replayed
unchanged, with their seqNo, on the next connection. `on_push` lets the driver wake its sender.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from ocpp.v201 import call

from evse_sim.station_types import OutMsg, StationStats


class Outbox:
    """Queued outbound CALLs of one station, in sending order."""

    def __init__(self, stats: StationStats) -> None:
        self.stats = stats
        self.online = False
        self.on_push: Callable[[], None] | None = None
        self._msgs: deque[OutMsg] = deque()

    def push(
        self,
        payload: Any,
        persistent: bool = False,
        on_result: Callable[[Any], None] | None = None,
        on_link: bool = False,
    ) -> bool:
        """Queue a CALL; a non-persistent one is dropped while offline. True if queued.

        `on_link`: queued in answer to a CSMS request on the open connection (NotifyReport after
        GetBaseReport): kept even before the boot is accepted (`online`); the CSMS may send such a
        request right after its BootNotification answer, before the station has marked itself online,
        and the report was then lost (every demo station's EVSE maximum stayed unknown). The sender
        starts after the boot, and `link_down` drops it with the connection like any non-persistent
        message."""
        if not persistent and not self.online and not on_link:
            return False
        self._msgs.append(OutMsg(payload, persistent, on_result))
        if self.on_push is not None:
            self.on_push()
        return True

    def __len__(self) -> int:
        return len(self._msgs)

    def __iter__(self) -> Iterator[OutMsg]:
        return iter(self._msgs)

    def peek(self) -> OutMsg | None:
        """The next message to send (None when empty)."""
        return self._msgs[0] if self._msgs else None

    def last(self, n: int) -> list[OutMsg]:
        """The `n` most recently queued messages, oldest first."""
        return list(islice(reversed(self._msgs), n))[::-1] if n > 0 else []

    def has(self, kind: type) -> bool:
        """Is a message of exactly this payload type waiting?"""
        return any(type(m.payload) is kind for m in self._msgs)

    @property
    def transaction_events(self) -> int:
        """TransactionEvents waiting to be sent (the offline queue)."""
        return sum(1 for m in self._msgs if isinstance(m.payload, call.TransactionEvent))

    def holds_transaction(self, transaction_id: str | None) -> bool:
        """E14: is a TransactionEvent of this transaction (any, for None) still queued?

        Only TransactionEvents carry a transaction: the other persistent messages (the EV's needs and
        plan) have no `transaction_info` and are not transaction messages in E14's sense.
        """
        return any(
            isinstance(m.payload, call.TransactionEvent)
            and (transaction_id is None or m.payload.transaction_info.get("transaction_id") == transaction_id)
            for m in self._msgs
        )

    def holds_periodic_sample(self, transaction_id: str) -> bool:
        """Is a periodic TransactionEvent (MeterValuePeriodic) of this transaction waiting or in flight?"""
        return any(
            isinstance(m.payload, call.TransactionEvent)
            and m.payload.trigger_reason == "MeterValuePeriodic"
            and m.payload.transaction_info.get("transaction_id") == transaction_id
            for m in self._msgs
        )

    # --- outcomes of sending the head message ----------------------------------------------------
    def answered(self, msg: OutMsg, result: Any) -> None:
        """The CSMS answered `msg`: it leaves the queue; its `on_result` runs."""
        self._drop(msg)
        self.stats.sent += 1
        if msg.persistent and getattr(msg.payload, "offline", None):
            self.stats.offline_events_sent += 1
        if msg.on_result is not None:
            msg.on_result(result)

    def call_error(self, msg: OutMsg, text: str) -> None:
        """A CALLERROR: resending cannot help, the message is dropped."""
        self.stats.note_error(f"CALLERROR {type(msg.payload).__name__}: {text}")
        self._drop(msg)

    def timed_out(self, msg: OutMsg) -> None:
        """No answer in time: a persistent message stays at the head and is sent again."""
        self.stats.note_error(f"timeout {type(msg.payload).__name__}")
        if not msg.persistent:
            self._drop(msg)

    def bad_answer(self, msg: OutMsg, text: str) -> None:
        """An answer that fails its schema: resending cannot help, the message is dropped."""
        self.stats.note_error(f"bad answer to {type(msg.payload).__name__}: {text}")
        self._drop(msg)

    def link_down(self) -> None:
        """The link is gone: keep the persistent messages in order, drop the rest."""
        self.online = False
        kept = [m for m in self._msgs if m.persistent]
        self._msgs.clear()
        self._msgs.extend(kept)

    def _drop(self, msg: OutMsg) -> None:
        if self._msgs and self._msgs[0] is msg:
            self._msgs.popleft()
