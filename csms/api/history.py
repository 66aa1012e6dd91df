"""Transaction history: every stored session, searchable by station, id token and time, with its
energy and what it cost (csms/core/costs.py), as JSON pages or CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from csms.api.deps import ApiDeps, deps_of, reject_unknown_query, require
from csms.api.errors import READ_ERRORS, InvalidInput
from csms.api.tokens import Role
from csms.api.views import load_json, tx_identity
from csms.core.costs import PriceSeries, session_cost, uncontrolled_cost
from evfleet.keys import parse_tx_ref
from evfleet.store.client import as_str, as_str_dict
from evfleet.store.shards import refs_by_start

history = APIRouter(prefix="/api/v1", responses=READ_ERRORS,
                    dependencies=[Depends(require(Role.VIEWER)), Depends(reject_unknown_query)])


class TransactionSummary(BaseModel):
    """One transaction as an operator reads it; numbers are numbers, unknown values null."""

    station_id: str | None
    transaction_id: str
    generation: int
    tx_ref: str
    site_id: str
    id_token: str | None
    state: str | None
    live: bool
    started_at: str | None
    ended_at: str | None
    stopped_reason: str | None
    energy_kwh: float | None = Field(description="energy delivered (meter samples, else the last register)")
    cost: float | None = Field(description="energy x the site's import price per step; null without prices")
    uncontrolled_cost: float | None = Field(
        description="the same energy charged at once from plug-in at the session's highest power")


class TransactionPage(BaseModel):
    """A page of transactions, newest start first."""

    items: list[TransactionSummary]
    total: int
    limit: int
    offset: int


CSV_FIELDS = list(TransactionSummary.model_fields)


async def _summaries(deps: ApiDeps, refs: list[str]) -> list[TransactionSummary]:
    """Records, meter samples and site prices of `refs` (two round trips) → summaries."""
    redis, keys = deps.redis, deps.keys
    pipe = redis.pipeline(transaction=False)
    for ref in refs:
        pipe.hgetall(keys.transaction(ref))
        pipe.lrange(keys.transaction_meter(ref), 0, -1)
    replies = await pipe.execute()
    records = [as_str_dict(replies[2 * i]) for i in range(len(refs))]
    meters = [[m for m in (load_json(as_str(x)) for x in replies[2 * i + 1]) if isinstance(m, dict)]
              for i in range(len(refs))]
    stations = sorted({r.get("station_id", "") for r in records if r.get("station_id")})
    site_of = await deps.reader.station_sites(stations)
    sites = sorted(set(site_of.values()) | {deps.reader.default_site})
    pipe = redis.pipeline(transaction=False)
    for site in sites:
        pipe.get(keys.site_prices(site))
    prices = {site: _prices(raw) for site, raw in zip(sites, await pipe.execute(), strict=True)}
    active = await deps.reader.active_tx_ids()
    out = []
    for ref, record, meter in zip(refs, records, meters, strict=True):
        site = site_of.get(record.get("station_id", ""), deps.reader.default_site)
        out.append(summarize(ref, record, meter, site, prices.get(site), ref in active))
    return out


def _prices(raw: Any) -> PriceSeries | None:
    doc = load_json(as_str(raw)) if raw else None
    return PriceSeries.from_document(doc) if isinstance(doc, dict) else None


def summarize(ref: str, record: dict[str, str], meter: list[dict[str, Any]], site_id: str,
              prices: PriceSeries | None, live: bool) -> TransactionSummary:
    """The summary of one stored transaction (pure)."""
    ident = tx_identity(ref, record)
    energies = [float(m["energy_wh"]) for m in meter if isinstance(m.get("energy_wh"), int | float)]
    energy_wh = (max(energies) - min(energies)) if len(energies) >= 2 else _number(record.get("energy_wh"))
    return TransactionSummary(
        station_id=ident["station_id"], transaction_id=ident["transaction_id"],
        generation=ident["generation"], tx_ref=ref, site_id=site_id, id_token=record.get("id_token") or None,
        state=record.get("state") or None, live=live, started_at=record.get("started_at") or None,
        ended_at=record.get("ended_at") or None, stopped_reason=record.get("stopped_reason") or None,
        energy_kwh=None if energy_wh is None else round(energy_wh / 1000.0, 4),
        cost=_round(session_cost(meter, prices)), uncontrolled_cost=_round(uncontrolled_cost(meter, prices)))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def _matching(request: Request, station_id: str | None, id_token: str | None,
                    started_from: datetime | None, started_to: datetime | None,
                    state: str) -> list[TransactionSummary]:
    if started_from and started_to and started_from > started_to:
        raise InvalidInput("'from' is after 'to'", {"from": started_from.isoformat(),
                                                    "to": started_to.isoformat()})
    deps = deps_of(request)
    low = started_from.timestamp() if started_from else "-inf"
    high = started_to.timestamp() if started_to else "+inf"
    refs = [ref for ref, _ in reversed(await refs_by_start(deps.redis, deps.keys, low, high))]
    if station_id:  # a ref names its station: load only that station's records (the station page)
        refs = [r for r in refs if _ref_station(r) in (station_id, None)]
    rows = await _summaries(deps, refs)
    return [r for r in rows if (not station_id or r.station_id == station_id)
            and (not id_token or r.id_token == id_token)
            and (state == "all" or r.live == (state == "live"))]


def _ref_station(ref: str) -> str | None:
    """The station a transaction ref names (None: a ref of an old version, without one)."""
    try:
        return parse_tx_ref(ref).station_id
    except ValueError:
        return None


StationQ = Query(None, min_length=1, max_length=48, description="only this station's transactions")
TokenQ = Query(None, min_length=1, max_length=36, description="only this id token's transactions")
FromQ = Query(None, alias="from", description="started at or after (ISO 8601)")
ToQ = Query(None, alias="to", description="started at or before (ISO 8601)")
StateQ = Query("all", description="live, ended or all")


@history.get("/transactions", tags=["transactions"], summary="Transaction history with energy and cost",
             response_model=TransactionPage)
async def list_transactions(request: Request, limit: int = Query(100, ge=1, le=1000, description="page size"),
                            offset: int = Query(0, ge=0, description="items to skip"),
                            station_id: str | None = StationQ, id_token: str | None = TokenQ,
                            started_from: datetime | None = FromQ, started_to: datetime | None = ToQ,
                            state: Literal["live", "ended", "all"] = StateQ) -> TransactionPage:
    """Transactions newest start first, filtered by station, id token, start time range and state."""
    rows = await _matching(request, station_id, id_token, started_from, started_to, state)
    return TransactionPage(items=rows[offset:offset + limit], total=len(rows), limit=limit, offset=offset)


@history.get("/transactions.csv", tags=["transactions"], summary="Transaction history as CSV",
             response_class=Response, responses={200: {"content": {"text/csv": {}}}})
async def export_transactions(request: Request, station_id: str | None = StationQ,
                              id_token: str | None = TokenQ, started_from: datetime | None = FromQ,
                              started_to: datetime | None = ToQ,
                              state: Literal["live", "ended", "all"] = StateQ) -> Response:
    """Every matching transaction (same filters as /transactions) as CSV, one row each."""
    rows = await _matching(request, station_id, id_token, started_from, started_to, state)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in json.loads(row.model_dump_json()).items()})
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="transactions.csv"'})
