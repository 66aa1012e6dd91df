"""evse_sim stations for tests that run them in real time against csms processes, and what a station
applies at an instant.

The stations speak real OCPP 2.0.1 over WebSockets, with modelled ISO 15118 EVs (`BasicHlc`), and
reconnect with a short back-off when their csms goes away. `applied_limit_w` reads a station's
accepted profiles: the limit it enforces, online or not (an offline station keeps its last limit).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from evfleet.clock import RealClock
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.hlc import BasicHlc
from evse_sim.station import ConnectionConfig, SimStation, StationConfig

EVSE_KW = 11.0


def sim_station(station_id: str, csms_url: str, password: str, seed: int,
                quirks: frozenset[str] = frozenset()) -> SimStation:
    """A one-EVSE 11 kW AC station on `csms_url` (base URL, the id is appended): a TransactionEvent
    every second while charging, no clock-aligned meter values, reconnects within 0.2-1 s."""
    cfg = StationConfig(station_id, (EvseSpec.ac(EVSE_KW),), tx_updated_interval_s=1, aligned_interval_s=0,
                        quirks=quirks)
    conn = ConnectionConfig(csms_url, password=password, backoff_base_s=0.2, backoff_max_s=1.0,
                            response_timeout_s=10)
    return SimStation(cfg, conn, RealClock(), hlc=BasicHlc(max_schedule_tuples=8), rng=random.Random(seed))


def charging_ev(n: int, kwh: float = 40.0, hours: float = 4.0) -> Ev:
    """An ISO 15118 EV (77 kWh, 11 kW AC) that wants `kwh` within `hours`, id token `TOK-{n}`."""
    now = datetime.now(UTC)
    return Ev(EvSpec(f"EV-{n}", "Test", 77.0, 0.2, 0.2 + kwh / 77.0, EVSE_KW, 50.0, now,
                     now + timedelta(hours=hours), hlc=True, id_token=f"TOK-{n}"))


def applied_limit_w(station: SimStation, at: datetime, idle_at_default: bool = False) -> float:
    """Sum over the station's EVSEs of the limit it enforces at `at`: the composite of the profiles it
    accepted (TxProfile of the running transaction, else TxDefaultProfile, capped by a station
    maximum profile and the EVSE's hardware), the hardware maximum for a station that ignores
    limits. An EVSE without a transaction applies 0, or with `idle_at_default` the limit a car
    plugging in at `at` would get (what the csms reserves for it)."""
    total = 0.0
    for evse_id, st in station.evses.items():
        tx = st.tx
        if tx is None and not idle_at_default:
            continue
        if "ignore_limits" in station.core.config.quirks:
            total += st.spec.max_power_w
            continue
        limit_w, _min_w = station.core.profiles.limit_w_at(
            evse_id, at, st.spec.electrical, st.spec.max_power_w,
            tx.transaction_id if tx else None, tx.started_at if tx else None)
        total += min(limit_w, st.spec.max_power_w)
    return total
