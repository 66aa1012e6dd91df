"""Moved to `evfleet.keys`; re-exported here so old imports keep working until they switch."""

from evfleet.keys import (  # noqa: F401
    Keys,
    TxRef,
    parse_tx_ref,
    tx_ref,
)
