"""What the metered watchdog knows between its passes, kept up to date by events (pure, no I/O).

The watchdog (`safety.tick`, every `watchdog_interval_s`) used to read and decode every metered
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

An EVSE whose reading did not change and whose limit did not change is not compared again: the
comparison would give the same answer as last time. So a station is judged on its readings, each
of them once, plus every pass while a clock runs; the over-limit sum is the same figure as
before (every current reading of the site, stale sessions excluded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evfleet.store.port import EvseId


@dataclass
class MeteredState:
    """Last readings and what the next watchdog pass of each site must look at (module doc)."""

    power: dict[EvseId, tuple[str, float]] = field(default_factory=dict)
    """(station, evse) -> (tx_ref, last metered power W)."""
    taken_at: dict[EvseId, float] = field(default_factory=dict)
    """(station, evse) -> when its last reading was stored (the event's time, unix s): a reading
    stored before the limit now in force was answered shows nothing about that limit
    (`safety.tick`)."""
    site_of: dict[EvseId, str] = field(default_factory=dict)
    members: dict[str, set[EvseId]] = field(default_factory=dict)
    """site -> EVSEs with a current reading."""
    unsited: set[EvseId] = field(default_factory=set)
    """Readings of stations whose site was not known at intake (resolved by the next pass)."""
    dirty: dict[str, set[EvseId]] = field(default_factory=dict)
    pending: dict[str, set[EvseId]] = field(default_factory=dict)
    stale: dict[str, set[EvseId]] = field(default_factory=dict)
    probe_at: dict[str, tuple[frozenset[EvseId], float]] = field(default_factory=dict)
    """site -> (its refusing EVSEs when last read, their earliest retry time): read again only when
    that set changes or a retry falls due (`safety.tick` probes them then)."""

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
        self.unsited.discard(evse)
        site_id = self.site_of.get(evse)
        if site_id is not None:
            for group in (self.members, self.dirty, self.stale):
                group.get(site_id, set()).discard(evse)

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
