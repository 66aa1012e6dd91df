"""Block E (transactions): TransactionEvent, stored before it is answered.

Public names: `TransactionsBlock`, `tx_event_from_payload`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from csms.core.metering import MeterValueError, latest_sample
from csms.core.timeutil import parse_ts
from csms.core.transactions import TxEvent, TxState
from csms.protocol.authorization import AuthorizationBlock
from evfleet.logs import log_context

log = logging.getLogger(__name__)


def tx_event_from_payload(p: Mapping[str, Any]) -> TxEvent:
    """TxEvent from a camelCase TransactionEventRequest (raises ValueError on bad values)."""
    info = p.get("transactionInfo") or {}
    evse = p.get("evse") or {}
    token = p.get("idToken") or {}
    try:
        sample = latest_sample(p.get("meterValue") or [])
    except MeterValueError as err:
        log.warning("TransactionEvent meter values not used: %s", err)
        sample = None
    return TxEvent(
        transaction_id=str(info["transactionId"]),
        event_type=TxState(p["eventType"]),
        seq_no=int(p["seqNo"]),
        timestamp=parse_ts(str(p["timestamp"])),
        trigger_reason=str(p.get("triggerReason", "")),
        offline=bool(p.get("offline", False)),
        charging_state=info.get("chargingState"),
        stopped_reason=info.get("stoppedReason"),
        id_token=token.get("idToken"),
        id_token_type=token.get("type"),
        evse_id=int(evse["id"]) if "id" in evse else None,
        connector_id=int(evse["connectorId"]) if "connectorId" in evse else None,
        remote_start_id=info.get("remoteStartId"),
        number_of_phases=p.get("numberOfPhasesUsed"),
        sample=sample,
    )


class TransactionsBlock(AuthorizationBlock):
    """E01-E15: a transaction is this station's (transactionId, generation); idempotent on
    (transactionId, seqNo, eventType); offline events accepted in order."""

    @on(Action.transaction_event)
    async def on_transaction_event(self, event_type: str, seq_no: int,
                                   **_: Any) -> call_result.TransactionEvent:
        """Store the event atomically, then answer (idTokenInfo when an idToken is present)."""
        ev = tx_event_from_payload(self.payload)
        with log_context(transaction_id=ev.transaction_id, site=self.site_id):
            decision = await self.env.store.transaction_event(self.id, self.site_id, ev, self.payload)
            if decision.replay:
                log.info("TransactionEvent %s %s seqNo %s of %s is a replay; not re-applied", event_type,
                         ev.transaction_id, seq_no, self.id)
        if ev.id_token or ev.id_token_type:
            status = await self.token_status(ev.id_token or "", ev.id_token_type)
            return call_result.TransactionEvent(id_token_info={"status": status})
        return call_result.TransactionEvent()
