"""Data types of a simulated station: configuration, connection settings, live state, counters.

Shared by the sans-IO core (`evse_sim.core`) and its driver (`evse_sim.station`, which re-exports them).
"""

from __future__ import annotations

import base64
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evse_sim.ev import Ev
from evse_sim.evse import EvseSpec


class StationError(RuntimeError):
    """A station operation that is impossible in the current state (e.g. plugging into a busy EVSE)."""


QUIRKS = {
    "no_smart_charging": "answers every smart-charging request with CALLERROR NotImplemented "
    "(a CSMS must budget it at its maximum)",
    "duplicate_ended": "sends TransactionEvent Ended twice (second with the next seqNo)",
    "reject_profiles": "answers every SetChargingProfile with Rejected "
    "(a CSMS must budget it at its maximum)",
    "ignore_limits": "accepts charging profiles but draws its EVSE maximum anyway (non-compliant)",
}
"""Behaviours of real chargers a station can imitate (`StationConfig.quirks`)."""


@dataclass(frozen=True, slots=True)
class StationConfig:
    """Static description of a station."""

    station_id: str
    evses: tuple[EvseSpec, ...] = (EvseSpec(),)
    vendor: str = "evfleet"
    model: str = "SimStation"
    serial_number: str = ""
    firmware_version: str = "0.1.0"
    heartbeat_s: int = 300
    tx_updated_interval_s: int = 60
    aligned_interval_s: int = 300
    boot_on_reconnect: bool = False
    quirks: frozenset[str] = frozenset()
    authorize: bool = False
    """Send Authorize for an EV's id token and charge only once Accepted (C01); offline: authorize locally."""
    ocpp_version: str = "2.0.1"
    """"2.0.1", or "1.6" (OCPP 1.6J, `evse_sim.ocpp16_link`: same EVs, profiles and queue)."""

    def __post_init__(self) -> None:
        if not self.station_id or "/" in self.station_id:
            raise ValueError(f"invalid station id {self.station_id!r}")
        if not self.evses:
            raise ValueError("a station needs at least one EVSE")
        if self.ocpp_version not in ("2.0.1", "1.6"):
            raise ValueError(f"ocpp_version must be 2.0.1 or 1.6, got {self.ocpp_version!r}")
        unknown = set(self.quirks) - set(QUIRKS)
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {sorted(QUIRKS)}")

    @property
    def hw_max_w(self) -> float:
        """Sum of the EVSE maxima [W]."""
        return sum(e.max_power_w for e in self.evses)


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """How to reach the CSMS: URL, credentials, TLS and retry timing (real seconds)."""

    csms_url: str
    password: str | None = None
    tls_ca: str | None = None
    client_cert_dir: str | None = None
    """Security profile 3: `{station_id}.pem` and `{station_id}.key` (client certificate, CN = id)."""
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    response_timeout_s: float = 30.0
    open_timeout_s: float = 20.0
    ping_interval_s: float | None = None

    @property
    def security_profile(self) -> int:
        """0 = none, 1 = Basic auth over ws://, 2 = Basic auth over TLS, 3 = client certificate."""
        if self.csms_url.startswith("wss://"):
            return 3 if self.client_cert_dir else 2
        return 1 if self.password else 0

    def url_for(self, station_id: str) -> str:
        """WebSocket URL of one station."""
        return f"{self.csms_url.rstrip('/')}/{station_id}"

    def headers_for(self, station_id: str) -> dict[str, str]:
        """HTTP headers of the handshake (Basic auth when a password is set)."""
        if not self.password:
            return {}
        token = base64.b64encode(f"{station_id}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def ssl_context(self, station_id: str | None = None) -> ssl.SSLContext | None:
        """TLS context for wss:// (custom CA if given; the station's client certificate from
        `client_cert_dir` when set, for security profile 3)."""
        if not self.csms_url.startswith("wss://"):
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else ssl.create_default_context()
        if self.client_cert_dir and station_id:
            base = os.path.join(self.client_cert_dir, station_id)
            ctx.load_cert_chain(f"{base}.pem", f"{base}.key")
        return ctx


@dataclass(slots=True)
class TxState:
    """A running transaction on an EVSE."""

    transaction_id: str
    started_at: datetime
    charging_state: str = "EVConnected"
    seq_no: int = 0
    id_token: dict[str, str] | None = None
    remote_start_id: int | None = None
    last_update: datetime | None = None
    authorized: bool = True


@dataclass(slots=True)
class EvseState:
    """Live state of one EVSE (one connector)."""

    spec: EvseSpec
    status: str = "Available"
    operative: bool = True
    pending_inoperative: bool = False
    ev: Ev | None = None
    tx: TxState | None = None
    energy_wh: float = 0.0
    power_w: float = 0.0
    offered_w: float = 0.0
    limit_w: float = 0.0
    last_limit_w: float = 0.0
    ev_limit_w: float | None = None


@dataclass(slots=True)
class OutMsg:
    """A queued outbound CALL; persistent ones (TransactionEvent) survive disconnects."""

    payload: Any
    persistent: bool = False
    on_result: Callable[[Any], None] | None = None


@dataclass(slots=True)
class StationStats:
    """Counters of one station (read by the fleet's progress display)."""

    sent: int = 0
    received: int = 0
    errors: int = 0
    connects: int = 0
    boots: int = 0
    boots_accepted: int = 0
    offline_events_sent: int = 0
    last_error: str = ""
    first_error: str = ""
    first_error_at: float | None = None
    """`time.monotonic()` of the first error (the fleet reports the earliest one as the cause)."""

    def note_error(self, text: str) -> None:
        """Count an error; keep the first and the last one."""
        self.errors += 1
        self.last_error = text
        if not self.first_error:
            self.first_error, self.first_error_at = text, time.monotonic()


@dataclass(slots=True)
class VisitLog:
    """What happened to one EV visit (for scenario reports)."""

    ev_id: str
    station_id: str
    evse_id: int
    plugged_at: datetime
    left_at: datetime | None = None
    delivered_wh: float = 0.0
    need_wh: float = 0.0
    transaction_id: str = ""
