"""`StateStore` (evfleet.store.port) in dicts: the store the services' unit tests run against.

Holds the same facts as the Redis keys (docs/redis-schema.md) in plain attributes that a test
fills and inspects (`stations`, `evses`, `profiles`, `sessions`, `events`, ...). No sockets, no
event loop tricks: `read_events` returns what `append_event`/`write` added after the given id
(it does not block). Leases have no expiry clock of their own: `hold_lease` takes a free one or
renews the caller's, as in Redis; `leases` may be edited to hand a site to another node.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evfleet.events import Event
from evfleet.records import EVSE_DECODED_FIELDS
from evfleet.store.port import EvseId, StoredEvse, StoreWrite
from evfleet.store.sites import own_limit_kw, positive_kw

if TYPE_CHECKING:
    from evfleet.store.lag import StreamLag


@dataclass
class InMemoryStateStore:
    """A `StateStore` in memory (see module doc)."""

    sites: dict[str, dict[str, str]] = field(default_factory=dict)
    """site id -> site hash (`limit_kw`, `over_limit`, ...); keys are the operator-created sites."""
    site_defaults: dict[str, str] = field(default_factory=dict)
    """The published deployment defaults (`site_limit_kw`, `site_margin_kw`), as `Keys.site_defaults`."""
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    stations: dict[str, dict[str, str]] = field(default_factory=dict)
    """station id -> station hash (`online`, `site_id`)."""
    evses: dict[EvseId, dict[str, str]] = field(default_factory=dict)
    """(station, EVSE) -> EVSE hash; every key is an EVSE of its station."""
    profiles: dict[EvseId, dict[str, Any]] = field(default_factory=dict)
    needs: dict[EvseId, dict[str, Any]] = field(default_factory=dict)
    ev_schedules: dict[EvseId, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)
    """tx_ref -> loop counters (`tx:{ref}:loop`), values as str like Redis."""
    events: list[dict[str, str]] = field(default_factory=list)
    leases: dict[str, str] = field(default_factory=dict)
    alive: dict[str, str] = field(default_factory=dict)
    """node id -> liveness token (`Keys.node_alive`)."""
    writes: int = 0
    """Number of `write` calls (each one is atomic)."""

    # --- helpers for tests ---------------------------------------------------------------
    def add_evse(self, station_id: str, evse_id: int, site_id: str = "", online: bool = True,
                 **fields: str) -> None:
        """A station (if new) with one EVSE; `fields` go into the EVSE hash."""
        station = self.stations.setdefault(station_id, {})
        station["online"] = "1" if online else "0"
        if site_id:
            station["site_id"] = site_id
        self.evses.setdefault((station_id, evse_id), {}).update(fields)

    def typed_events(self) -> list[Event]:
        """Every appended event, decoded."""
        return [Event.from_fields(f) for f in self.events]

    # --- StateStore ------------------------------------------------------------------------
    async def hold_lease(self, site_id: str, node_id: str, ttl_ms: int,
                         seen: dict[str, str] | None = None) -> bool:
        """Take a free lease or keep our own."""
        return bool(await self.hold_leases([site_id], node_id, ttl_ms, seen))

    async def hold_leases(self, site_ids: Sequence[str], node_id: str, ttl_ms: int,
                          seen: dict[str, str] | None = None) -> set[str]:
        """`hold_lease` of each site."""
        held = set()
        for s in site_ids:
            owner = self.leases.setdefault(s, node_id)
            if owner == node_id:
                held.add(s)
            elif seen is not None:
                seen[s] = owner
        return held

    async def steal_leases(self, leases: Mapping[str, str], node_id: str, ttl_ms: int) -> set[str]:
        """Take each lease still held by the holder it was seen with."""
        taken = {s for s, old in leases.items() if self.leases.get(s) == old}
        self.leases.update(dict.fromkeys(taken, node_id))
        return taken

    async def announce_alive(self, node_id: str, token: str, ttl_ms: int) -> None:
        """`alive[node_id] = token` (no expiry clock: a test deletes it to let it lapse)."""
        self.alive[node_id] = token

    async def refresh_alive(self, node_id: str, token: str, ttl_ms: int) -> bool:
        """True while `alive[node_id]` is still `token`."""
        return self.alive.get(node_id) == token

    async def alive_tokens(self, node_ids: Sequence[str]) -> dict[str, str]:
        """`alive` of those nodes."""
        return {n: self.alive[n] for n in node_ids if n in self.alive}

    async def live_nodes(self) -> dict[str, str]:
        """`alive` (every node in it announced itself)."""
        return dict(self.alive)

    async def lease_holders(self, site_ids: Sequence[str]) -> dict[str, str]:
        """`leases` of those sites ("" if none)."""
        return {s: self.leases.get(s, "") for s in site_ids}

    async def release_lease(self, site_id: str, node_id: str) -> None:
        """Drop the lease if `node_id` holds it."""
        if self.leases.get(site_id) == node_id:
            del self.leases[site_id]

    async def events_tail(self) -> str:
        """Ids are "<index>-0" (index of the newest event, "0-0" if none)."""
        return f"{len(self.events)}-0"

    async def read_events(self, last_id: str, count: int, block_ms: int,
                          skip: Callable[[Mapping[str, str]], bool] | None = None,
                          lag: StreamLag | None = None) -> tuple[str, list[Event]]:
        """Events after `last_id` (no blocking); entries `skip` rejects are passed over unparsed.
        The ids here are indexes, not times: `lag` sees each read as at the stream's end."""
        start = int(last_id.split("-", 1)[0])
        new = self.events[start:start + count]
        if lag is not None:
            lag.answered(None, None, len(new))
        return f"{start + len(new)}-0", [Event.from_fields(f) for f in new if skip is None or not skip(f)]

    async def site_ids(self) -> set[str]:
        """Sites with a hash."""
        return set(self.sites)

    async def station_site(self, station_id: str) -> str:
        """`site_id` of the station hash."""
        return self.stations.get(station_id, {}).get("site_id", "")

    async def site_limit_kw(self, site_id: str) -> str | None:
        """The site's own `limit_kw`, else the published default (as the Redis adapter reads them)."""
        kw = own_limit_kw(self.sites.get(site_id, {}).get("limit_kw"))
        kw = positive_kw(self.site_defaults.get("site_limit_kw")) if kw is None else kw
        return None if kw is None else repr(kw)

    async def site_margin_kw(self) -> str | None:
        """The published `site_margin_kw` (as the Redis adapter reads it)."""
        return self.site_defaults.get("site_margin_kw")

    async def site_plan(self, site_id: str) -> dict[str, Any] | None:
        """The stored plan (a copy)."""
        plan = self.plans.get(site_id)
        return copy.deepcopy(plan) if plan is not None else None

    async def site_evses(self, site_id: str, default_site: str) -> list[StoredEvse]:
        """EVSEs of the stations whose `site_id` (or the default) is the site."""
        keys = sorted(k for k in self.evses if k[1] > 0
                      and (self.stations.get(k[0], {}).get("site_id") or default_site) == site_id)
        return await self.evse_records(keys)

    async def evse_records(self, evses: Sequence[EvseId]) -> list[StoredEvse]:
        """Copies of the stored facts of each EVSE (of its hash, the decoded fields only, as the Redis
        adapter reads them)."""
        return [StoredEvse(sid, eid, dict(self.stations.get(sid, {})),
                           {f: v for f, v in self.evses.get((sid, eid), {}).items()
                            if f in EVSE_DECODED_FIELDS},
                           copy.deepcopy(self.profiles.get((sid, eid))),
                           copy.deepcopy(self.needs.get((sid, eid)))) for sid, eid in evses]

    async def applied_profile(self, evse: EvseId) -> dict[str, Any] | None:
        """A copy of the applied-profile record."""
        return copy.deepcopy(self.profiles.get(evse))

    async def ev_schedule(self, evse: EvseId) -> dict[str, Any] | None:
        """A copy of the EV's schedule record."""
        return copy.deepcopy(self.ev_schedules.get(evse))

    async def session_fields(self, tx_ref: str, names: Sequence[str]) -> list[str | None]:
        """Fields of the session's loop counters."""
        loop = self.sessions.get(tx_ref, {})
        return [loop.get(n) for n in names]

    async def write(self, batch: StoreWrite) -> None:
        """Apply every part (nothing awaits in between, so it is atomic for the event loop)."""
        self.writes += 1
        for evse, record in batch.profiles.items():
            self.profiles[evse] = copy.deepcopy(record)
        for evse, mapping in batch.evse_fields.items():
            self.evses.setdefault(evse, {}).update(mapping)
        for evse, names in batch.evse_deleted.items():
            for name in names:
                self.evses.get(evse, {}).pop(name, None)
        for ref, counters in batch.session_incr.items():
            loop = self.sessions.setdefault(ref, {})
            for name, by in counters.items():
                loop[name] = str(int(loop.get(name, "0")) + by)
        for ref, mapping in batch.session_fields.items():
            self.sessions.setdefault(ref, {}).update(mapping)
        for evse, record in batch.ev_schedules.items():
            self.ev_schedules[evse] = copy.deepcopy(record)
        for site_id, mapping in batch.site_fields.items():
            self.sites.setdefault(site_id, {}).update(mapping)
        self.events.extend(dict(f) for f in batch.events)

