"""evfleet CSMS: OCPP 2.0.1 server, state store, command routing and operator services."""

__version__ = "0.1.0"
