"""`/api/v1` resources (viewer role) and writes of sites and id tokens (operator role); the actions
that call a station are in `csms.api.actions`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import AwareDatetime

from csms.api.deps import ApiDeps, deps_of, reject_unknown_query, require
from csms.api.errors import ACT_ERRORS, READ_ERRORS, Conflict, InvalidInput, NotFound
from csms.api.live import FEED_SKIP, event_summary
from csms.api.models import (
    EventPage,
    IdToken,
    Page,
    Session,
    SessionSummary,
    Site,
    SiteHistory,
    SitePrices,
    StationDetail,
    StationPage,
    TransactionDetail,
    Whoami,
)
from csms.api.power_history import CLOCK_INTERVAL_S
from csms.api.reader import s
from csms.api.schemas import IdTokenCreate, IdTokenIn
from csms.api.site_inputs import InvalidSiteId, PriceSeriesInput, SiteLimitInput, check_site_id
from csms.api.tokens import Role, TokenInfo
from csms.api.views import paginate, session_summary
from csms.store.provisioning import ProvisioningError
from evfleet.events import Event, EventType

read = APIRouter(prefix="/api/v1", responses=READ_ERRORS,
                dependencies=[Depends(require(Role.VIEWER)), Depends(reject_unknown_query)])
act = APIRouter(prefix="/api/v1", responses=ACT_ERRORS,
                dependencies=[Depends(require(Role.OPERATOR)), Depends(reject_unknown_query)])

StationIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,47}$",
                                    description="station id (letters, digits, `._-`, up to 48)")]
SiteIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
                                 description="site id (letters, digits, `_.-`, up to 64)")]
IdTokenPath = Annotated[str, Path(pattern=r"^[^\s:]{1,36}$", description="id token (1-36, no ':' or spaces)")]
TransactionIdPath = Annotated[str, Path(min_length=1, max_length=36, description="OCPP transactionId")]
Limit = Query(100, ge=1, le=1000, description="page size")
Offset = Query(0, ge=0, description="items to skip")
HISTORY_DEFAULT_S = 24 * 3600.0
StationStatus = Literal["Offline", "Faulted", "Charging", "Occupied", "Reserved", "Unavailable",
                        "Available", "Unknown"]


# --- identity -----------------------------------------------------------------------------
@read.get("/whoami", tags=["auth"], response_model=Whoami, summary="The calling token's name and role")
async def whoami(request: Request) -> dict[str, Any]:
    """Name and role of the bearer token (dashboard login check)."""
    info: TokenInfo = request.state.token
    return {"name": info.name, "role": info.role.value, "auth": deps_of(request).auth}


# --- stations -----------------------------------------------------------------------------
@read.get("/stations", tags=["stations"], response_model=StationPage,
          summary="Stations with status, EVSEs and connectors")
async def list_stations(request: Request, limit: int = Limit, offset: int = Offset,
                        status: StationStatus | None = Query(None, description="overall status filter"),
                        site_id: str | None = None,
                        q: str | None = Query(None, max_length=64, description="station id contains")
                        ) -> dict[str, Any]:
    """A page of stations (sorted by id) plus counts per status over the site/search filter."""
    deps = deps_of(request)
    ids = await deps.reader.station_ids()
    if q:
        ids = [i for i in ids if q.lower() in i.lower()]
    docs = await deps.reader.stations(ids)
    if site_id:
        docs = [d for d in docs if d["site_id"] == site_id]
    counts: dict[str, int] = {}
    for d in docs:
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    if status:
        docs = [d for d in docs if d["status"] == status]
    return {**paginate(docs, limit, offset), "counts": counts}


async def station_or_404(deps: ApiDeps, station_id: str) -> dict[str, Any]:
    """The station's document; NotFound (404) if it is unknown."""
    doc = await deps.reader.station(station_id)
    if doc is None:
        raise NotFound(f"unknown station {station_id!r}", {"station_id": station_id})
    return doc


@read.get("/stations/{station_id}", tags=["stations"], response_model=StationDetail, summary="One station")
async def get_station(request: Request, station_id: StationIdPath) -> dict[str, Any]:
    """Station document with its live sessions."""
    deps = deps_of(request)
    doc = await station_or_404(deps, station_id)
    tx_ids = [e["tx_ref"] for e in doc["evses"] if e["tx_ref"]]
    now_ts = deps.reader.clock.timestamp()
    doc["sessions"] = [session_summary(x, now_ts) for x in await deps.reader.sessions(tx_ids)]
    return doc


# --- sessions and transactions ------------------------------------------------------------
async def _tx_ids(deps: ApiDeps, state: str) -> list[str]:
    active = await deps.reader.active_tx_ids()
    if state == "live":
        ordered = [t for t in await deps.reader.all_tx_ids() if t in active]
        return ordered + sorted(active - set(ordered))
    ids = await deps.reader.all_tx_ids()
    return [t for t in ids if t not in active] if state == "ended" else ids


@read.get("/sessions", tags=["sessions"], response_model=Page[SessionSummary],
          summary="Charging sessions (live, ended or all)")
async def list_sessions(request: Request, limit: int = Limit, offset: int = Offset,
                        state: Literal["live", "ended", "all"] = "live",
                        station_id: str | None = None, site_id: str | None = None) -> dict[str, Any]:
    """Sessions newest first: energy, power, SoC, needs, departure, progress, applied limit."""
    deps = deps_of(request)
    ids = await _tx_ids(deps, state)
    if station_id or site_id:
        docs = await deps.reader.sessions(ids)
        docs = [d for d in docs if (not station_id or d["station_id"] == station_id)
                and (not site_id or d["site_id"] == site_id)]
        page = paginate(docs, limit, offset)
    else:
        page = paginate(ids, limit, offset)
        page["items"] = await deps.reader.sessions(page["items"])
    now_ts = deps.reader.clock.timestamp()
    page["items"] = [session_summary(d, now_ts) for d in page["items"]]
    return page


GenerationQ = Query(None, ge=1, description="which use of a reused transactionId (default: the latest)")


async def tx_or_404(deps: ApiDeps, station_id: str, transaction_id: str, generation: int | None,
                     what: str = "transaction") -> str:
    """The ref of a station's transaction; 404 if that station has no such transaction."""
    ref = await deps.reader.resolve_tx(station_id, transaction_id, generation)
    if ref is None:
        ctx: dict[str, Any] = {"station_id": station_id, "transaction_id": transaction_id}
        if generation is not None:
            ctx["generation"] = generation
        raise NotFound(f"unknown {what} {transaction_id!r} of station {station_id!r}", ctx)
    return ref


@read.get("/sessions/{station_id}/{transaction_id}", tags=["sessions"], response_model=Session,
          summary="One session with schedules and meter")
async def get_session(request: Request, station_id: StationIdPath, transaction_id: TransactionIdPath,
                      generation: int | None = GenerationQ,
                      samples: int = Query(500, ge=0, le=5000, description="meter samples to include")
                      ) -> dict[str, Any]:
    """Session with charging needs, planned schedule, applied profile, EV schedule and meter samples."""
    deps = deps_of(request)
    ref = await tx_or_404(deps, station_id, transaction_id, generation, "session")
    doc = (await deps.reader.sessions([ref]))[0]
    doc["meter"] = await deps.reader.session_meter(ref, samples) if samples else []
    return doc


@read.get("/transactions/{station_id}/{transaction_id}", tags=["transactions"],
          response_model=TransactionDetail,
          summary="One transaction with its events")
async def get_transaction(request: Request, station_id: StationIdPath, transaction_id: TransactionIdPath,
                          generation: int | None = GenerationQ) -> dict[str, Any]:
    """Transaction record plus every stored TransactionEvent payload in arrival order."""
    deps = deps_of(request)
    doc = await deps.reader.transaction(await tx_or_404(deps, station_id, transaction_id, generation))
    if doc is None:
        raise NotFound(f"unknown transaction {transaction_id!r} of station {station_id!r}",
                       {"station_id": station_id, "transaction_id": transaction_id})
    return doc


# --- sites --------------------------------------------------------------------------------
def _site_id(site_id: str) -> str:
    try:
        return check_site_id(site_id)
    except InvalidSiteId as err:
        raise InvalidInput(str(err), {"site_id": site_id}) from err


@read.get("/sites", tags=["sites"], response_model=Page[Site],
          summary="Sites: limit, current and planned load")
async def list_sites(request: Request, limit: int = Limit, offset: int = Offset) -> dict[str, Any]:
    """Every site with limit, live load (sum of session power), planned load now, optimizer state."""
    return paginate(await deps_of(request).reader.sites(), limit, offset)


async def _site_or_404(deps: ApiDeps, site_id: str) -> dict[str, Any]:
    if not await deps.reader.site_exists(site_id):
        raise NotFound(f"unknown site {site_id!r}", {"site_id": site_id})
    return (await deps.reader.sites([site_id]))[0]


@read.get("/sites/{site_id}", tags=["sites"], response_model=Site,
          summary="One site with its plan and prices")
async def get_site(request: Request, site_id: SiteIdPath) -> dict[str, Any]:
    """Site document including the optimizer's planned load series and the price series."""
    return await _site_or_404(deps_of(request), site_id)


@read.get("/sites/{site_id}/history", tags=["sites"], response_model=SiteHistory,
          summary="Site power history from the store")
async def site_history(request: Request, site_id: SiteIdPath,
                       since: AwareDatetime | None = Query(None, alias="from",
                                                           description="samples at or after this time"),
                       until: AwareDatetime | None = Query(None, alias="to",
                                                           description="samples at or before this time"),
                       max_points: int = Query(2000, ge=1, le=20000,
                                               description="thin to at most this many samples")
                       ) -> dict[str, Any]:
    """Site power, limit in force and planned load, sampled by one csms node every 30 s of the csms
    clock into Redis (the same answer on every API node, kept across restarts), oldest first; without
    `from`, the last 24 h of the csms clock."""
    if since and until and until < since:
        raise InvalidInput("`to` must not be earlier than `from`",
                           {"from": since.isoformat(), "to": until.isoformat()})
    deps = deps_of(request)
    await _site_or_404(deps, site_id)
    low = since.timestamp() if since else deps.clock.timestamp() - HISTORY_DEFAULT_S
    samples = await deps.power.read(site_id, low, until.timestamp() if until else None, max_points)
    return {"site_id": site_id, "samples": [x.to_doc() for x in samples],
            "interval_s": CLOCK_INTERVAL_S}


@act.put("/sites/{site_id}/limit", tags=["sites"], response_model=Site, summary="Set a site power limit")
async def set_site_limit(request: Request, site_id: SiteIdPath, body: SiteLimitInput) -> dict[str, Any]:
    """Store the limit and append a `site.limit` event (the optimizer re-plans)."""
    deps = deps_of(request)
    try:
        await deps.writer.set_limit(_site_id(site_id), body, source="api")
    except ProvisioningError as err:  # e.g. a site id longer than the 48 characters a limit accepts
        raise InvalidInput(str(err), {"site_id": site_id}) from err
    return (await deps.reader.sites([site_id]))[0]


@act.put("/sites/{site_id}/prices", tags=["sites"], response_model=SitePrices,
         summary="Set a site price series")
async def set_site_prices(request: Request, site_id: SiteIdPath, body: PriceSeriesInput) -> dict[str, Any]:
    """Store the price series and append a `site.prices` event (the optimizer re-plans)."""
    deps = deps_of(request)
    doc = await deps.writer.set_prices(_site_id(site_id), body, source="api")
    return {"site_id": site_id, "prices": doc}


# --- id tokens ----------------------------------------------------------------------------
@read.get("/id-tokens", tags=["id tokens"], response_model=Page[IdToken], summary="Known id tokens")
async def list_id_tokens(request: Request, limit: int = Limit, offset: int = Offset) -> dict[str, Any]:
    """Id tokens with type, status and group."""
    deps = deps_of(request)
    page = paginate(await deps.reader.id_tokens(), limit, offset)
    page["items"] = await deps.reader.id_token_docs(page["items"])
    return page


@read.get("/id-tokens/{id_token}", tags=["id tokens"], response_model=IdToken, summary="One id token")
async def get_id_token(request: Request, id_token: IdTokenPath) -> dict[str, Any]:
    """The token's authorization record."""
    deps = deps_of(request)
    if not await deps.redis.sismember(deps.keys.id_tokens(), id_token):
        raise NotFound(f"unknown id token {id_token!r}", {"id_token": id_token})
    return (await deps.reader.id_token_docs([id_token]))[0]


async def _store_id_token(deps: ApiDeps, id_token: str, body: IdTokenIn) -> dict[str, Any]:
    mapping = {"type": body.type, "status": body.status, "group_id": body.group_id or ""}
    pipe = deps.redis.pipeline(transaction=True)
    pipe.delete(deps.keys.id_token(id_token))
    pipe.hset(deps.keys.id_token(id_token), mapping=mapping)
    pipe.sadd(deps.keys.id_tokens(), id_token)
    await pipe.execute()
    return (await deps.reader.id_token_docs([id_token]))[0]


@act.post("/id-tokens", tags=["id tokens"], response_model=IdToken, status_code=201,
          summary="Add an id token")
async def create_id_token(request: Request, body: IdTokenCreate) -> dict[str, Any]:
    """Add a token; 409 if it exists."""
    deps = deps_of(request)
    if await deps.redis.sismember(deps.keys.id_tokens(), body.id_token):
        raise Conflict(f"id token {body.id_token!r} exists; use PUT to change it",
                       {"id_token": body.id_token})
    return await _store_id_token(deps, body.id_token, IdTokenIn(type=body.type, status=body.status,
                                                                 group_id=body.group_id))


@act.put("/id-tokens/{id_token}", tags=["id tokens"], response_model=IdToken,
         summary="Create or replace an id token")
async def put_id_token(request: Request, id_token: IdTokenPath, body: IdTokenIn) -> dict[str, Any]:
    """Create or replace the token's record (the path pattern checks the token)."""
    return await _store_id_token(deps_of(request), id_token, body)


@act.delete("/id-tokens/{id_token}", tags=["id tokens"], status_code=204, summary="Remove an id token")
async def delete_id_token(request: Request, id_token: IdTokenPath) -> Response:
    """Remove the token; 404 if unknown."""
    deps = deps_of(request)
    if not await deps.redis.sismember(deps.keys.id_tokens(), id_token):
        raise NotFound(f"unknown id token {id_token!r}", {"id_token": id_token})
    pipe = deps.redis.pipeline(transaction=True)
    pipe.delete(deps.keys.id_token(id_token))
    pipe.srem(deps.keys.id_tokens(), id_token)
    await pipe.execute()
    return Response(status_code=204)


# --- events -------------------------------------------------------------------------------
CursorQ = Query(None, pattern=r"^[0-9]{1,20}-[0-9]{1,20}(\.[0-9]{1,5})?$",
                description="stream id (`next` of a previous answer): only events after it, oldest first")
BeforeQ = Query(None, pattern=r"^[0-9]{1,20}-[0-9]{1,20}(\.[0-9]{1,5})?$",
                description="stream id (`older` of a previous answer): only events before it, newest first")
EVENT_SCAN_BATCH = 500
_U64 = 2**64 - 1


def _stream_id(raw: str) -> tuple[int, int]:
    """A stream id `ms-seq` as numbers; InvalidInput when out of Redis' range."""
    ms, _, seq = raw.partition("-")
    if int(ms) > _U64 or int(seq) > _U64:
        raise InvalidInput(f"stream id {raw!r} is out of range", {"cursor": raw})
    return int(ms), int(seq)


Pos = tuple[int, int, int]
"""An event's position: (ms, seq, shard). With one stream the shard is always 0 and a position is
written as its stream id `ms-seq`; in the Redis Cluster layout (one stream per shard, whose ids
can coincide) as `ms-seq.shard`, ordered by id, then shard."""


def _pos(raw: str) -> Pos:
    entry_id, _, shard = raw.partition(".")
    return (*_stream_id(entry_id), int(shard or 0))


def _fmt(pos: Pos, shards: int) -> str:
    return f"{pos[0]}-{pos[1]}.{pos[2]}" if shards > 1 else f"{pos[0]}-{pos[1]}"


def _id_after(raw: str, shards: int = 1) -> str | None:
    """The smallest position after `raw` (None: there is none)."""
    ms, seq, shard = _pos(raw)
    if shard + 1 < shards:
        return _fmt((ms, seq, shard + 1), shards)
    if seq < _U64:
        return _fmt((ms, seq + 1, 0), shards)
    return _fmt((ms + 1, 0, 0), shards) if ms < _U64 else None


def _id_before(raw: str, shards: int = 1) -> str | None:
    """The largest position before `raw` (None: there is none)."""
    ms, seq, shard = _pos(raw)
    if 0 < shard < shards:
        return _fmt((ms, seq, shard - 1), shards)
    if seq > 0:
        return _fmt((ms, seq - 1, shards - 1), shards)
    return _fmt((ms - 1, _U64, shards - 1), shards) if ms > 0 else None


def _event_matches(ev: Event, station_id: str | None, type_: EventType | None, feed: bool,
                   since: datetime | None, until: datetime | None) -> bool:
    """Whether an event passes the filters (`since` inclusive, `until` exclusive, on the event time)."""
    if (station_id and ev.station_id != station_id) or (type_ and ev.type != type_):
        return False
    if feed and ev.type.value in FEED_SKIP:
        return False
    return (since is None or ev.ts >= since) and (until is None or ev.ts < until)


@read.get("/events", tags=["events"], response_model=EventPage,
          summary="Events from the stream, by time range, paged by cursor")
async def list_events(request: Request, limit: int = Query(50, ge=1, le=1000),
                      station_id: str | None = None,
                      type: EventType | None = Query(None, description="only events of this type"),
                      feed: bool = Query(False, description="skip meter.values and tx.updated"),
                      since: AwareDatetime | None = Query(None, alias="from",
                                                          description="events at or after this time"),
                      until: AwareDatetime | None = Query(None, alias="to",
                                                          description="events before this time"),
                      after: str | None = CursorQ, before: str | None = BeforeQ) -> dict[str, Any]:
    """Without `after`: the newest `limit` matching events, newest first (`before` pages back).
    With `after`: the matching events after that stream id, oldest first. `next` is the cursor for
    the events that come later (pass it as `after`; every event after it is still to be read, so
    paging by `next` never skips one); `older` is the cursor for the page before (as `before`)."""
    if after and before:
        raise InvalidInput("give `after` or `before`, not both")
    if since and until and until <= since:
        raise InvalidInput("`to` must be later than `from`",
                           {"from": since.isoformat(), "to": until.isoformat()})
    deps = deps_of(request)
    n = len(deps.keys.event_streams())
    forward = after is not None
    out: list[dict[str, Any]] = []
    scanned: str | None = None  # the last position looked at
    first: str | None = None
    low, high = (_id_after(after, n), "+") if after else ("-", _id_before(before, n) if before else "+")
    while len(out) < limit and low is not None and high is not None:
        batch = await _scan(deps, _streams(deps, station_id), low, high, forward)
        for entry_id, fields in batch:
            scanned = s(entry_id)
            first = first or scanned
            try:
                ev = Event.from_fields(fields)
            except (ValueError, KeyError):
                continue
            if _event_matches(ev, station_id, type, feed, since, until):
                out.append(event_summary(scanned, ev))
                if len(out) >= limit:
                    break
        if len(batch) < EVENT_SCAN_BATCH or scanned is None:
            break
        if forward:
            low = _id_after(scanned, n)
        else:
            high = _id_before(scanned, n)
    if forward:
        nxt = scanned or after
    else:  # the newest id looked at: everything after it is unread
        nxt = first or await _stream_last_id(deps, before)
    return {"items": out, "total": len(out), "limit": limit, "offset": 0, "next": nxt,
            "older": scanned if not forward and len(out) >= limit else None}


async def _stream_last_id(deps: ApiDeps, before: str | None) -> str:
    """The newest stream id (before `before`, if given): the cursor after which nothing was read."""
    n = len(deps.keys.event_streams())
    high = _id_before(before, n) if before else "+"
    if high is None:
        return "0-0"
    last = await _scan(deps, _streams(deps, None), "-", high, False, count=1)
    return s(last[0][0]) if last else "0-0"


def _streams(deps: ApiDeps, station_id: str | None) -> list[tuple[int, str]]:
    """(shard, stream) to scan: a station's events are all in its shard's stream."""
    k = deps.keys
    if station_id:
        return [(k.shard_of_station(station_id), k.station_events(station_id))]
    return list(enumerate(k.event_streams()))


def _bound(pos: str, shard: int, lower: bool) -> str:
    """The XRANGE bound in one shard's stream of the inclusive position bound `pos`: an entry with
    the same id in a shard ordered before (lower) or after (upper) the position's is out."""
    if pos in ("-", "+"):
        return pos
    ms, seq, at = _pos(pos)
    inside = shard >= at if lower else shard <= at
    return f"{ms}-{seq}" if inside else f"({ms}-{seq}"


async def _scan(deps: ApiDeps, streams: list[tuple[int, str]], low: str, high: str, forward: bool,
                count: int = EVENT_SCAN_BATCH) -> list[Any]:
    """XRANGE (`forward`) or XREVRANGE over `streams` between the positions `low` and `high`
    (inclusive), merged by position, the first `count` as (position, fields): every entry of any
    stream up to the last one returned is in the result (each stream gave its first `count`)."""
    n = len(deps.keys.event_streams())
    pipe = deps.redis.pipeline(transaction=False)
    for shard, stream in streams:
        lo, hi = _bound(low, shard, True), _bound(high, shard, False)
        if forward:
            pipe.xrange(stream, min=lo, max=hi, count=count)
        else:
            pipe.xrevrange(stream, max=hi, min=lo, count=count)
    replies = await pipe.execute()
    rows = [((*_stream_id(s(entry_id)), shard), fields)
            for (shard, _), batch in zip(streams, replies, strict=True) for entry_id, fields in batch]
    rows.sort(key=lambda row: row[0], reverse=not forward)
    return [(_fmt(pos, n), fields) for pos, fields in rows[:count]]
