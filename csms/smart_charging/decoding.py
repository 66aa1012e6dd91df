"""Decoding a site's stored EVSE records into `EvseInfo`, in chunks that leave the event loop to
other work, with a memo that skips the parse of records whose inputs did not change since the last
read (the smart-charging service's whole-site reads, issue 14). Pure apart from the yields."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any

from csms.smart_charging.evse import EvseInfo, decode_evse, ev_caps_w
from evfleet.store.port import StoredEvse

DECODE_CHUNK = 100
"""EVSE records decoded per event-loop callback (`decode_all`): 2-4 ms here (12-19 ms at 500, a
stall every watchdog pass over a site of 800 metering EVSEs: issue 14)."""


DECODE_MEMO_MAX = 100_000
"""EVSEs whose last decode `decode_all` keeps (cleared when full: EVSEs that left stay no longer)."""

DecodeMemo = dict[str, tuple[tuple[str | None, dict[str, str], dict[str, Any] | None], EvseInfo, StoredEvse]]
"""`sid/eid` -> (the inputs `decode_evse` derives fields from: `online`, the EVSE hash, the needs
document; the `EvseInfo` decoded from them; the last record seen with those inputs)."""


async def decode_all(records: Sequence[StoredEvse], memo: DecodeMemo | None = None) -> dict[str, EvseInfo]:
    """`decode_evse` of each record by key, yielding to the event loop every `DECODE_CHUNK`
    records (a site of 20,000 EVSEs would otherwise hold the loop for a whole pass).

    With `memo`, a record whose inputs equal those of its last decode gets a copy of that
    decode (`_memo_decode`): every record is still read in full, only unchanged ones skip the
    parsing of their fields, so no decode is ever staler than its read. Each `EvseInfo` is its
    read's own (callers set its fields after answers); its `record` and `needs` are the record's
    documents themselves, not copies: read-only (`EvseInfo`; a store may hand out the same record
    object again, `RedisStateStore._stored`, and a copy of each per EVSE per pass was two of the
    objects a young garbage collection walks, issue 14).
    """
    out: dict[str, EvseInfo] = {}
    for start in range(0, len(records), DECODE_CHUNK):
        if start:
            await asyncio.sleep(0)
        chunk = records[start:start + DECODE_CHUNK]
        infos = map(decode_evse, chunk) if memo is None else (_memo_decode(r, memo) for r in chunk)
        for info in infos:
            out[info.key] = info
    return out


def _memo_decode(rec: StoredEvse, memo: DecodeMemo) -> EvseInfo:
    """`decode_evse(rec)`, or a copy of the memo's decode when `online`, the EVSE hash and the
    needs document equal the ones it was decoded from (`decode_evse` is a pure function of those
    and of the ids; the applied-profile record is not decoded, only carried: the copy carries this
    read's). The memo keeps its own `EvseInfo` and copies of those inputs, so what callers do with
    theirs (steerable, refusals, record are set after answers) never reaches it."""
    key = f"{rec.station_id}/{rec.evse_id}"
    hit = memo.get(key)
    if hit is not None and hit[2] is rec:  # the very record its decode came from: the same inputs
        return hit[1].clone()  # (a store hands a record out again only for equal raw replies)
    inputs = (rec.station.get("online"), rec.evse, rec.needs)
    if hit is not None and hit[0] == inputs:
        memo[key] = (hit[0], hit[1], rec)
        hit[1].record, hit[1].needs = rec.profile, rec.needs  # this read's documents: its clones'
        hit[1].parsed = [None, None]  # series is parsed once, by the first that asks (`EvseInfo`)
        return hit[1].clone()
    info = decode_evse(rec)
    ev_caps_w(info)  # a function of the decode's inputs: carried by every hit (a share asks it of all)
    if len(memo) >= DECODE_MEMO_MAX:
        memo.clear()
    memo[key] = ((inputs[0], dict(rec.evse), None if rec.needs is None else copy.deepcopy(rec.needs)),
                 info.clone(), rec)
    return info
