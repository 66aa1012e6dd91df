"""A site's state -> an optimizer `Instance` over a rolling horizon (pure: data in, snapshot out).

`build_instance(site, now, cfg)` takes `SiteState` (what the store says about the site: limit,
prices, EVSEs, running sessions, charging needs, past session energies) and returns the
`Instance` plus the mapping from EV ids back to EVSEs. The state is read from Redis by
`optimizer.site_reader.read_site`; nothing in this module does I/O.

Defaults (docs/smart-charging.md, "Defaults and forecasts"):

- departure: the EV's `departureTime` from NotifyEVChargingNeeds; otherwise session start + the
  site's typical dwell (the lower quartile of the dwells its running sessions announced, once at
  least `min_announced` (5) did), else + `default_dwell_h` (8 h); never earlier than now +
  `min_dwell_h` (an EV still plugged in after its announced departure keeps charging);
- energy: the EV's `energyAmount` minus what the meter delivered since the needs arrived, and
  minus what it drew since its last reading at that reading's power (`drawn_since_reading_wh`);
  without needs, 0 once the transaction reports `SuspendedEV` (the EV refuses the power offered:
  it is full), else the seed-001 Gamma-law forecast k*theta of the driver's (id token's) past session
  energies when at least `min_history` are known (the weekday's own law when it has that
  many, as seed 001 fits weekday models); otherwise, once at least `min_announced` (5) running
  sessions announced an energy, the site's typical energy: the mean of the announced session
  energies (delivered before the needs + energyAmount) above what this session already drew, less
  what it drew (the expected rest of a session that has taken that much; a session that has taken
  more than any announced falls through); otherwise `default_energy_kwh`; always capped by what
  the EV can take before departure (max power * dwell). The site's typical energy is planned at
  `estimate_share` (0.85) of it: the first steps of a cheap window are drawn at the level the estimates
  set, so an estimate too high raises the peak there and then, while one too low is found soon, because
  the LP charges estimated EVs first (`EV.energy_estimated`, set for every energy that is not from needs;
  `optimizer.model.highs_lp.estimated_first_cost`) and they keep drawing once it is delivered; the demo's
  closed loop, seeds 1-10: 1.017-1.171x the min-peak (mean 1.102) against 1.065-1.196x (mean 1.138)
  with the whole estimate and no order, and less energy short (seeds 5, 8, 9: 4.0 / 13.8 / 15.7 kWh
  against 6.3 / 15.7 / 20.1);
- fixed `base_load_kw` the optimizer plans around (`EvseState.fixed_w`, the csms's budget):
  steerable=0 EVSEs (they refused a profile) at their metered maximum, session or not; idle
  EVSEs at their TxDefaultProfile (the reservation; their maximum when they hold none); offline
  stations with a session at the highest limit of their last accepted profile FOR THAT SESSION
  (their maximum when none); non-compliant EVSEs at least at what they draw;
- needs are soft (`unmet_penalty_per_kwh`, far above any price), so a solve is never
  infeasible because an EV asks for more than fits;
- ties between cost-equal schedules (flat price windows) are broken by the lowest peak, then by
  staying on the previous plan: `tie_break` (1e-2 of the largest price per kW of peak and step) puts
  the site's peak into the LP above the worker's stickiness (1e-3 per kWh moved), so among the
  cheapest schedules the flattest wins, and among those the one closest to the standing plan. Without
  it the interior point spreads each EV evenly over its own stay, which is not the lowest peak when
  stays differ (tests/optimizer/test_live_ties.py). It never trades a price difference above
  `tie_break` x the largest price per kWh. `time_preference_per_step` (default 0) can still favour
  earlier steps, at the price of packing load into the first cheap steps.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from evfleet.isotime import parse_iso_or_none
from evfleet.profile import a_to_w
from evfleet.records import (
    DEFAULT_MAX_POWER_W,
    DEFAULT_RATE_UNIT,
)
from evfleet.txprofile import DEFAULT_VOLTAGE_V, parse_ts
from optimizer.problem import Instance

if TYPE_CHECKING:

    pass

DEFAULT_PRICE = 0.25
"""Import price per kWh used when a site has no price series (flat: the plan only spreads load)."""


@dataclass(frozen=True)
class SnapshotConfig:
    """Horizon and defaults of the rolling-horizon instance."""

    horizon_steps: int = 96
    step_minutes: int = 15
    default_dwell_h: float = 8.0
    min_announced: int = 5
    """Running sessions that must announce a departure before the others are planned with the site's
    typical dwell (their lower quartile) instead of `default_dwell_h`."""
    min_dwell_h: float = 0.5
    default_energy_kwh: float = 20.0
    default_capacity_kwh: float = 100.0
    default_max_power_w: float = DEFAULT_MAX_POWER_W
    min_history: int = 3
    unmet_penalty_per_kwh: float = 10.0
    strategy_kind: str = "cost"
    tie_break: float | None = 1e-2
    """`objective.tie_break` of the instance: the lowest peak among equal-cost schedules (module doc);
    above the worker's stickiness, so a lower peak wins over staying on the previous plan."""
    estimate_share: float = 0.85
    """Share of the site's typical rest (`typical_rest_kwh`) a session without needs is planned for
    (module doc, "energy")."""
    time_preference_per_step: float = 0.0
    """Added to the LP's price per kWh for each step into the horizon (not to the tariff sent to
    EVs). 0: equal prices tie and the lowest-peak spread wins (as in `evfleet optimize`); a positive
    value makes the earliest steps win, which packs every EV into the first cheap steps (the demo
    peaked at 124 kW at 23:00 with 1e-6, against a flat night for the same cost)."""


@dataclass(frozen=True)
class EvseState:
    """One EVSE as Redis describes it."""

    station_id: str
    evse_id: int
    online: bool = True
    steerable: bool = True
    max_power_w: float = DEFAULT_MAX_POWER_W
    phases: int = 3
    voltage_v: float = DEFAULT_VOLTAGE_V
    rate_unit: str = DEFAULT_RATE_UNIT
    """Defaults as `evfleet.records.EvseRecord` decodes an EVSE that reported nothing."""
    transaction_id: str = ""
    """The running transaction's OCPP transactionId (unique only within the station)."""
    applied_max_w: float | None = None
    """Highest limit from now on of the last profile the station accepted (None = none known)."""
    applied_tx: str = ""
    """tx_ref of that profile record (it counts only for that session)."""
    default_w: float | None = None
    """TxDefaultProfile limit the station accepted (what a plug-in draws before admission)."""
    metered_max_w: float = 0.0
    """Highest power metered on the EVSE."""
    noncompliant_w: float | None = None
    """What the EVSE draws while it ignores its limit (None = compliant)."""

    def fixed_w(self, session_txid: str | None) -> float | None:
        """Load the optimizer cannot steer (None = a steerable charger), as the csms counts it.

        Refusing stations at their metered maximum; idle EVSEs at their TxDefaultProfile (their
        maximum when none); offline stations with a session at their last accepted limit for
        THAT session (their maximum when none); non-compliant ones at least at what they draw.
        """
        top = max(self.max_power_w, self.metered_max_w)
        if not self.steerable:
            value = top
        elif not session_txid:
            value = min(self.default_w, top) if self.default_w is not None else top
        elif not self.online:
            value = self.applied_max_w if (self.applied_tx == session_txid
                                           and self.applied_max_w is not None) else top
        elif self.noncompliant_w is not None:
            value = max(self.noncompliant_w, self.applied_max_w or 0.0)
        else:
            return None
        return max(value, self.noncompliant_w or 0.0)

    @property
    def key(self) -> str:
        """`sid/eid`, the EVSE's id in plans and instances."""
        return f"{self.station_id}/{self.evse_id}"


@dataclass(frozen=True)
class SessionState:
    """A running transaction and what the EV said about its needs."""

    tx_ref: str
    """The transaction's key (station, transactionId, generation): the EV's id in the instance."""
    station_id: str
    evse_id: int
    started_at: datetime
    id_token: str = ""
    energy_wh: float = 0.0
    power_w: float = 0.0
    soc: float | None = None
    needs: Mapping[str, Any] | None = None
    energy_at_needs_wh: float | None = None
    """Meter energy of the transaction when the needs arrived (None = unknown, use 0)."""
    charging_state: str = ""
    """OCPP chargingState of the transaction (`SuspendedEV`: the EV takes no energy although offered)."""
    metered_at: datetime | None = None
    """When `energy_wh` and `power_w` were read at the station (None: unknown, nothing extrapolated)."""

    @property
    def key(self) -> str:
        """`sid/eid` of the EVSE the session runs on."""
        return f"{self.station_id}/{self.evse_id}"


@dataclass(frozen=True)
class SiteState:
    """Everything about one site the instance is built from."""

    site_id: str
    limit_kw: float
    evses: Sequence[EvseState]
    sessions: Sequence[SessionState]
    prices: Mapping[str, Any] | None = None
    history_kwh: Mapping[str, Sequence[tuple[int, float]]] = field(default_factory=dict)
    """id token -> [(weekday 0=Monday, delivered kWh), ...] of past sessions."""


@dataclass(frozen=True)
class Snapshot:
    """The instance and how to map its results back to EVSEs."""

    instance: Instance
    ev_evse: dict[str, str]
    """EV id (the transaction's tx_ref) -> `sid/eid`."""
    fixed_load_kw: float
    notes: dict[str, str]
    """EV id -> how departure/energy were obtained (needs, forecast, default)."""
    prices: list[float]


def floor_to_step(now: datetime, step_minutes: int) -> datetime:
    """Start of the step containing `now`."""
    step_s = step_minutes * 60
    ts = math.floor(now.timestamp() / step_s) * step_s
    return datetime.fromtimestamp(ts, UTC)


def resample_prices(prices: Mapping[str, Any] | None, start: datetime, step_minutes: int,
                    steps: int) -> list[float]:
    """Import price per horizon step from the site's price series.

    The price of a step is the series value in force at the step's start; before the series:
    its first value; after it: the value 24 h earlier (day-ahead prices repeat daily) if the
    series covers a day, else its last value. No series: `DEFAULT_PRICE` everywhere.
    """
    if not prices or not prices.get("import_price"):
        return [DEFAULT_PRICE] * steps
    series = [float(p) for p in prices["import_price"]]
    p_start = parse_ts(str(prices["start"]))
    p_step_s = float(prices.get("step_minutes", step_minutes)) * 60
    span_s = p_step_s * len(series)
    out = []
    for i in range(steps):
        offset = (start + timedelta(minutes=i * step_minutes) - p_start).total_seconds()
        if offset >= span_s and span_s >= 86_400:
            offset -= math.ceil((offset - span_s + 1) / 86_400) * 86_400
        idx = min(len(series) - 1, max(0, int(offset // p_step_s)))
        out.append(series[idx])
    return out


def gamma_fit(samples: Sequence[float]) -> tuple[float, float]:
    """Method-of-moments Gamma(k, theta) of positive samples (k = mean^2/var, theta = var/mean)."""
    mean = statistics.fmean(samples)
    var = statistics.pvariance(samples) if len(samples) > 1 else 0.0
    if mean <= 0:
        raise ValueError("gamma_fit needs a positive mean")
    if var <= 1e-12:
        return 1e6, mean / 1e6
    return mean * mean / var, var / mean


def forecast_energy_kwh(history: Sequence[tuple[int, float]], weekday: int, min_history: int) -> float | None:
    """Seed 001 next-day forecast E = k * theta of the weekday's (or all days') Gamma law."""
    same_day = [e for d, e in history if d == weekday and e > 0]
    pool = same_day if len(same_day) >= min_history else [e for _, e in history if e > 0]
    if len(pool) < min_history:
        return None
    k, theta = gamma_fit(pool)
    return k * theta


def ev_max_power_w(evse: EvseState, needs: Mapping[str, Any] | None) -> float:
    """The EVSE maximum, capped by the EV's own max current/power from its needs."""
    limit = evse.max_power_w
    if needs:
        if needs.get("ev_max_current_a"):
            limit = min(limit, a_to_w(float(needs["ev_max_current_a"]), evse.phases, evse.voltage_v))
        if needs.get("ev_max_power_w"):
            limit = min(limit, float(needs["ev_max_power_w"]))
    return max(limit, 1.0)


NEEDS_TOLERANCE_WH = 500.0
"""What is left of an EV's request below this, while the EV refuses power (SuspendedEV), is meter lag
(the csms's meter reading is up to one TransactionEvent interval old), not a need: the same
tolerance the csms uses to tell a repeated needs message from a new one."""


def site_dwell_h(sessions: Sequence[SessionState], cfg: SnapshotConfig) -> float | None:
    """The site's typical dwell [h]: the lower quartile of the dwells its running sessions announced
    (departureTime - start), when at least `cfg.min_announced` did; else None."""
    dwells = sorted((parse_ts(str(s.needs["departure_time"])) - s.started_at).total_seconds() / 3600.0
                    for s in sessions if s.needs and s.needs.get("departure_time"))
    if len(dwells) < max(1, cfg.min_announced):
        return None
    return max(cfg.min_dwell_h, dwells[(len(dwells) - 1) // 4])


def site_energies_kwh(sessions: Sequence[SessionState], cfg: SnapshotConfig) -> list[float] | None:
    """The session energies [kWh] the site's running sessions announced (meter energy when their needs
    came + energyAmount), when at least `cfg.min_announced` did; else None."""
    energies = [((s.energy_at_needs_wh or 0.0) + float(s.needs["energy_amount_wh"])) / 1000.0
                for s in sessions if s.needs and s.needs.get("energy_amount_wh") is not None]
    return energies if len(energies) >= max(1, cfg.min_announced) else None


TAIL_SESSIONS = 5
"""Announced sessions that make the tail of the site's energies (`typical_rest_kwh`)."""
MIN_REST_KWH = 1.0
"""What a session that still takes power is planned to need at least, when it has drawn more than the site's
announced sessions tell (`typical_rest_kwh`)."""


def typical_rest_kwh(announced_kwh: Sequence[float], delivered_kwh: float) -> float | None:
    """Expected rest [kWh] of a session that has drawn `delivered_kwh`, from the announced session
    energies: the mean of those above `delivered_kwh`, less it; at least the tail's mean excess once
    fewer than TAIL_SESSIONS are above (None when nothing was announced).

    A session without needs is one of the site's sessions whose energy nobody announced: its expected
    total is the site's typical one, and once it has drawn some, only the announced sessions that
    were larger than that are still like it. Near the largest announced energy that mean falls to 0
    (a session 1 Wh below it was planned 1 Wh more, and stayed there: 13 kWh short of a 31 kWh need
    in the demo's seed 5), so a session that has drawn more than all but a few still needs what a
    session at the start of the tail needs on average: the mean of the TAIL_SESSIONS largest announced
    energies above the smallest of them, at least MIN_REST_KWH. It is re-estimated at every re-plan, so a
    session that keeps taking power keeps being planned until it reports full (SuspendedEV)."""
    if not announced_kwh:
        return None
    above = [e for e in announced_kwh if e > delivered_kwh + 1e-6]
    rest = statistics.fmean(above) - delivered_kwh if above else 0.0
    if len(above) >= TAIL_SESSIONS:
        return rest
    tail = sorted(announced_kwh)[-TAIL_SESSIONS:]
    return max(rest, statistics.fmean(tail) - tail[0], MIN_REST_KWH)


def _departure(session: SessionState, now: datetime, cfg: SnapshotConfig,
               typical_dwell_h: float | None = None) -> tuple[datetime, str]:
    needs = session.needs or {}
    if needs.get("departure_time"):
        dep, how = parse_ts(str(needs["departure_time"])), "needs"
    elif typical_dwell_h is not None:
        dep, how = session.started_at + timedelta(hours=typical_dwell_h), "site_typical"
    else:
        dep, how = session.started_at + timedelta(hours=cfg.default_dwell_h), "default"
    earliest = now + timedelta(hours=cfg.min_dwell_h)
    if dep < earliest:
        dep, how = earliest, how + "+min_dwell"
    return dep, how


METER_EXTRAPOLATION_MAX_S = 600.0
"""At most this long after a reading is its power taken as still drawn (`drawn_since_reading_wh`)."""


def drawn_since_reading_wh(session: SessionState, now: datetime, not_before: datetime | None = None) -> float:
    """Energy [Wh] the EV drew between its last meter reading (or `not_before`, if later: its needs
    arrived after the reading) and `now`, at the power that reading showed (for at most
    `METER_EXTRAPOLATION_MAX_S`; 0 without a reading time or power).

    The horizon starts at `now`: what the EV drew since the reading is no longer needed. Counted as
    still needed, it looked like the EV had fallen behind its plan by up to a meter interval of
    charging (60 s at 8 kW: 0.13 kWh), which near the end of a tight plan moved its last step by more
    than K16's threshold: a TxProfile and an ISO 15118 renegotiation although nothing had changed
    (tests/iso15118/test_josev_prices.py, seen on a loaded machine where readings arrive later)."""
    if session.metered_at is None or session.power_w <= 0.0:
        return 0.0
    since = max(session.metered_at, not_before) if not_before is not None else session.metered_at
    elapsed_s = (now - since).total_seconds()
    return session.power_w * min(max(elapsed_s, 0.0), METER_EXTRAPOLATION_MAX_S) / 3600.0


def _energy_kwh(session: SessionState, now: datetime, cfg: SnapshotConfig,
                history: Sequence[tuple[int, float]],
                announced_kwh: Sequence[float] | None = None) -> tuple[float, str]:
    needs = session.needs or {}
    if needs.get("energy_amount_wh") is not None:
        since = max(0.0, session.energy_wh - (session.energy_at_needs_wh or 0.0)) + drawn_since_reading_wh(
            session, now, parse_iso_or_none(needs.get("received_at")))
        left_wh = max(0.0, float(needs["energy_amount_wh"]) - since)
        if session.charging_state == "SuspendedEV" and left_wh <= NEEDS_TOLERANCE_WH:
            return 0.0, "ev_full"  # a lagging meter leaves a residue; the EV takes nothing: it is done
        return left_wh / 1000.0, "needs"
    if session.charging_state == "SuspendedEV":
        return 0.0, "ev_full"  # no needs announced and the EV refuses the power offered: it is full
    delivered = session.energy_wh / 1000.0
    forecast = forecast_energy_kwh(history, session.started_at.weekday(), cfg.min_history)
    if forecast is not None:
        return max(0.0, forecast - delivered), "gamma_forecast"
    rest = typical_rest_kwh(announced_kwh, delivered) if announced_kwh else None
    if rest is not None:
        return rest * cfg.estimate_share, "site_typical"
    return max(0.0, cfg.default_energy_kwh - delivered), "default"


def build_instance(site: SiteState, now: datetime, cfg: SnapshotConfig) -> Snapshot:
    """The rolling-horizon instance of a site at `now` (see module doc for the defaults).

    The horizon starts at `now`: step 0 is the rest of the step `now` falls in (`first_step_minutes`),
    so a plan made late in a step never counts energy before now. An EV's last step is the last one
    that ends by its departure (rounded down), so no energy is counted after it leaves.
    """
    start = floor_to_step(now, cfg.step_minutes)
    step_h = cfg.step_minutes / 60.0
    steps = cfg.horizon_steps
    elapsed_h = (now - start).total_seconds() / 3600.0
    first_step_minutes = (step_h - elapsed_h) * 60.0 if elapsed_h > 1e-9 else None
    evses = {e.key: e for e in site.evses}
    fixed_w = 0.0
    chargers: list[dict[str, Any]] = []
    evs: list[dict[str, Any]] = []
    ev_evse: dict[str, str] = {}
    notes: dict[str, str] = {}
    sessions = {s.key: s for s in site.sessions}
    for key, evse in sorted(evses.items()):
        session = sessions.get(key)
        fixed = evse.fixed_w(session.tx_ref if session else None)
        if fixed is not None:
            fixed_w += fixed
            continue
        chargers.append({"id": key, "max_kw": max(evse.max_power_w, 1.0) / 1000.0})
    charger_ids = {str(c["id"]) for c in chargers}
    typical_dwell_h = site_dwell_h(site.sessions, cfg)
    announced_kwh = site_energies_kwh(site.sessions, cfg)
    for key, session in sorted(sessions.items()):
        if key not in charger_ids:
            continue
        evse = evses[key]
        dep, dep_how = _departure(session, now, cfg, typical_dwell_h)
        # the last step that ends by departure (no energy is counted after the EV left)
        departure = min(steps, max(1, math.floor((dep - start).total_seconds() / (step_h * 3600) + 1e-9)))
        max_kw = ev_max_power_w(evse, session.needs) / 1000.0
        history = site.history_kwh.get(session.id_token, ())
        energy, e_how = _energy_kwh(session, now, cfg, history, announced_kwh)
        reachable = max_kw * (departure * step_h - elapsed_h)
        energy = round(max(0.0, min(energy, reachable)), 6)
        capacity = max(cfg.default_capacity_kwh, energy + 1e-3)
        evs.append({"id": session.tx_ref, "charger": key, "arrival": 0, "departure": departure,
                    "energy_kwh": energy, "max_kw": max_kw, "capacity_kwh": capacity,
                    "energy_estimated": e_how not in ("needs", "ev_full")})
        ev_evse[session.tx_ref] = key
        notes[session.tx_ref] = f"departure={dep_how} energy={e_how}"
    fixed_kw = fixed_w / 1000.0
    prices = resample_prices(site.prices, start, cfg.step_minutes, steps)
    instance = Instance.model_validate({
        "start": start, "step_minutes": cfg.step_minutes, "steps": steps,
        "first_step_minutes": first_step_minutes,
        "site": {"import_limit_kw": max(0.0, site.limit_kw),
                 "base_load_kw": min(fixed_kw, max(0.0, site.limit_kw))},
        "tariff": {"import_price": [p + cfg.time_preference_per_step * i for i, p in enumerate(prices)]},
        "chargers": chargers, "evs": evs,
        "objective": {"kind": cfg.strategy_kind, "unmet_penalty_per_kwh": cfg.unmet_penalty_per_kwh,
                      "tie_break": cfg.tie_break},
    })
    return Snapshot(instance, ev_evse, fixed_kw, notes, prices)
