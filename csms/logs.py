"""Moved to `evfleet.logs`; re-exported here so old imports keep working until they switch."""

from evfleet.logs import (  # noqa: F401
    TEXT_FORMAT,
    ContextFilter,
    JsonFormatter,
    RedactFilter,
    configure_logging,
    log_context,
    message_id_var,
    redact,
    site_var,
    station_id_var,
    transaction_id_var,
)
