"""What the metered watchdog knows between its passes, kept up to date by events (pure, no I/O).

The watchdog (`watchdog.tick`, every `watchdog_interval_s`) used to read and decode every metered
EVSE of the site each second: 20,000 records a second on a 20,000-station site. It now works
from this state, maintained as events arrive:

- `power`: the last metered power of each session (`tx.updated` / `meter.values`), and per site
  the EVSEs it belongs to: the site's metered sum (the over-limit alarm) comes from this
  dictionary, no read. The sum over the site's EVSEs is kept as readings come (`members_mw`, in
  integer milliwatts: exact, no drift), so a pass corrects it only for the few stale sessions and
  capped readings instead of summing every EVSE: a loop over 20,000 EVSEs was 17-27 ms of CPU
  in every watchdog pass of the 20,000-station site, once a second (issue 14);
- `dirty`: EVSEs with a reading the watchdog has not compared with their limit yet, or whose
  limit changed since (`recheck`, called when a profile answer is recorded). Only these are read
  in a pass, with `pending`: EVSEs whose non-compliance or compliance clock is running, or that
  are marked non-compliant (their clock must be able to run out without a new reading), and
  `stale`: readings whose session did not match the EVSE's when last checked (not counted in the
  sum until they do).

- `held`: the TxProfiles each EVSE accepted lately (`HeldProfile`: sent, answered, the series it
  allows, for `HOLD_KEEP_S`): which limits a station may have applied when it took a reading
  (`held_at`), however many answers came between that reading and its judgement. They are also
  stored in the EVSE's applied-profile record (`HELD_FIELD`, written with it: `encode_held`), so
  a node that takes the site's lease over judges with what the previous one sent (`adopt`, from
  the record the watchdog reads anyway: no read of its own);
- `caps`: a reading taken before the session's latest accepted profile (`READING_LAG_S`) shows
  what the station drew under an earlier limit: the site's metered sum counts it at most at the
  limit now in force until a fresh reading comes (`total_w`), unless the station is marked
  non-compliant (`untrusted`: it has shown it does not obey). A mass re-share confirms the
  decreases before the increases, but the lowered stations' last readings (taken before) stayed
  in the sum beside the raised ones' new readings: false over-limit alarms (32 in one loaded run).
  A station that keeps drawing above its new limit shows it in its next reading, counted in full.
  A reading is capped so whether it is noted before or after that answer (the event stream may lag
  the answers): the alarm's decision is `site_alarm`.

An EVSE whose reading did not change and whose limit did not change is not compared again: the
comparison would give the same answer as last time. So a station is judged on its readings, each
of them once, plus every pass while a clock runs; the over-limit sum is the same figure as
before (every current reading of the site, stale sessions excluded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

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
HELD_FIELD = "held"
"""The applied-profile record's field with the session's held profiles (`encode_held`)."""


@dataclass(frozen=True)
class HeldProfile:
    """One TxProfile an EVSE accepted: its session, when it was sent and answered (unix s), and the
    series (W) it allows from when it was sent until `HOLD_KEEP_S` after it was answered."""

    tx_ref: str
    sent_s: float
    answered_s: float
    series: Series

    @cached_property
    def text(self) -> str:
        """This profile as the record stores it (`encode_held`), built once."""
        return ",".join([repr(self.sent_s), repr(self.answered_s)] + [f"{t!r}:{w!r}" for t, w in self.series])


def window(series: Series, start_s: float, end_s: float) -> Series:
    """`series` between `start_s` and `end_s` (the value at `start_s` first): what a held profile
    needs to answer `value_at` there (a day's plan is 96 points; kept are the one or two in force)."""
    out = [(start_s, planner.value_at(series, start_s))]
    out += [(t, w) for t, w in series if start_s < t <= end_s]
    return out


def encode_held(held: list[HeldProfile]) -> str:
    """`held` (one session's) as the record stores it: `sent,answered,t:w,t:w;...` (floats as repr,
    exact both ways; one string, not a container per point, in every record a node keeps)."""
    return ";".join(h.text for h in held)


def decode_held(text: str, tx_ref: str) -> list[HeldProfile]:
    """The held profiles of session `tx_ref` stored as `text` (`encode_held`); a malformed entry is
    skipped (the record-based rule of `watchdog.allowed_when_taken_w` still covers the reading)."""
    out = []
    for entry in text.split(";"):
        parts = entry.split(",")
        try:
            series = [(float(t), float(w)) for t, w in (p.split(":") for p in parts[2:])]
            if series:
                out.append(HeldProfile(tx_ref, float(parts[0]), float(parts[1]), series))
        except ValueError:
            continue
    return out


def _pruned(held: list[HeldProfile]) -> list[HeldProfile]:
    """The newest session's profiles, oldest first, without those replaced longer ago than any
    reading still judged was taken (`HOLD_KEEP_S`, `HOLD_KEEP_MIN`, `HOLD_MAX`)."""
    held.sort(key=lambda h: h.answered_s)
    ref, newest_s = held[-1].tx_ref, held[-1].answered_s
    kept = [h for h in held if h.tx_ref == ref]
    while len(kept) > HOLD_MAX or (len(kept) > HOLD_KEEP_MIN and kept[1].answered_s < newest_s - HOLD_KEEP_S):
        kept.pop(0)
    return kept


def _mw(power_w: float) -> int:
    """A reading in integer milliwatts (the site's kept sum: exact whatever the order of updates)."""
    return round(power_w * 1000.0)


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
    members_mw: dict[str, int] = field(default_factory=dict)
    """site -> the sum of `power` over `members` (milliwatts, rounded per reading), kept by `note`,
    `place` and `drop`, the only writers of `power` and `members`."""
    unsited: set[EvseId] = field(default_factory=set)
    """Readings of stations whose site was not known at intake (resolved by the next pass)."""
    dirty: dict[str, set[EvseId]] = field(default_factory=dict)
    pending: dict[str, set[EvseId]] = field(default_factory=dict)
    stale: dict[str, set[EvseId]] = field(default_factory=dict)
    held: dict[EvseId, list[HeldProfile]] = field(default_factory=dict)
    """(station, evse) -> the TxProfiles it accepted lately, oldest first (`hold`, `held_at`)."""
    held_src: dict[EvseId, str] = field(default_factory=dict)
    """(station, evse) -> its record's `HELD_FIELD` text last merged into `held` or written (`adopt`)."""
    caps: dict[EvseId, Series] = field(default_factory=dict)
    """(station, evse) -> the limit its last reading, taken before it, counts at most in the site's sum."""
    untrusted: set[EvseId] = field(default_factory=set)
    """EVSEs marked non-compliant: their readings count in full (`watchdog.tick` keeps it)."""
    probe_at: dict[str, tuple[frozenset[EvseId], float]] = field(default_factory=dict)
    """site -> (its refusing EVSEs when last read, their earliest retry time): read again only when
    that set changes or a retry falls due (`watchdog.tick` probes them then)."""

    def note(self, evse: EvseId, site_id: str | None, tx_ref: str, power_w: float,
             at_s: float | None = None) -> None:
        """A reading (stored at `at_s`): remembered, and checked by the next pass of its site."""
        self._count(evse, -1)
        self.power[evse] = (tx_ref, power_w)
        self._count(evse, +1)
        if at_s is None:
            self.taken_at.pop(evse, None)
        else:
            self.taken_at[evse] = at_s
        if evse in self.held:  # also a reading that reaches this node after the answer it predates
            self._recap(evse)
        if site_id is None:
            site_id = self.site_of.get(evse)
        if site_id is None:
            self.unsited.add(evse)
            return
        self.place(evse, site_id)
        self.dirty.setdefault(site_id, set()).add(evse)

    def place(self, evse: EvseId, site_id: str) -> None:
        """The EVSE's site (from the event or the station's record)."""
        self._count(evse, -1)
        old = self.site_of.get(evse)
        if old is not None and old != site_id:
            self.members.get(old, set()).discard(evse)
        self.site_of[evse] = site_id
        self.members.setdefault(site_id, set()).add(evse)
        self.unsited.discard(evse)
        self._count(evse, +1)

    def drop(self, evse: EvseId) -> None:
        """The session ended: its reading no longer counts."""
        self._count(evse, -1)
        self.power.pop(evse, None)
        self.taken_at.pop(evse, None)
        self.held.pop(evse, None)
        self.held_src.pop(evse, None)
        self.caps.pop(evse, None)
        self.untrusted.discard(evse)
        self.unsited.discard(evse)
        site_id = self.site_of.get(evse)
        if site_id is not None:
            for group in (self.members, self.dirty, self.stale):
                group.get(site_id, set()).discard(evse)

    def _count(self, evse: EvseId, sign: int) -> None:
        """Add (`sign` +1) or take out (-1) the EVSE's reading from its site's `members_mw`, if it
        is a member with a reading: called around every change of `power` or `members`."""
        site_id = self.site_of.get(evse)
        seen = self.power.get(evse)
        if site_id is not None and seen is not None and evse in self.members.get(site_id, ()):
            self.members_mw[site_id] = self.members_mw.get(site_id, 0) + sign * _mw(seen[1])

    def hold(self, evse: EvseId, tx_ref: str, sent_s: float, answered_s: float, series: Series) -> None:
        """The EVSE accepted a TxProfile of session `tx_ref` (sent at `sent_s`, answer recorded at
        `answered_s`) allowing `series`; those of other sessions and old ones are forgotten."""
        sent_s, answered_s = round(sent_s, 3), round(answered_s, 3)  # ms, W/10: short in the record
        kept = [h for h in self.held.get(evse, ()) if h.tx_ref == tx_ref]
        kept.append(HeldProfile(tx_ref, sent_s, answered_s, [(round(t, 3), round(w, 1)) for t, w in window(
            series, sent_s, answered_s + HOLD_KEEP_S)]))
        self.held[evse] = _pruned(kept)
        self._recap(evse)

    def adopt(self, evse: EvseId, record: Mapping[str, Any] | None) -> None:
        """Merge the held profiles stored in the EVSE's applied-profile record (`HELD_FIELD`, written
        by whichever node sent them) into `held`: a node that took the site's lease over judges with
        what the previous one sent. Nothing to do when the text is what this node last merged or
        wrote (a string comparison: no parse per reading)."""
        text = record.get(HELD_FIELD) if record else None
        if not text or not isinstance(text, str) or self.held_src.get(evse) == text:
            return
        self.held_src[evse] = text
        stored = decode_held(text, str(record.get("tx_ref") or "")) if record else []
        mine = self.held.get(evse, [])
        known = {(h.tx_ref, h.sent_s, h.answered_s) for h in mine}
        merged = mine + [h for h in stored if (h.tx_ref, h.sent_s, h.answered_s) not in known]
        if merged:
            self.held[evse] = _pruned(merged)
            self._recap(evse)

    def held_text(self, evse: EvseId, tx_ref: str) -> str:
        """The held profiles of session `tx_ref` as its record stores them (`encode_held`), noted as
        written (`adopt` does not merge them back)."""
        text = encode_held([h for h in self.held.get(evse, ()) if h.tx_ref == tx_ref])
        if text:
            self.held_src[evse] = text
        return text

    def _recap(self, evse: EvseId) -> None:
        """Whether the EVSE's last reading was taken before its latest accepted profile (module doc):
        then the site's sum counts it at most at that profile (`caps`). A reading with no store time
        counts in full."""
        seen, held, taken = self.power.get(evse), self.held.get(evse), self.taken_at.get(evse)
        if (seen is None or not held or held[-1].tx_ref != seen[0] or taken is None
                or taken >= held[-1].answered_s + READING_LAG_S):
            self.caps.pop(evse, None)
        else:
            self.caps[evse] = held[-1].series

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

    def total_w(self, site_id: str, now_s: float, capped: bool = True) -> float:
        """Metered power of the site at `now_s`: every current reading, stale sessions excluded; a
        reading taken before the session's latest accepted profile counts at most at the limit that
        profile sets now (`caps`, module doc), unless the station is marked non-compliant or
        `capped` is False (every reading as taken). From the kept sum of the site's readings
        (`members_mw`), less the stale ones and what the caps take off: no loop over the site."""
        members = self.members.get(site_id, set())
        stale = self.stale.get(site_id, set())
        power = self.power
        total_mw = self.members_mw.get(site_id, 0)
        for e in stale:
            if e in members and e in power:
                total_mw -= _mw(power[e][1])
        total = total_mw / 1000.0
        if capped:
            untrusted = self.untrusted
            for e, cap in self.caps.items():
                if e in members and e not in stale and e not in untrusted and e in power:
                    w = _mw(power[e][1]) / 1000.0
                    total -= w - min(w, planner.value_at(cap, now_s))
        return total

    def all_of(self, site_id: str) -> list[EvseId]:
        """Every EVSE of the site with a current reading (the corrective pass of an alarm)."""
        return sorted(self.members.get(site_id, ()))
