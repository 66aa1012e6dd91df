"""What the metered watchdog knows between its passes, kept up to date by events (pure, no I/O).

The watchdog (`watchdog.tick`, every `watchdog_interval_s`) used to read and decode every metered
EVSE of the site each second: 20,000 records a second on a 20,000-station site. It now works
from this state, maintained as events arrive:

- `power`: the last metered power of each session (`tx.updated` / `meter.values`), and per site
  the EVSEs it belongs to: the site's metered sum (the over-limit alarm) is a sum over this
  dictionary, no read;
- `dirty`: EVSEs with a reading the watchdog has not compared with their limit yet, or whose
  limit changed since (`recheck`, called when a profile answer is recorded). Only these are read
  in a pass, with `pending`: EVSEs whose non-compliance or compliance clock is running, or that
  are marked non-compliant (their clock must be able to run out without a new reading), and
  `stale`: readings whose session did not match the EVSE's when last checked (not counted in the
  sum until they do).

- `held`: the TxProfiles each EVSE accepted lately (`HeldProfile`: sent, answered, the series it
  allows, for `HOLD_KEEP_S`): which limits a station may have applied when it took a reading
  (`held_at`), however many answers came between that reading and its judgement.

An EVSE whose reading did not change and whose limit did not change is not compared again: the
comparison would give the same answer as last time. So a station is judged on its readings, each
of them once, plus every pass while a clock runs; the over-limit sum is the same figure as
before (every current reading of the site, stale sessions excluded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from csms.smart_charging import planner
from csms.smart_charging.planner import Series
from evfleet.store.port import EvseId

HOLD_KEEP_S = 600.0
"""How long an accepted TxProfile is remembered once answered (`MeteredState.held`): a reading is
judged within a few meter intervals (30-60 s) of being taken; an older one shows nothing new."""
HOLD_KEEP_MIN = 2
"""Profiles remembered per EVSE whatever their age (the one in force and the one before)."""
HOLD_MAX = 32
"""Profiles remembered per EVSE at most (the oldest go first)."""
READING_LAG_S = 2.0
"""How long before it was stored a reading may have been taken (`MeteredState.note` stamps a
reading when its event is stored: it was in the station's queue, in flight and in the node's
buffer before). A profile answered up to this long after a reading was stored may have come after
the reading was taken, so the one it replaced may still have been in force."""


@dataclass(frozen=True)
class HeldProfile:
    """One TxProfile an EVSE accepted: its session, when it was sent and answered (unix s), and the
    series (W) it allows from when it was sent until `HOLD_KEEP_S` after it was answered."""

    tx_ref: str
    sent_s: float
    answered_s: float
    series: Series


def window(series: Series, start_s: float, end_s: float) -> Series:
    """`series` between `start_s` and `end_s` (the value at `start_s` first): what a held profile
    needs to answer `value_at` there (a day's plan is 96 points; kept are the one or two in force)."""
    out = [(start_s, planner.value_at(series, start_s))]
    out += [(t, w) for t, w in series if start_s < t <= end_s]
    return out


@dataclass
class MeteredState:
    """Last readings and what the next watchdog pass of each site must look at (module doc)."""

    power: dict[EvseId, tuple[str, float]] = field(default_factory=dict)
    """(station, evse) -> (tx_ref, last metered power W)."""
    taken_at: dict[EvseId, float] = field(default_factory=dict)
    """(station, evse) -> when its last reading was stored (the event's time, unix s): a reading
    stored before the limit now in force was answered shows nothing about that limit
    (`watchdog.tick`)."""
    site_of: dict[EvseId, str] = field(default_factory=dict)
    members: dict[str, set[EvseId]] = field(default_factory=dict)
    """site -> EVSEs with a current reading."""
    unsited: set[EvseId] = field(default_factory=set)
    """Readings of stations whose site was not known at intake (resolved by the next pass)."""
    dirty: dict[str, set[EvseId]] = field(default_factory=dict)
    pending: dict[str, set[EvseId]] = field(default_factory=dict)
    stale: dict[str, set[EvseId]] = field(default_factory=dict)
    held: dict[EvseId, list[HeldProfile]] = field(default_factory=dict)
    """(station, evse) -> the TxProfiles it accepted lately, oldest first (`hold`, `held_at`)."""
    probe_at: dict[str, tuple[frozenset[EvseId], float]] = field(default_factory=dict)
    """site -> (its refusing EVSEs when last read, their earliest retry time): read again only when
    that set changes or a retry falls due (`watchdog.tick` probes them then)."""

    def note(self, evse: EvseId, site_id: str | None, tx_ref: str, power_w: float,
             at_s: float | None = None) -> None:
        """A reading (stored at `at_s`): remembered, and checked by the next pass of its site."""
        self.power[evse] = (tx_ref, power_w)
        if at_s is None:
            self.taken_at.pop(evse, None)
        else:
            self.taken_at[evse] = at_s
        if site_id is None:
            site_id = self.site_of.get(evse)
        if site_id is None:
            self.unsited.add(evse)
            return
        self.place(evse, site_id)
        self.dirty.setdefault(site_id, set()).add(evse)

    def place(self, evse: EvseId, site_id: str) -> None:
        """The EVSE's site (from the event or the station's record)."""
        old = self.site_of.get(evse)
        if old is not None and old != site_id:
            self.members.get(old, set()).discard(evse)
        self.site_of[evse] = site_id
        self.members.setdefault(site_id, set()).add(evse)
        self.unsited.discard(evse)

    def drop(self, evse: EvseId) -> None:
        """The session ended: its reading no longer counts."""
        self.power.pop(evse, None)
        self.taken_at.pop(evse, None)
        self.held.pop(evse, None)
        self.unsited.discard(evse)
        site_id = self.site_of.get(evse)
        if site_id is not None:
            for group in (self.members, self.dirty, self.stale):
                group.get(site_id, set()).discard(evse)

    def hold(self, evse: EvseId, tx_ref: str, sent_s: float, answered_s: float, series: Series) -> None:
        """The EVSE accepted a TxProfile of session `tx_ref` (sent at `sent_s`, answer recorded at
        `answered_s`) allowing `series`; those of other sessions and old ones are forgotten."""
        kept = [h for h in self.held.get(evse, ()) if h.tx_ref == tx_ref]
        kept.append(HeldProfile(tx_ref, sent_s, answered_s, window(series, sent_s, answered_s + HOLD_KEEP_S)))
        kept.sort(key=lambda h: h.answered_s)
        while len(kept) > HOLD_MAX or (len(kept) > HOLD_KEEP_MIN
                                       and kept[1].answered_s < answered_s - HOLD_KEEP_S):
            kept.pop(0)  # replaced longer ago than any reading still judged was taken
        self.held[evse] = kept

    def held_at(self, evse: EvseId, tx_ref: str, taken_at_s: float) -> float | None:
        """The highest limit (W) among the TxProfiles of session `tx_ref` the station may have
        applied when it took a reading stored at `taken_at_s`: each one sent by then and not
        replaced (its successor answered) before `READING_LAG_S` earlier. None when none is known
        here. The one before the first remembered (a lease taken over, the session's default) is
        not known here: the caller's record-based rule covers it (`watchdog.allowed_when_taken_w`)."""
        held = [h for h in self.held.get(evse, ()) if h.tx_ref == tx_ref]
        best = -math.inf
        for i, h in enumerate(held):
            replaced_s = held[i + 1].answered_s if i + 1 < len(held) else math.inf
            if h.sent_s <= taken_at_s and replaced_s > taken_at_s - READING_LAG_S:
                best = max(best, planner.value_at(h.series, taken_at_s))
        return best if best > -math.inf else None

    def recheck(self, evse: EvseId) -> None:
        """The EVSE's limit changed (a profile answer): its reading is compared again."""
        site_id = self.site_of.get(evse)
        if site_id is not None and evse in self.power:
            self.dirty.setdefault(site_id, set()).add(evse)

    def take(self, site_id: str) -> set[EvseId]:
        """What the site's pass reads: new readings, running clocks, stale sessions."""
        due = self.dirty.pop(site_id, set())
        due |= self.pending.get(site_id, set())
        due |= self.stale.get(site_id, set())
        return {e for e in due if e in self.power}

    def total_w(self, site_id: str) -> float:
        """Metered power of the site: every current reading, stale sessions excluded."""
        stale = self.stale.get(site_id, set())
        power = self.power
        return sum(power[e][1] for e in self.members.get(site_id, ()) if e not in stale and e in power)

    def all_of(self, site_id: str) -> list[EvseId]:
        """Every EVSE of the site with a current reading (the corrective pass of an alarm)."""
        return sorted(self.members.get(site_id, ()))
