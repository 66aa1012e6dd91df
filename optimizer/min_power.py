"""Minimum charging power: an EV charges at 0 or at least its minimum, never in between.

An AC EV cannot charge below its minimum current (IEC 61851: no pilot below 6 A; ISO 15118
EVs announce `evMinCurrent`), and `evfleet.txprofile` turns a limit below that minimum into
0 (pause). The cost LP does not know the minimum and, where prices tie, spreads an EV's energy
thinly over many steps, so such an EV would never charge. `enforce_min_power` reshapes the
plan of each EV with a minimum: its planned energy goes into its cheapest steps at one level
at or just above the minimum (as many steps as the energy fills at the minimum, not fewer at
full power), among equal prices into the steps with the least load planned so far (then the
earliest), never above the EV's or the charger's maximum, and only where the site has room, so
the site limit still holds at every step. Many EVs sharing a cheap window thus fill it evenly
instead of all starting at full power in its first step (the lowest peak for the same cost).

Pure (data in, data out). The schedule's metrics still describe the LP solution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from evfleet.profile import a_to_w
from optimizer.problem import EV, Instance, Schedule
from optimizer.snapshot import SiteState

TOLERANCE_KW = 1e-6
RESIDUE_KWH = 0.1
"""Energy a repair moves below which it is solver noise (`_settle_residue`), not energy to level."""


def _per_step(value: float | list[float], steps: int) -> list[float]:
    return list(value) if isinstance(value, list) else [float(value)] * steps


def needs_reshaping(power_kw: list[float], min_kw: float) -> bool:
    """True if some step plans a power strictly between 0 and `min_kw`."""
    return any(TOLERANCE_KW < p < min_kw - TOLERANCE_KW for p in power_kw)


def enforce_min_power(instance: Instance, schedule: Schedule, min_kw: Mapping[str, float]) -> Schedule:
    """`schedule` with every EV in `min_kw` charging at 0 or at least its minimum (see module doc)."""
    thin = [ev for ev in sorted(instance.evs, key=lambda e: (e.departure, e.id))
            if min_kw.get(ev.id, 0.0) > 0 and ev.id in schedule.ev_power_kw
            and needs_reshaping(schedule.ev_power_kw[ev.id], min_kw[ev.id])
            and not any(p < 0 for p in schedule.ev_power_kw[ev.id])]  # V2G plans are left alone
    if not thin:
        return schedule  # nothing between 0 and a minimum (the common case): no copy, no work
    site = _Site.of(instance, schedule)
    charger_max = {c.id: c.max_kw for c in instance.chargers}
    full: list[tuple[EV, float, float]] = []
    for ev in thin:
        floor_kw = min_kw[ev.id]
        ev_max = min(ev.max_kw, charger_max.get(ev.charger or "", ev.max_kw))
        if ev.reference_kw is not None and _repair_near(site, ev, floor_kw, ev_max):
            continue
        full.append((ev, floor_kw, ev_max))
    # all thin plans leave the site first, so together they free the room they all used (one by one,
    # the first EV would find only its own thin slice free where the site limit binds, and lose energy)
    energy = {}
    for ev, _, _ in full:
        plan = site.power[ev.id]
        energy[ev.id] = sum(p * h for p, h in zip(plan, site.hours, strict=True))
        site.set(ev.id, [0.0] * site.steps)
    for ev, floor_kw, ev_max in full:
        _place(site, ev, energy[ev.id], floor_kw, ev_max, instance.step_minutes / 60.0)
    note = f"{len(thin)} EV plan(s) reshaped to the EV minimum power"
    message = f"{schedule.message}; {note}" if schedule.message else note
    return schedule.model_copy(update={"ev_power_kw": site.power, "message": message})


@dataclass
class _Site:
    """The plans being reshaped and the site's load per step."""

    power: dict[str, list[float]]
    used: list[float]
    limit: list[float]
    prices: list[float]
    hours: list[float]

    @property
    def steps(self) -> int:
        """Number of steps."""
        return len(self.used)

    @classmethod
    def of(cls, instance: Instance, schedule: Schedule) -> _Site:
        """The site as `schedule` plans it."""
        steps = instance.steps
        base = _per_step(instance.site.base_load_kw, steps)
        pv = _per_step(instance.site.pv_kw, steps)
        power = {ev_id: list(p) for ev_id, p in schedule.ev_power_kw.items()}
        used = [base[t] - pv[t] + sum(p[t] for p in schedule.storage_power_kw.values())
                + sum(p[t] for p in power.values()) for t in range(steps)]
        return cls(power, used, _per_step(instance.site.import_limit_kw, steps),
                   _per_step(instance.tariff.import_price, steps), instance.step_hours())

    def set(self, ev_id: str, plan: list[float]) -> None:
        """Replace an EV's plan, keeping the site load up to date."""
        old = self.power[ev_id]
        for t in range(self.steps):
            self.used[t] += plan[t] - old[t]
        self.power[ev_id] = plan

    def room(self, t: int) -> float:
        """Site headroom at step t [kW]."""
        return self.limit[t] - self.used[t]


def site_excess_kw(instance: Instance, schedule: Schedule, tol_kw: float = 1e-3) -> dict[int, float]:
    """{step: kW above the site's import limit} where `schedule` exceeds it (fixed load, PV and storage
    counted as planned); empty when it holds at every step."""
    site = _Site.of(instance, schedule)
    return {t: used - limit for t, (used, limit) in enumerate(zip(site.used, site.limit, strict=True))
            if used > limit + tol_kw}


def _repair_near(site: _Site, ev: EV, floor_kw: float, ev_max: float) -> bool:
    """Round a plan that stays near its reference (the standing plan, already at 0 or >= the minimum).

    A step below the minimum goes to the minimum where the reference charges there and the site has
    room for it, else to 0; the
    energy this moves is taken from or given to the plan's other charging steps within the EV's
    minimum, its maximum and the site limit: given to the cheapest steps first, taken from the
    costliest first, and within one price back toward the reference first, then levelled
    (`level_fill`: the steps where the site's load is lowest are raised first, the highest lowered
    first), so the energy a re-plan moves never piles onto one step (giving it to the earliest step
    raised each re-plan's first step by 1-3 kW in the demo, its peak). A residue up to RESIDUE_KWH (solver
    noise) still goes into the first cheap steps (`_settle_residue`), so an unchanged re-plan leaves the
    later steps exactly as they were (levelled, it drifted them and the 500-station HLC test's EVs
    renegotiated after an unchanged re-plan, 3 runs of 3). So a re-plan that keeps the
    standing plan keeps it exactly, instead of reshaping the EV from scratch (which moves its energy
    to other steps and renegotiates it for nothing). Returns False (plan unchanged) when the energy
    cannot be kept.
    """
    plan, ref = site.power[ev.id], ev.reference_kw or []
    hours = site.hours
    new = list(plan)
    for t, p in enumerate(plan):
        if TOLERANCE_KW < p < floor_kw - TOLERANCE_KW:
            r = ref[t] if t < len(ref) else None
            fits = site.room(t) + p >= floor_kw - TOLERANCE_KW  # the site without this EV has room
            new[t] = floor_kw if fits and r is not None and r >= floor_kw - 1e-3 else 0.0
        elif p <= TOLERANCE_KW:
            new[t] = 0.0
    extra: float = sum((a - b) * h for a, b, h in zip(plan, new, hours, strict=True))  # to put back [kWh]
    on = [t for t in range(ev.arrival, min(ev.departure, site.steps)) if new[t] >= floor_kw - TOLERANCE_KW]
    if abs(extra) <= RESIDUE_KWH:  # solver noise: first (or last) steps only, the rest untouched
        return _settle_residue(site, ev, plan, new, on, extra, floor_kw, ev_max)
    giving = extra > 0
    sign = 1.0 if giving else -1.0
    for price in sorted({site.prices[t] for t in on}, reverse=not giving):
        tier = [t for t in on if site.prices[t] == price]
        h = np.array([hours[t] for t in tier])
        goal = np.array([_at(ref, t, new[t]) for t in tier])
        others = np.array([site.used[t] - plan[t] for t in tier])  # the site without this EV
        for toward_reference in (True, False):  # back toward the reference first (no renegotiation)
            if abs(extra) <= TOLERANCE_KW:
                break
            cur = np.array([new[t] for t in tier])
            if giving:
                cap = np.minimum(ev_max - cur, np.array([site.limit[t] for t in tier]) - others - cur)
            else:
                cap = cur - floor_kw
            if toward_reference:
                cap = np.minimum(cap, sign * (goal - cur))
            moved = level_fill(sign * (others + cur), np.clip(cap, 0.0, None), h, abs(extra))
            for t, m in zip(tier, moved.tolist(), strict=True):
                new[t] += sign * m
            extra -= sign * float(moved @ h)
    if abs(extra) > 1e-3:
        return False
    site.set(ev.id, new)
    return True


def _settle_residue(site: _Site, ev: EV, plan: list[float], new: list[float], on: list[int], extra: float,
                    floor_kw: float, ev_max: float) -> bool:
    """A residue of `extra` kWh (at most RESIDUE_KWH) given to the cheapest, earliest charging steps or taken
    from the dearest, latest: the plan's later steps stay exactly as they are (an unchanged re-plan moves
    nothing there, so nothing is renegotiated)."""
    hours = site.hours
    if extra > 0:
        for t in sorted(on, key=lambda s: (site.prices[s], s)):
            add = max(0.0, min(ev_max - new[t], site.room(t) + plan[t] - new[t], extra / hours[t]))
            new[t] += add
            extra -= add * hours[t]
    else:
        for t in sorted(on, key=lambda s: (-site.prices[s], -s)):
            take = max(0.0, min(new[t] - floor_kw, -extra / hours[t]))
            new[t] -= take
            extra += take * hours[t]
    if abs(extra) > 1e-3:
        return False
    site.set(ev.id, new)
    return True


def _at(values: list[float | None], t: int, default: float) -> float:
    """values[t], or `default` where it is missing or None."""
    v = values[t] if t < len(values) else None
    return default if v is None else v


def level_fill(load_kw: np.ndarray, cap_kw: np.ndarray, hours: np.ndarray, energy_kwh: float) -> np.ndarray:
    """Power a_t added per step, 0 <= a_t <= cap_t, with sum_t a_t h_t = energy (or every cap when it
    does not fit), raising the lowest loads to one level L: a_t = clip(L - load_t, 0, cap_t).

    The added energy is a non-decreasing piecewise-linear function of L with its breakpoints at load_t
    and load_t + cap_t: evaluated there and interpolated (no iteration)."""
    points = np.unique(np.concatenate([load_kw, load_kw + cap_kw]))
    added = (np.clip(points[:, None] - load_kw[None, :], 0.0, cap_kw[None, :]) * hours[None, :]).sum(axis=1)
    # the two ends of each rising stretch (a flat stretch between two is skipped): interpolating from
    # a flat stretch's first point put the level inside it, so less than `energy_kwh` was added
    up = np.diff(added) > 0
    ends = np.concatenate([up, [False]]) | np.concatenate([[False], up])
    if not ends.any():
        return np.zeros_like(load_kw)  # no room anywhere
    level = float(np.interp(energy_kwh, added[ends], points[ends]))
    return np.clip(level - load_kw, 0.0, cap_kw)


def _place(site: _Site, ev: EV, energy_kwh: float, floor_kw: float, ev_max: float, nominal_h: float) -> None:
    """Put `energy_kwh` into the EV's cheapest steps at one level at or just above its minimum; where
    fewer steps have room for that level than it needs, the steps it got are raised (lowest site load
    first, within the EV's maximum and the site limit) so the energy is kept."""
    plan = [0.0] * site.steps
    window = range(ev.arrival, min(ev.departure, site.steps))
    fills = max(1, int(energy_kwh / (floor_kw * nominal_h) + 1e-9))  # steps it fills at the minimum
    level_kw = min(ev_max, max(floor_kw, energy_kwh / (fills * nominal_h)))
    for t in sorted(window, key=lambda s: (site.prices[s], site.used[s], s)):
        if energy_kwh <= TOLERANCE_KW:
            break
        room_kw = min(ev_max, site.room(t))
        if room_kw < floor_kw - TOLERANCE_KW:
            continue
        p = max(floor_kw, min(room_kw, level_kw, energy_kwh / site.hours[t]))
        plan[t] = p
        site.used[t] += p
        energy_kwh -= p * site.hours[t]
    on = [t for t in window if plan[t] > 0]
    if energy_kwh > TOLERANCE_KW and on:  # fewer steps with room than it fills at the level: raise those
        cap = np.array([max(0.0, min(ev_max - plan[t], site.room(t))) for t in on])
        added = level_fill(np.array([site.used[t] for t in on]), cap,
                           np.array([site.hours[t] for t in on]), energy_kwh)
        for t, a in zip(on, added.tolist(), strict=True):
            plan[t] += a
            site.used[t] += a
    site.power[ev.id] = plan


def ev_min_kw(site: SiteState) -> dict[str, float]:
    """Minimum charging power [kW] per session (EV id = transaction id) from the EVs' charging needs.

    `ev_min_power_w` when announced, else `ev_min_current_a` x voltage x phases of the EVSE,
    with a 0.1 % margin so the profile's rounding down to 0.1 A stays at or above the minimum.
    """
    evses = {e.key: e for e in site.evses}
    out: dict[str, float] = {}
    for session in site.sessions:
        needs = session.needs or {}
        evse = evses.get(session.key)
        min_w = 0.0
        if needs.get("ev_min_power_w"):
            min_w = float(needs["ev_min_power_w"])
        elif needs.get("ev_min_current_a") and evse is not None:
            min_w = a_to_w(float(needs["ev_min_current_a"]), evse.phases, evse.voltage_v)
        if min_w > 0:
            out[session.tx_ref] = min_w * 1.001 / 1000.0
    return out
