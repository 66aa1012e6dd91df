"""Prometheus metrics of the OCPP layer (served on /metrics by the operator API).

Public names: `CONNECTED_STATIONS`, `OCPP_MESSAGES`, `OCPP_HANDLER_SECONDS`,
`OCPP_PROTOCOL_ERRORS`, `OCPP_SCHEMA_VIOLATIONS`, `OCPP_THROTTLED`, `OCPP_DISCONNECTS`,
`HANDSHAKE_REFUSALS`, `OUTBOUND_CALLS`, `OUTBOUND_CALL_SECONDS`, `DEVICE_MODEL_FETCHES`,
`EVENTS_DROPPED`, `EVENTS_TRIMMED`, `CERTIFICATE_LOGINS`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTED_STATIONS = Gauge("evfleet_connected_stations", "Stations connected to this csms node")
OCPP_MESSAGES = Counter("evfleet_ocpp_messages_total", "OCPP CALLs received from stations",
                        ["action", "result"])
OCPP_HANDLER_SECONDS = Histogram(
    "evfleet_ocpp_handler_seconds", "Time from receiving a CALL to sending its answer", ["action"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
OCPP_PROTOCOL_ERRORS = Counter("evfleet_ocpp_protocol_errors_total",
                               "Bad frames from stations, by OCPP-J error code", ["code"])
OCPP_SCHEMA_VIOLATIONS = Counter("evfleet_ocpp_schema_violations_accepted_total",
                                 "Schema violations accepted for stations in compatibility mode", ["action"])
OCPP_THROTTLED = Counter("evfleet_ocpp_throttled_messages_total", "Messages delayed by the rate limiter")
OCPP_DISCONNECTS = Counter("evfleet_ocpp_disconnects_total", "Connections closed by the csms", ["reason"])
HANDSHAKE_REFUSALS = Counter("evfleet_ocpp_handshake_refusals_total", "Refused WebSocket handshakes",
                             ["reason"])
OUTBOUND_CALLS = Counter("evfleet_ocpp_outbound_calls_total", "CALLs sent to stations",
                         ["action", "outcome"])
OUTBOUND_CALL_SECONDS = Histogram("evfleet_ocpp_outbound_call_seconds", "Round trip of CALLs to stations",
                                  ["action"])
DEVICE_MODEL_FETCHES = Counter("evfleet_device_model_fetches_total",
                               "GetBaseReport requests sent after a boot, by how they ended "
                               "(Accepted, the station's other status, call_error, timeout, offline)",
                               ["outcome"])
EVENTS_DROPPED = Counter("evfleet_station_events_dropped_total",
                         "Station-generated events not stored: the station is over its hourly quota",
                         ["type"])
EVENTS_TRIMMED = Counter("evfleet_station_events_trimmed_total",
                         "Station-generated events stored without their large fields", ["type"])
CERTIFICATE_LOGINS = Counter("evfleet_ocpp_certificate_logins_total",
                             "Security profile 3 logins by client certificate")
