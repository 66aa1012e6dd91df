"""The transaction state machine (OCPP 2.0.1 block E), pure: tx record + event -> decision.

Public names: `TxEvent`, `TxDecision`, `decide_transaction_event`, `starts_new_generation`,
`belongs_to_earlier_generation`, `seq_member`, `TxState`, `TX_TRANSITIONS`.

Rules (ARCHITECTURE "No transaction data is lost"); a transaction is (station, transactionId,
generation), the store scopes every id by the station the event came from:
- a (seqNo, eventType) already stored for the transaction is a replay: answered, nothing re-applied;
- counter reset: a `Started` that reuses the id of an earlier transaction of the station (see
  `starts_new_generation`) is a new transaction, stored as the id's next generation; the old
  one stays as it was, and events older than the new one's start still go to the old one
  (`belongs_to_earlier_generation`; docs/csms.md);
- `Ended` is final: a later `Updated` (offline queue delivered late) or a second `Ended`
  (some chargers send it twice) is stored in the event list but does not reopen or re-end;
- meter readings and charging state only move forward in time: an older event (offline
  queue) does not overwrite newer values;
- the first event seen for an id starts the transaction, whatever its type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from csms.core.metering import MeterSample
from csms.core.timeutil import iso, parse_ts
from evfleet.events import EventType


class TxState(StrEnum):
    """Stored `state` of a transaction."""

    STARTED = "Started"
    UPDATED = "Updated"
    ENDED = "Ended"


# (current state or None, incoming eventType) -> new state. Ended is absorbing.
TX_TRANSITIONS: dict[tuple[TxState | None, TxState], TxState] = {
    (None, TxState.STARTED): TxState.STARTED,
    (None, TxState.UPDATED): TxState.UPDATED,
    (None, TxState.ENDED): TxState.ENDED,
    (TxState.STARTED, TxState.STARTED): TxState.STARTED,
    (TxState.STARTED, TxState.UPDATED): TxState.UPDATED,
    (TxState.STARTED, TxState.ENDED): TxState.ENDED,
    (TxState.UPDATED, TxState.STARTED): TxState.UPDATED,
    (TxState.UPDATED, TxState.UPDATED): TxState.UPDATED,
    (TxState.UPDATED, TxState.ENDED): TxState.ENDED,
    (TxState.ENDED, TxState.STARTED): TxState.ENDED,
    (TxState.ENDED, TxState.UPDATED): TxState.ENDED,
    (TxState.ENDED, TxState.ENDED): TxState.ENDED,
}


@dataclass(frozen=True)
class TxEvent:
    """The parts of a TransactionEventRequest the state machine needs."""

    transaction_id: str
    event_type: TxState
    seq_no: int
    timestamp: datetime
    trigger_reason: str = ""
    offline: bool = False
    charging_state: str | None = None
    stopped_reason: str | None = None
    id_token: str | None = None
    id_token_type: str | None = None
    evse_id: int | None = None
    connector_id: int | None = None
    remote_start_id: int | None = None
    number_of_phases: int | None = None
    sample: MeterSample | None = None


@dataclass
class TxDecision:
    """What to write for one event (the store applies it atomically)."""

    replay: bool
    state: TxState | None = None
    fields: dict[str, str] = field(default_factory=dict)
    emit: list[EventType] = field(default_factory=list)
    first_seen: bool = False
    ended_now: bool = False
    duplicate_end: bool = False
    start_score: float | None = None
    store_sample: bool = False


def seq_member(ev: TxEvent) -> str:
    """The member of `tx:{ref}:seqnos` that makes `ev` a replay when seen again."""
    return f"{ev.seq_no}:{ev.event_type.value}"


def starts_new_generation(current: Mapping[str, str], seen: bool, ev: TxEvent) -> bool:
    """True if `ev` starts a new transaction that reuses the id of the one stored in `current`.

    Chargers that restart their transaction counter (after a reboot, a counter wrap or a
    replacement controller) send `Started` with an id they used before. That is a new
    transaction, not a replay, when:
    - the stored one has Ended and the event is timestamped at or after that end and after that
      start (a late, offline-queued Started of the old transaction is older than its end; a
      replay of it carries its original timestamp), or
    - the stored one never got its Ended (the charger lost it), the event's (seqNo, Started) is
      already stored, it is timestamped after everything stored for the transaction and names
      the same EVSE: a replay repeats the original timestamp, so only a new use of the id is
      later; the old transaction is then superseded like any transaction whose EVSE starts
      another one.
    The seqNo alone decides nothing: the new transaction restarts at 0 like the old one did.
    """
    if ev.event_type is not TxState.STARTED or not current:
        return False
    ended_at, started_at = current.get("ended_at"), current.get("started_at")
    if started_at and ev.timestamp <= parse_ts(started_at):
        return False
    if _cur_state(current) is TxState.ENDED:
        return not (ended_at and ev.timestamp < parse_ts(ended_at))
    updated_at = current.get("updated_at")
    same_evse = ev.evse_id is not None and current.get("evse_id") == str(ev.evse_id)
    return seen and same_evse and bool(updated_at) and ev.timestamp > parse_ts(str(updated_at))


def belongs_to_earlier_generation(current: Mapping[str, str], ev: TxEvent) -> bool:
    """True if `ev` is older than the start of `current`, a later use of its id (generation > 1):
    a late or replayed event of the earlier transaction, stored there, never in the new one."""
    started_at = current.get("started_at")
    return int(current.get("generation") or 1) > 1 and bool(started_at) and \
        ev.timestamp < parse_ts(str(started_at))


def _cur_state(current: Mapping[str, str]) -> TxState | None:
    value = current.get("state") or ""
    return TxState(value) if value in {s.value for s in TxState} else None


def decide_transaction_event(current: Mapping[str, str], seq_seen: bool, ev: TxEvent) -> TxDecision:
    """Decide how `ev` changes the stored transaction `current` (empty mapping if unknown)."""
    if seq_seen:
        return TxDecision(replay=True, state=_cur_state(current))
    before = _cur_state(current)
    after = TX_TRANSITIONS[(before, ev.event_type)]
    ts = iso(ev.timestamp)
    prev_updated = current.get("updated_at")
    newer = prev_updated is None or prev_updated == "" or parse_ts(prev_updated) <= ev.timestamp
    d = TxDecision(replay=False, state=after, first_seen=before is None)
    f = d.fields
    f["state"] = after.value
    last_seq = current.get("last_seq_no")
    f["last_seq_no"] = str(max(ev.seq_no, int(last_seq)) if last_seq not in (None, "") else ev.seq_no)
    if d.first_seen:
        f["transaction_id"] = ev.transaction_id
        f["started_at"] = ts
        d.start_score = ev.timestamp.timestamp()
        d.emit.append(EventType.TX_STARTED)
    elif ev.event_type is TxState.STARTED and current.get("started_at"):
        # a Started delivered after an Updated (offline queue): keep the earliest start
        if ev.timestamp < parse_ts(current["started_at"]):
            f["started_at"] = ts
            d.start_score = ev.timestamp.timestamp()
    if ev.evse_id is not None and not current.get("evse_id"):
        f["evse_id"] = str(ev.evse_id)
    if ev.connector_id is not None and not current.get("connector_id"):
        f["connector_id"] = str(ev.connector_id)
    if ev.id_token and not current.get("id_token"):
        f["id_token"] = ev.id_token
    if newer:
        f["updated_at"] = ts
        if ev.charging_state:
            f["charging_state"] = ev.charging_state
        if ev.sample is not None and not ev.sample.is_empty():
            for name in ("energy_wh", "power_w", "current_a", "soc"):
                value = getattr(ev.sample, name)
                if value is not None:
                    f[name] = repr(float(value))
            if ev.sample.energy_wh is not None or ev.sample.power_w is not None:
                f["metered_at"] = ev.sample.ts or ts  # when they were read (the optimizer plans from now)
    if ev.sample is not None and not ev.sample.is_empty():
        d.store_sample = True
    if ev.event_type is TxState.ENDED:
        if before is TxState.ENDED:
            d.duplicate_end = True
        else:
            d.ended_now = True
            f["ended_at"] = ts
            f["stopped_reason"] = ev.stopped_reason or "Local"
            d.emit.append(EventType.TX_ENDED)
    elif not d.first_seen and before is not TxState.ENDED:
        d.emit.append(EventType.TX_UPDATED)
    return d
