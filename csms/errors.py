"""Exception tree of the csms (see also `csms.commands` for command outcomes).

    ValueError
    └── PayloadValueError           a schema-valid payload with an impossible value
        ├── TimestampError          (csms.core.timeutil) not an ISO 8601 date-time
        └── MeterValueError         (csms.core.metering) unknown unit / not a number
    ProvisioningError(ValueError)   (csms.store.provisioning) bad id, password, site
    ConfigFileError(ValueError)     (csms.settings)
    CommandError                    (csms.commands) offline / timeout / call_error / invalid

A `PayloadValueError` raised by a handler is answered with CALLERROR
`PropertyConstraintViolation`; any other handler exception with `InternalError`.
"""

from __future__ import annotations


class PayloadValueError(ValueError):
    """A payload passed the schema but carries a value the csms cannot use."""
