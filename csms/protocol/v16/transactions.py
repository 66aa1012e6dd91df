"""OCPP 1.6J Core: StartTransaction / StopTransaction, stored before they are answered.

Public names: `TransactionsBlock16`.

The csms assigns the integer transactionId (`csms.store.v16.assign_transaction_id`): a
StartTransaction resent after a lost answer gets the same id and stores nothing new (same
transaction, seqNo 0). Both become TransactionEvents of the shared store
(`csms.protocol.v16.mapping`), so every consumer sees 1.6 and 2.0.1 transactions alike.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from csms.protocol.v16.authorization import AuthorizationBlock16
from csms.protocol.v16.mapping import start_digest, start_event, stop_event
from csms.store.v16 import assign_transaction_id

log = logging.getLogger(__name__)


class TransactionsBlock16(AuthorizationBlock16):
    """StartTransaction and StopTransaction (transactionData as the final reading)."""

    @on(Action.start_transaction)
    async def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str,
                                   **_: Any) -> call_result.StartTransaction:
        """Assign (or find again) the transactionId, store the start, then answer."""
        status = await self.id_tag_status(id_tag)
        txid, new = await assign_transaction_id(self.env.store.redis, self.env.keys, self.id,
                                                start_digest(self.payload))
        event = start_event(txid, self.payload)
        decision = await self.env.store.transaction_event(self.id, self.site_id, event, self.payload)
        if not new or decision.replay:
            log.info("StartTransaction resent: transactionId %s again, nothing stored twice", txid)
        return call_result.StartTransaction(transaction_id=txid, id_tag_info={"status": status})

    @on(Action.stop_transaction)
    async def on_stop_transaction(self, transaction_id: int, meter_stop: int, timestamp: str,
                                  **_: Any) -> call_result.StopTransaction:
        """Store the end (a resent Stop changes nothing), then answer (idTagInfo with an idTag)."""
        decision = await self.env.store.transaction_event(self.id, self.site_id, stop_event(self.payload),
                                                          self.payload)
        if decision.replay:
            log.info("StopTransaction %s resent; not re-applied", transaction_id)
        id_tag = self.payload.get("idTag")
        if id_tag:
            return call_result.StopTransaction(id_tag_info={"status": await self.id_tag_status(str(id_tag))})
        return call_result.StopTransaction()
