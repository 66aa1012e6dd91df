"""The store port of the smart-charging service: what it reads and writes, nothing about how.

`StateStore` is the protocol; `csms.store.port_redis.RedisStateStore` implements it on the
documented Redis keys (docs/redis-schema.md) and `evfleet.store.memory.InMemoryStateStore` in
dicts, for unit tests of the service without sockets. Both sides live where every package may
import them (the shared contract); the Redis adapter of the csms's writes stays in `csms.store`.
The optimizer reads a site through `optimizer.site_reader` (Redis -> `SiteState`), so its
snapshot (`optimizer.snapshot`) stays pure. Values cross the port as Redis stores
them (hash fields as str, JSON documents as dicts); the service decodes them in one place
(`csms.smart_charging.evse.decode_evse`).

Every write of one decision goes through `StateStore.write(StoreWrite)` and is applied
atomically (one MULTI/EXEC in Redis), so a reader never sees an answer recorded on the profile
but not on the EVSE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from evfleet.events import Event

if TYPE_CHECKING:
    from evfleet.store.lag import StreamLag

EvseId = tuple[str, int]
"""(station id, EVSE id)."""


@dataclass(frozen=True)
class StoredEvse:
    """What the store holds about one EVSE (undecoded)."""

    station_id: str
    evse_id: int
    station: Mapping[str, str]
    """The station hash, at least `online` (the one field the service decodes; the Redis adapter
    reads only that one)."""
    evse: Mapping[str, str]
    """The EVSE hash's fields the service decodes (`evfleet.records.EVSE_DECODED_FIELDS`: `steerable`,
    `max_power_w`, `tx_ref`, `default_limit_w`, ...); the others are not read."""
    profile: dict[str, Any] | None
    """The applied-profile record (`profile:{sid}:{eid}`), None if none."""
    needs: dict[str, Any] | None
    """The EV's last charging needs on the EVSE, None if none."""


@dataclass
class StoreWrite:
    """Writes applied together, atomically (`StateStore.write`); empty parts are skipped."""

    profiles: dict[EvseId, dict[str, Any]] = field(default_factory=dict)
    """Applied-profile records to store (replaces the record)."""
    evse_fields: dict[EvseId, dict[str, str]] = field(default_factory=dict)
    evse_deleted: dict[EvseId, list[str]] = field(default_factory=dict)
    session_incr: dict[str, dict[str, int]] = field(default_factory=dict)
    """tx_ref -> counters of `tx:{ref}:loop` to increment."""
    session_fields: dict[str, dict[str, str]] = field(default_factory=dict)
    ev_schedules: dict[EvseId, dict[str, Any]] = field(default_factory=dict)
    site_fields: dict[str, dict[str, str]] = field(default_factory=dict)
    events: list[dict[str, str]] = field(default_factory=list)
    """Event stream fields (`evfleet.events.event_fields`), appended in order."""

    def incr(self, tx_ref: str, name: str, by: int = 1) -> None:
        """Add `by` to one session counter."""
        counters = self.session_incr.setdefault(tx_ref, {})
        counters[name] = counters.get(name, 0) + by

    def __bool__(self) -> bool:
        return any((self.profiles, self.evse_fields, self.evse_deleted, self.session_incr,
                    self.session_fields, self.ev_schedules, self.site_fields, self.events))


class StateStore(Protocol):
    """Reads and writes of the smart-charging service (one site's view of the shared state)."""

    # --- leases (one node acts for a site) -------------------------------------------
    async def hold_lease(self, site_id: str, node_id: str, ttl_ms: int,
                         seen: dict[str, str] | None = None) -> bool:
        """Take the site's lease if free, or renew it if `node_id` (the holder's token) holds it;
        True if it does. A lease another holder has is recorded in `seen` (site -> holder)."""
        ...

    async def release_lease(self, site_id: str, node_id: str) -> None:
        """Give the lease up if `node_id` holds it."""
        ...

    async def hold_leases(self, site_ids: Sequence[str], node_id: str, ttl_ms: int,
                          seen: dict[str, str] | None = None) -> set[str]:
        """`hold_lease` for many sites at once (a few round trips, whatever their number); returns
        the sites `node_id` holds."""
        ...

    async def steal_leases(self, leases: Mapping[str, str], node_id: str, ttl_ms: int) -> set[str]:
        """Take each site's lease (site -> the holder it was seen with) only if that holder still
        has it (compare-and-set on the one lease key); returns the sites taken."""
        ...

    # --- node liveness (csms.smart_charging.leases) ------------------------------------
    async def announce_alive(self, node_id: str, token: str, ttl_ms: int) -> None:
        """Set the node's liveness key to `token` for `ttl_ms`, and list the node as announced."""
        ...

    async def refresh_alive(self, node_id: str, token: str, ttl_ms: int) -> bool:
        """Extend the node's liveness key by `ttl_ms` only if it still holds `token` (it never
        comes back once expired); False if it lapsed."""
        ...

    async def alive_tokens(self, node_ids: Sequence[str]) -> dict[str, str]:
        """The liveness token of each node that has one."""
        ...

    async def live_nodes(self) -> dict[str, str]:
        """Every announced node whose liveness key is there: node id -> its token (the others
        are dropped from the list of announced nodes)."""
        ...

    async def lease_holders(self, site_ids: Sequence[str]) -> dict[str, str]:
        """The holder's token of each site's lease ("" if none)."""
        ...

    # --- events --------------------------------------------------------------------------
    async def events_tail(self) -> str:
        """Id of the newest event ("0-0" if none): where a reader starts without gaps."""
        ...

    async def read_events(self, last_id: str, count: int, block_ms: int,
                          skip: Callable[[Mapping[str, str]], bool] | None = None,
                          lag: StreamLag | None = None) -> tuple[str, list[Event]]:
        """Events after `last_id` (waiting up to `block_ms`), and the new last id; an entry for
        whose raw string fields `skip` returns True is passed over without being parsed. `lag`
        is told when the read starts and which entry ids it returned (`evfleet.store.lag`)."""
        ...

    # --- reads ---------------------------------------------------------------------------
    async def site_ids(self) -> set[str]:
        """Sites created by operators (the default site is the caller's to add)."""
        ...

    async def station_site(self, station_id: str) -> str:
        """The station's `site_id` ("" if none)."""
        ...

    async def site_limit_kw(self, site_id: str) -> str | None:
        """The limit in force (kW): the site's own `limit_kw`, else the `default_site_limit_kw` a csms
        node published (`evfleet.store.sites`); None if neither."""
        ...

    async def site_margin_kw(self) -> str | None:
        """The `site_margin_kw` a csms node published (`evfleet.store.sites`); None if none did."""
        ...

    async def site_plan(self, site_id: str) -> dict[str, Any] | None:
        """The optimizer's latest plan for the site."""
        ...

    async def site_evses(self, site_id: str, default_site: str) -> list[StoredEvse]:
        """Every EVSE of the site's stations (connectors reported or running a transaction)."""
        ...

    async def evse_records(self, evses: Sequence[EvseId]) -> list[StoredEvse]:
        """The records of a few EVSEs, in order."""
        ...

    async def applied_profile(self, evse: EvseId) -> dict[str, Any] | None:
        """The EVSE's applied-profile record."""
        ...

    async def ev_schedule(self, evse: EvseId) -> dict[str, Any] | None:
        """The EV's last charging schedule record on the EVSE (with our K17 verdict)."""
        ...

    async def session_fields(self, tx_ref: str, names: Sequence[str]) -> list[str | None]:
        """Fields of the session's loop counters (`tx:{ref}:loop`)."""
        ...

    # --- writes --------------------------------------------------------------------------
    async def write(self, batch: StoreWrite) -> None:
        """Apply every part of `batch` atomically."""
        ...
