"""Thin async reader over the documented Redis keys (docs/redis-schema.md) for the API,
the live feed, metrics and MQTT. Reads only; views are built by `csms.api.views`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from csms.api import views
from evfleet.clock import Clock
from evfleet.keys import Keys, tx_ref
from evfleet.store.shards import active_refs, active_refs_of, is_active, refs_by_start
from evfleet.store.sites import hash_fields, positive_kw, site_station_ids
from evfleet.store.sites import station_sites as store_station_sites
from evfleet.store.stream import read_new_events, stream_tail_id

# the event-stream tail reader lives in evfleet.store.stream; re-exported for the API modules
__all__ = ["StateReader", "read_new_events", "s", "sdict", "stream_tail_id"]

log = logging.getLogger(__name__)


def s(value: Any) -> str:
    """A Redis reply value as str (clients may or may not decode responses)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def sdict(raw: Any) -> dict[str, str]:
    """A Redis hash reply as dict[str, str]."""
    return {s(k): s(v) for k, v in (raw or {}).items()}


class StateReader:
    """Reads stations, sessions, transactions and sites from Redis."""

    def __init__(self, redis: Any, keys: Keys, clock: Clock, default_site: str = "default",
                 default_limit_kw: float | None = None, site_cache_s: float = 5.0) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.default_site = default_site
        self.default_limit_kw = default_limit_kw
        self.site_cache_s = site_cache_s
        self._site_of: dict[str, str] = {}
        self._site_of_at = float("-inf")
        self._plans: dict[str, tuple[str, Any]] = {}  # `_plan`: site -> (plan text, parsed)

    # --- stations -----------------------------------------------------------------------
    async def station_ids(self) -> list[str]:
        """Provisioned station ids, sorted."""
        return sorted(s(m) for m in await self.redis.smembers(self.keys.stations()))

    async def station_exists(self, station_id: str) -> bool:
        """True if the station is provisioned or has state."""
        if await self.redis.sismember(self.keys.stations(), station_id):
            return True
        return bool(await self.redis.exists(self.keys.station(station_id)))

    async def stations(self, station_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Station documents (pipelined: 3 round trips whatever the count)."""
        ids = list(station_ids)
        pipe = self.redis.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self.keys.station(sid))
            pipe.hgetall(self.keys.station_connectors(sid))
        replies = await pipe.execute()
        raws = [sdict(r) for r in replies[0::2]]
        connectors = [views.connectors_view(sdict(r)) for r in replies[1::2]]
        pipe = self.redis.pipeline(transaction=False)
        wanted: list[tuple[int, int]] = []
        for i, (sid, conns) in enumerate(zip(ids, connectors, strict=True)):
            for eid in conns:
                wanted.append((i, eid))
                pipe.hgetall(self.keys.station_evse(sid, eid))
        evse_raws = [sdict(r) for r in await pipe.execute()] if wanted else []
        per_station: list[list[dict[str, Any]]] = [[] for _ in ids]
        for (i, eid), raw in zip(wanted, evse_raws, strict=True):
            per_station[i].append(views.evse_view(eid, raw, connectors[i][eid]))
        tx_ids = [e["tx_ref"] for evses in per_station for e in evses if e["tx_ref"]]
        powers = await self._tx_power_w(tx_ids)
        for evses in per_station:
            for e in evses:
                p = powers.get(e["tx_ref"] or "")
                e["power_kw"] = None if p is None else round(p / 1000.0, 4)
        return [views.station_view(sid, raw, evses, self.default_site)
                for sid, raw, evses in zip(ids, raws, per_station, strict=True)]

    async def station(self, station_id: str) -> dict[str, Any] | None:
        """One station document, None if unknown."""
        if not await self.station_exists(station_id):
            return None
        return (await self.stations([station_id]))[0]

    async def _tx_power_w(self, tx_ids: list[str]) -> dict[str, float]:
        """power_w of each transaction that has one."""
        if not tx_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for tx in tx_ids:
            pipe.hget(self.keys.transaction(tx), "power_w")
        out = {}
        for tx, value in zip(tx_ids, await pipe.execute(), strict=True):
            power = views.to_float(s(value))
            if power is not None:
                out[tx] = power
        return out

    async def station_sites(self, station_ids: list[str]) -> dict[str, str]:
        """site_id of each station (the default site when unset)."""
        if not station_ids:
            return {}
        # one Lua read per 2,000 stations of a slot (`evfleet.store.sites.station_sites`), not one
        # pipelined HGET each: redis-py's packing and parsing of 5,000 HGETs were a third of `sites()`
        sites = await store_station_sites(self.redis, self.keys, station_ids)
        return {sid: s(v) or self.default_site for sid, v in zip(station_ids, sites, strict=True)}

    async def all_station_sites(self) -> dict[str, str]:
        """site_id of every provisioned station, cached for `site_cache_s` (sites rarely move)."""
        now = asyncio.get_running_loop().time()
        if now - self._site_of_at > self.site_cache_s:
            self._site_of = await self.station_sites(await self.station_ids())
            self._site_of_at = now
        return self._site_of

    # --- sessions and transactions (by tx_ref: station, transactionId, generation) --------
    async def active_tx_ids(self) -> set[str]:
        """Refs of the transactions not yet Ended."""
        return set(await active_refs(self.redis, self.keys))

    async def all_tx_ids(self) -> list[str]:
        """Every transaction ref, newest start first."""
        return [ref for ref, _ in reversed(await refs_by_start(self.redis, self.keys))]

    async def tx_exists(self, ref: str) -> bool:
        """True if the transaction hash exists."""
        return bool(await self.redis.exists(self.keys.transaction(ref)))

    async def latest_generation(self, station_id: str, transaction_id: str) -> int:
        """The latest generation of a station's transactionId (1 unless the station reused it)."""
        raw = s(await self.redis.hget(self.keys.transaction_generations(station_id), transaction_id))
        return int(raw) if raw.isdigit() else 1

    async def resolve_tx(self, station_id: str, transaction_id: str,
                         generation: int | None = None) -> str | None:
        """The ref of a station's transaction (its latest generation by default); None if unknown."""
        latest = await self.latest_generation(station_id, transaction_id)
        if generation is not None and generation > latest:
            return None
        ref = tx_ref(station_id, transaction_id, generation or latest)
        return ref if await self.tx_exists(ref) else None

    async def sessions(self, tx_ids: list[str], active: set[str] | None = None) -> list[dict[str, Any]]:
        """Session documents for those transactions (needs, plan and profile for live ones)."""
        if not tx_ids:
            return []
        active = await self.active_tx_ids() if active is None else active
        pipe = self.redis.pipeline(transaction=False)
        for tx in tx_ids:
            pipe.hgetall(self.keys.transaction(tx))
        txs = [sdict(r) for r in await pipe.execute()]
        # the sites of these sessions' stations only, not of the fleet (`all_station_sites`)
        sites = await self.station_sites(sorted({t["station_id"] for t in txs if t.get("station_id")}))
        pipe = self.redis.pipeline(transaction=False)
        has_evse = []
        for t in txs:
            sid, eid = t.get("station_id", ""), views.to_int(t.get("evse_id"))
            has_evse.append(bool(sid) and eid is not None)
            if sid and eid is not None:
                pipe.get(self.keys.charging_needs(sid, eid))
                pipe.get(self.keys.planned_schedule(sid, eid))
                pipe.get(self.keys.applied_profile(sid, eid))
                pipe.get(self.keys.ev_schedule(sid, eid))
        extra = iter(await pipe.execute() if any(has_evse) else [])
        pipe = self.redis.pipeline(transaction=False)  # K15-K17 loop record (csms/smart_charging)
        for tx in tx_ids:
            pipe.hgetall(self.keys.session_loop(tx))
        loops = [sdict(r) for r in await pipe.execute()]
        out = []
        for tx, t, with_docs, loop in zip(tx_ids, txs, has_evse, loops, strict=True):
            docs = [views.load_json(next(extra)) for _ in range(4)] if with_docs else [None] * 4
            site = sites.get(t.get("station_id", ""), self.default_site)
            out.append(views.session_view(tx, t, tx in active, site, *docs) | {"loop": views.loop_view(loop)})
        return out

    async def session_meter(self, ref: str, limit: int = 500) -> list[dict[str, Any]]:
        """The latest `limit` meter samples of a transaction, oldest first."""
        raw = await self.redis.lrange(self.keys.transaction_meter(ref), -limit, -1)
        return [d for d in (views.load_json(s(x)) for x in raw) if isinstance(d, dict)]

    async def transaction(self, ref: str) -> dict[str, Any] | None:
        """The raw stored transaction: hash fields, stored TransactionEvents, and how many
        generations its transactionId has at its station."""
        raw = sdict(await self.redis.hgetall(self.keys.transaction(ref)))
        if not raw:
            return None
        events = await self.redis.lrange(self.keys.transaction_events(ref), 0, -1)
        ident = views.tx_identity(ref, raw)
        generations = await self.latest_generation(ident["station_id"], ident["transaction_id"])
        live = await is_active(self.redis, self.keys, ref)
        return {**ident, "generations": generations, "record": raw, "live": live,
                "events": [views.load_json(s(e)) for e in events]}

    async def transactions(self, tx_ids: list[str]) -> list[dict[str, Any]]:
        """Transaction records (hash fields) for a page of refs."""
        pipe = self.redis.pipeline(transaction=False)
        for tx in tx_ids:
            pipe.hgetall(self.keys.transaction(tx))
        active = await self.active_tx_ids()
        rows = [(tx, sdict(r)) for tx, r in zip(tx_ids, await pipe.execute(), strict=True)]
        return [{**views.tx_identity(tx, r), "live": tx in active, "record": r} for tx, r in rows]

    # --- sites --------------------------------------------------------------------------
    async def site_ids(self) -> list[str]:
        """Known sites (the SET plus the default site), sorted."""
        ids = {s(m) for m in await self.redis.smembers(self.keys.sites())}
        ids.add(self.default_site)
        return sorted(ids)

    async def site_loads(self, site_of: dict[str, str] | None = None) -> dict[str, tuple[float, int]]:
        """Per site: (sum of live session power in kW, number of live sessions). The sessions'
        station and power are read by one script per 2,000 (`evfleet.store.sites.hash_fields`) and
        summed chunk by chunk, no row kept per session (issue 14: 20,000 pipelined HMGETs and their
        rows were the longest callback of the node holding the site-power lease, and enough new
        containers to start a young collection); a station missing from `site_of` is looked up."""
        active = sorted(await self.active_tx_ids())
        known = site_of or {}
        kw: dict[str, float] = {}
        count: dict[str, int] = {}
        unknown: list[tuple[str, float]] = []  # stations `site_of` does not know (rare): looked up after
        tx_keys = [self.keys.transaction(tx) for tx in active]
        async for _, values in hash_fields(self.redis, tx_keys, ("station_id", "power_w")):
            for i in range(0, len(values), 2):
                sid, power_w = s(values[i]), views.to_float(s(values[i + 1])) or 0.0
                site = known.get(sid) if sid else self.default_site
                if site is None:
                    unknown.append((sid, power_w))
                    continue
                kw[site] = kw.get(site, 0.0) + power_w / 1000.0
                count[site] = count.get(site, 0) + 1
        looked_up = await self.station_sites(sorted({sid for sid, _ in unknown}))
        for sid, power_w in unknown:
            site = looked_up.get(sid, self.default_site)
            kw[site] = kw.get(site, 0.0) + power_w / 1000.0
            count[site] = count.get(site, 0) + 1
        return {site: (kw[site], count[site]) for site in kw}

    async def own_counts_and_loads(self, site_ids: list[str]) -> tuple[dict[str, int],
                                                                       dict[str, tuple[float, int]]]:
        """Per site: its number of stations and (live session power in kW, live sessions), read from
        its own station index and its stations' active sets (`evfleet.store.active_index`), not by a
        scan of the fleet: what `sites` of a few sites needs."""
        k = self.keys
        counts: dict[str, int] = {}
        loads: dict[str, tuple[float, int]] = {}
        for site in dict.fromkeys(site_ids):
            stations = await self.site_station_ids(site)
            counts[site] = len(stations)
            refs = await active_refs_of(self.redis, k, stations)
            total_w = 0.0
            async for _, values in hash_fields(self.redis, [k.transaction(tx) for tx in refs], ("power_w",)):
                total_w += sum(views.to_float(s(w)) or 0.0 for w in values)
            loads[site] = (total_w / 1000.0, len(refs))
        return counts, loads

    async def site_station_ids(self, site_id: str) -> list[str]:
        """Stations on a site, as the csms budget and the optimizer count them (its index,
        `evfleet.store.sites.site_station_ids`)."""
        return await site_station_ids(self.redis, self.keys, site_id, self.default_site)

    async def sites(self, site_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Site documents: limit, current load, planned load now, optimizer status, prices."""
        ids = await self.site_ids() if site_ids is None else site_ids
        if site_ids is None:  # every site: one scan of the fleet (cached) and its live sessions
            site_of = await self.all_station_sites()
            loads = await self.site_loads(site_of)
            counts: dict[str, int] = {}
            for site in site_of.values():
                counts[site] = counts.get(site, 0) + 1
        else:
            counts, loads = await self.own_counts_and_loads(ids)
        pipe = self.redis.pipeline(transaction=False)
        for site in ids:
            pipe.hgetall(self.keys.site(site))
            pipe.get(self.keys.site_plan(site))
            pipe.get(self.keys.site_prices(site))
        pipe.hget(self.keys.site_defaults(), "site_limit_kw")
        replies = await pipe.execute()
        # the default every reader plans and budgets with (evfleet.store.sites), else this node's
        default_kw = positive_kw(replies[-1]) or self.default_limit_kw
        now_ts = self.clock.timestamp()
        out = []
        for i, site in enumerate(ids):
            raw, plan, prices = sdict(replies[3 * i]), replies[3 * i + 1], replies[3 * i + 2]
            kw, n = loads.get(site, (0.0, 0))
            out.append(views.site_view(site, raw, kw, n, counts.get(site, 0), self._plan(site, plan),
                                       views.load_json(prices), now_ts, default_kw))
        return out

    def _plan(self, site_id: str, raw: Any) -> Any:
        """The site's plan document as parsed the last time the same text was read (it is read every
        time; a plan changes once per re-plan, and parsing every site's at every `sites()`, for
        /metrics and the power history, was a third of it). Views only read it, never change it."""
        text = s(raw)
        hit = self._plans.get(site_id)
        if hit is not None and hit[0] == text:
            return hit[1]
        doc = views.load_json(text or None)
        self._plans[site_id] = (text, doc)
        return doc

    async def site_exists(self, site_id: str) -> bool:
        """True for the default site, a site in the SET, or one with a hash."""
        if site_id == self.default_site:
            return True
        if await self.redis.sismember(self.keys.sites(), site_id):
            return True
        return bool(await self.redis.exists(self.keys.site(site_id)))

    async def site_plan(self, site_id: str) -> Any:
        """The optimizer's latest site plan document, or None."""
        return views.load_json(await self.redis.get(self.keys.site_plan(site_id)))

    # --- id tokens ----------------------------------------------------------------------
    async def id_tokens(self) -> list[str]:
        """Known id tokens, sorted."""
        return sorted(s(m) for m in await self.redis.smembers(self.keys.id_tokens()))

    async def id_token_docs(self, tokens: list[str]) -> list[dict[str, Any]]:
        """{id_token, type, status, group_id} for each token."""
        pipe = self.redis.pipeline(transaction=False)
        for t in tokens:
            pipe.hgetall(self.keys.id_token(t))
        out = []
        for t, raw in zip(tokens, await pipe.execute(), strict=True):
            fields = sdict(raw)
            out.append({"id_token": t, "type": fields.get("type") or None,
                        "status": fields.get("status") or None, "group_id": fields.get("group_id") or None})
        return out
