"""Every Redis key and stream name evfleet uses (documented in docs/redis-schema.md).

All names start with a configurable prefix (default ``evfleet``). Build names only with
`Keys`; never spell a key by hand elsewhere.

Two layouts (docs/redis-schema.md, "Redis Cluster"):

- ``shards=0`` (default, one Redis server): the names as they have always been.
- ``shards=N`` (N >= 1, Redis Cluster): every station-, transaction- and site-scoped key, and the
  event stream and transaction indexes they are written with, carry the hash tag ``{sK}`` of
  their shard K (`shard_of_station`, `shard_of_site`), e.g. ``evfleet:{s3}:station:CP-1``. Each
  MULTI or Lua script of one station (or one site) then touches one slot. The event stream and
  ``tx:active`` / ``tx:by-start`` become one per shard (`event_streams`, `shard_keys`), read by
  merging the shards. Deployment-wide names (registries, nodes, leases, clock) carry no tag.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote, unquote


class TxRef(NamedTuple):
    """One stored transaction: OCPP makes `transaction_id` unique only within `station_id`, and a
    charger that restarts its counter reuses it, so a reused id gets the next `generation`."""

    station_id: str
    transaction_id: str
    generation: int = 1


def tx_ref(station_id: str, transaction_id: str, generation: int = 1) -> str:
    """The transaction's key inside evfleet: ``{station_id}:{transaction_id}`` with the id
    percent-encoded (so it holds no ``:``), plus ``:{generation}`` from the second generation on.

    Station ids never contain ``:`` (`csms.store.provisioning.STATION_ID_RE`), so the ref is
    unambiguous and `parse_tx_ref` inverts it.
    """
    ref = f"{station_id}:{quote(transaction_id, safe='')}"
    return ref if generation <= 1 else f"{ref}:{generation}"


def parse_tx_ref(ref: str) -> TxRef:
    """(station_id, transaction_id, generation) of a ref built by `tx_ref` (ValueError otherwise)."""
    parts = ref.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (
            len(parts) == 3 and not parts[2].isdigit()):
        raise ValueError(f"not a transaction ref: {ref!r}")
    return TxRef(parts[0], unquote(parts[1]), int(parts[2]) if len(parts) == 3 else 1)


def ref_station(ref: str) -> str:
    """The station id of a transaction ref built by `tx_ref` (its part before the first ``:``)."""
    return ref.split(":", 1)[0]


def shard_of(entity: str, shards: int) -> int:
    """The shard (0..shards-1) of `entity` (``st:{station_id}`` or ``site:{site_id}``): CRC-32,
    stable across processes and versions (changing it moves every key: a migration)."""
    return zlib.crc32(entity.encode()) % shards if shards > 0 else 0


@dataclass(frozen=True)
class Keys:
    """Key and stream names under one prefix; `shards` > 0 selects the Redis Cluster layout."""

    prefix: str = "evfleet"
    shards: int = 0

    # --- shards (Redis Cluster layout) -----------------------------------------------
    def shard_of_station(self, station_id: str) -> int:
        """The shard of every key of `station_id` (its transactions included)."""
        return shard_of(f"st:{station_id}", self.shards)

    def shard_of_site(self, site_id: str) -> int:
        """The shard of every key of `site_id`."""
        return shard_of(f"site:{site_id}", self.shards)

    def shard_prefix(self, shard: int) -> str:
        """The prefix of the keys of `shard`: ``{prefix}:{sK}`` (just the prefix unsharded)."""
        return f"{self.prefix}:{{s{shard}}}" if self.shards else self.prefix

    def _st(self, station_id: str) -> str:
        if not self.shards:
            return self.prefix
        return f"{self.prefix}:{{s{shard_of('st:' + station_id, self.shards)}}}"

    def _tx(self, ref: str) -> str:
        return self._st(ref_station(ref)) if self.shards else self.prefix

    def _site(self, site_id: str) -> str:
        if not self.shards:
            return self.prefix
        return f"{self.prefix}:{{s{shard_of('site:' + site_id, self.shards)}}}"

    def _g(self) -> str:
        """Registries (stations, sites, id and API tokens): one slot `{g}`, so a token's hash and its
        set change in one MULTI."""
        return f"{self.prefix}:{{g}}" if self.shards else self.prefix

    def shard_ids(self) -> range:
        """Every shard (one, 0, unsharded)."""
        return range(max(self.shards, 1))

    # --- stations -------------------------------------------------------------------
    def stations(self) -> str:
        """SET of provisioned station ids."""
        return f"{self._g()}:stations"

    def station(self, station_id: str) -> str:
        """HASH: station facts (vendor, model, firmware, site_id, online, node, last_seen...)."""
        return f"{self._st(station_id)}:station:{station_id}"

    def station_site_lock(self, station_id: str) -> str:
        """STRING (token, PX 30 s): held while the station's site changes on a Redis Cluster
        (`evfleet.store.site_index`), so changes of one station's site never interleave."""
        return f"{self._st(station_id)}:station:{station_id}:site-lock"

    def station_credentials(self, station_id: str) -> str:
        """HASH: password hash (scheme, salt, hash) and security profile; never served by the API."""
        return f"{self._st(station_id)}:station:{station_id}:cred"

    def station_connectors(self, station_id: str) -> str:
        """HASH: field ``{evse_id}/{connector_id}`` -> JSON {status, updated_at}."""
        return f"{self._st(station_id)}:station:{station_id}:connectors"

    def station_evse(self, station_id: str, evse_id: int) -> str:
        """HASH: per-EVSE state (active tx ref and id, max_power_w, phases, rate_unit, last applied limit)."""
        return f"{self._st(station_id)}:station:{station_id}:evse:{evse_id}"

    def station_tx_counter(self, station_id: str) -> str:
        """STRING counter: the last OCPP 1.6 transactionId the csms assigned to the station (INCR)."""
        return f"{self._st(station_id)}:station:{station_id}:tx-counter"

    def station_tx_start(self, station_id: str, digest: str) -> str:
        """STRING (TTL): the transactionId given to one OCPP 1.6 StartTransaction (replays get it again)."""
        return f"{self._st(station_id)}:station:{station_id}:tx-start:{digest}"

    def station_quota(self, station_id: str, hour: int) -> str:
        """STRING counter: station-generated events stored in POSIX hour `hour` (expires after 2 h)."""
        return f"{self._st(station_id)}:station:{station_id}:quota:{hour}"

    def station_violations(self, station_id: str) -> str:
        """HASH: action -> count of schema violations accepted in compatibility mode."""
        return f"{self._st(station_id)}:station:{station_id}:violations"

    # --- transactions (keyed by `tx_ref`: station, transactionId, generation) ----------
    def transaction(self, ref: str) -> str:
        """HASH: transaction state (station_id, transaction_id, generation, evse_id, energy_wh, ...)."""
        return f"{self._tx(ref)}:tx:{ref}"

    def transaction_seqnos(self, ref: str) -> str:
        """SET of ``{seqNo}:{eventType}`` already stored (replay idempotency)."""
        return f"{self._tx(ref)}:tx:{ref}:seqnos"

    def transaction_events(self, ref: str) -> str:
        """LIST of the stored TransactionEvent payloads (JSON), in arrival order."""
        return f"{self._tx(ref)}:tx:{ref}:events"

    def transaction_meter(self, ref: str) -> str:
        """LIST of meter samples JSON {ts, energy_wh, power_w, current_a, soc}."""
        return f"{self._tx(ref)}:tx:{ref}:meter"

    def transactions_active(self, shard: int = 0) -> str:
        """SET of transaction refs not yet Ended (of one shard's stations; `active_for`)."""
        return f"{self.shard_prefix(shard)}:tx:active"

    def transactions_by_start(self, shard: int = 0) -> str:
        """ZSET transaction ref scored by start POSIX time (all transactions of one shard)."""
        return f"{self.shard_prefix(shard)}:tx:by-start"

    def active_for(self, station_id: str) -> str:
        """The `transactions_active` set that holds `station_id`'s transactions."""
        return f"{self._st(station_id)}:tx:active"

    def by_start_for(self, station_id: str) -> str:
        """The `transactions_by_start` zset that holds `station_id`'s transactions."""
        return f"{self._st(station_id)}:tx:by-start"

    def shard_keys(self, name: str) -> list[str]:
        """One per-shard key (`transactions_active`, `transactions_by_start` or `events`) of every shard."""
        return [getattr(self, name)(shard) for shard in self.shard_ids()]

    def station_active(self, station_id: str) -> str:
        """SET: the station's members of `active_for(station_id)` (its transactions not yet Ended),
        written by the same scripts in the same slot, so a site's read takes its stations' sets
        (`evfleet.store.shards.active_refs_of`), not the fleet's `tx:active`
        (`evfleet.store.active_index`)."""
        return f"{self._st(station_id)}:station:{station_id}:tx-active"

    def transaction_generations(self, station_id: str) -> str:
        """HASH transactionId -> latest generation (only ids the station reused after an Ended)."""
        return f"{self._st(station_id)}:station:{station_id}:tx-generations"

    # --- ISO 15118 / smart charging ----------------------------------------------------
    def charging_needs(self, station_id: str, evse_id: int) -> str:
        """STRING JSON: the EV's latest NotifyEVChargingNeeds on that EVSE."""
        return f"{self._st(station_id)}:needs:{station_id}:{evse_id}"

    def ev_schedule(self, station_id: str, evse_id: int) -> str:
        """STRING JSON: the EV's latest own plan (NotifyEVChargingSchedule)."""
        return f"{self._st(station_id)}:ev-schedule:{station_id}:{evse_id}"

    def planned_schedule(self, station_id: str, evse_id: int) -> str:
        """STRING JSON: the optimizer's per-EVSE schedule for the running transaction."""
        return f"{self._st(station_id)}:schedule:{station_id}:{evse_id}"

    def applied_profile(self, station_id: str, evse_id: int) -> str:
        """STRING JSON: last charging profile sent, the station's answer and applied limit."""
        return f"{self._st(station_id)}:profile:{station_id}:{evse_id}"

    # --- authorization --------------------------------------------------------------
    def id_token(self, id_token: str) -> str:
        """HASH: {type, status, group_id} of a known id token."""
        return f"{self._g()}:idtoken:{id_token}"

    def id_tokens(self) -> str:
        """SET of known id tokens."""
        return f"{self._g()}:idtokens"

    # --- sites ----------------------------------------------------------------------
    def sites(self) -> str:
        """SET of site ids."""
        return f"{self._g()}:sites"

    def site(self, site_id: str) -> str:
        """HASH: {name, limit_kw, updated_at}."""
        return f"{self._site(site_id)}:site:{site_id}"

    def site_defaults(self) -> str:
        """HASH: the deployment's site defaults, published by every csms node at start-up from its
        settings: `site_limit_kw` (`default_site_limit_kw`, the limit of a site without one of its
        own), `updated_at`, `node`. The csms budget, the optimizer and the API read it
        (`evfleet.store.sites.site_limit`), so one value governs them all."""
        return f"{self.prefix}:site-defaults"

    def site_stations(self, site_id: str) -> str:
        """SET: the site's station index, every station whose hash names the site (an empty
        `site_id` names the default site), maybe plus stale members (`evfleet.store.site_index`)."""
        return f"{self._site(site_id)}:site:{site_id}:stations"

    def site_prices(self, site_id: str) -> str:
        """STRING JSON {start, step_minutes, import_price: [...], export_price: [...]}."""
        return f"{self._site(site_id)}:site:{site_id}:prices"

    def site_plan(self, site_id: str) -> str:
        """STRING JSON: the optimizer's latest site plan (planned load per step, strategy, status)."""
        return f"{self._site(site_id)}:site:{site_id}:plan"

    def site_power(self, site_id: str) -> str:
        """ZSET: site power samples scored by clock time, member `ts|power_kw|limit_kw|planned_kw`
        (csms/api/power_history.py; bounded by age and count)."""
        return f"{self._site(site_id)}:site:{site_id}:power"

    # --- operator tokens ------------------------------------------------------------
    def api_token(self, token_hash: str) -> str:
        """HASH: {name, role, created_at} of an API bearer token (key by SHA-256 of the token)."""
        return f"{self._g()}:api-token:{token_hash}"

    def api_tokens(self) -> str:
        """SET of API token hashes."""
        return f"{self._g()}:api-tokens"

    # --- streams, routing and clock -------------------------------------------------
    def events(self, shard: int = 0) -> str:
        """STREAM of typed state-change events (see evfleet/events.py), one per shard."""
        return f"{self.shard_prefix(shard)}:events"

    def event_streams(self) -> list[str]:
        """Every event stream (one unsharded); readers merge them (`evfleet.store.stream`)."""
        return self.shard_keys("events")

    def station_events(self, station_id: str) -> str:
        """The stream a station's writes append to (its shard's)."""
        return f"{self._st(station_id)}:events"

    def site_events(self, site_id: str) -> str:
        """The stream a site's writes append to (its shard's)."""
        return f"{self._site(site_id)}:events"

    def shard_of_event(self, station_id: str, site_id: str) -> int:
        """The shard an event belongs to: its station's, else its site's."""
        return self.shard_of_station(station_id) if station_id else self.shard_of_site(site_id)

    def node(self, node_id: str) -> str:
        """STRING with TTL: a live csms node's heartbeat."""
        return f"{self.prefix}:node:{node_id}"

    def node_alive(self, node_id: str) -> str:
        """STRING (PX a few s, refreshed several times a second): the node's smart-charging
        liveness token (csms.smart_charging.leases); its loss lets another node take the node's
        site leases before they expire."""
        return f"{self.prefix}:node:{node_id}:alive"

    def node_commands(self, node_id: str) -> str:
        """LIST: outbound-call requests for stations held by that node (LPUSH / BRPOP)."""
        return f"{self.prefix}:node:{node_id}:commands"

    def command_reply(self, request_id: str) -> str:
        """LIST: the single reply to an outbound-call request (short TTL)."""
        return f"{self.prefix}:reply:{request_id}"

    def clock(self) -> str:
        """HASH: the shared ClockSpec {sim_anchor, real_anchor, speed}."""
        return f"{self.prefix}:clock"

    # --- closed control loop (optimizer worker, smart-charging service) -----------------
    def energy_history(self, id_token: str) -> str:
        """LIST JSON {ended_at, weekday, energy_kwh} of a driver's past sessions (newest first, capped)."""
        return f"{self.prefix}:history:{id_token}"

    def session_loop(self, ref: str) -> str:
        """HASH: what the K15-K17 loop did for a session (needs, schedules sent, EV plan, renegotiations)."""
        return f"{self._tx(ref)}:tx:{ref}:loop"

    def optimizer_lease(self, site_id: str) -> str:
        """STRING (PX TTL): the optimizer worker currently solving a site."""
        return f"{self.prefix}:lease:optimizer:{site_id}"

    def optimizer_alive(self, consumer: str) -> str:
        """STRING (EX TTL): present while the optimizer worker `consumer` runs (its heartbeat)."""
        return f"{self.prefix}:optimizer:alive:{consumer}"

    def optimizer_rescue(self, consumer: str) -> str:
        """STRING (EX TTL): the worker that took over a dead worker's pending events and sites."""
        return f"{self.prefix}:optimizer:rescue:{consumer}"

    def service_lease(self, service: str) -> str:
        """STRING (PX TTL): the csms node that runs a once-per-deployment service (e.g. the MQTT bridge)."""
        return f"{self.prefix}:lease:service:{service}"

    def smart_charging_lease(self, site_id: str) -> str:
        """STRING (PX TTL): the csms node that applies a site's plans."""
        return f"{self.prefix}:lease:smart-charging:{site_id}"

    def smart_charging_nodes(self) -> str:
        """SET: ids of the csms nodes that announced a smart-charging liveness key (`node_alive`);
        those whose key is gone are removed by the next node that lists them (site-lease balancing,
        csms/smart_charging/balance.py)."""
        return f"{self.prefix}:smart-charging:nodes"
