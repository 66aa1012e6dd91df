"""SetChargingProfile calls that timed out, logged at WARNING: one line per `WINDOW_S` with their
count per kind and a few station ids, not one line per call.

They were counted (`evfleet_smart_charging_profile_answers_total{result="timeout"}`) but not
logged: 1,180 in one start-up wave between nodes showed nowhere in the logs. A wave of them is
one event for an operator (a node or its Redis link slow, stations gone), so it is one line a
second while it lasts. What each one counts is unchanged: a TxProfile that timed out counts the
higher of its old and new limit (`conversion.outcome`), a default is sent again after its backoff
(`defaults.TimeoutBackoff`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

WINDOW_S = 1.0
"""Timeouts noted within this long of the first one are logged together."""
EXAMPLES = 5
"""Station ids named per line."""


class TimeoutLog:
    """Counts timed-out calls and logs them once per window (module doc)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.kinds: Counter[str] = Counter()
        self.stations: list[str] = []
        self.reason = ""
        self._due: asyncio.TimerHandle | None = None

    def note(self, station_id: str, kind: str, error: Mapping[str, Any] | None = None) -> None:
        """One call to `station_id` (a profile of `kind`) timed out; `error` is the reply's."""
        self.kinds[kind] += 1
        if len(self.stations) < EXAMPLES and station_id not in self.stations:
            self.stations.append(station_id)
        if not self.reason and error:
            self.reason = str(error.get("description") or error.get("code") or "")
        if self._due is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): logged at once
                self.flush()
                return
            self._due = loop.call_later(self.window_s, self.flush)

    def flush(self) -> None:
        """Log what was noted since the last line (nothing if nothing was)."""
        self._due = None
        total = sum(self.kinds.values())
        if not total:
            return
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.kinds.items()))
        more = f" and {total - len(self.stations)} more" if total > len(self.stations) else ""
        log.warning("%d SetChargingProfile call(s) timed out in the last %.0f s (%s), e.g. %s%s%s; "
                    "each counts the higher of its old and new limit, defaults are sent again later",
                    total, self.window_s, kinds, ", ".join(self.stations), more,
                    f" ({self.reason})" if self.reason else "")
        self.kinds.clear()
        self.stations.clear()
        self.reason = ""


LOG = TimeoutLog()
"""The node's log of timed-out profile calls (every site's passes note theirs here)."""
