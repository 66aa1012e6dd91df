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

from evfleet.profile import a_to_w
from optimizer.problem import Instance, Schedule
from optimizer.snapshot import SiteState

TOLERANCE_KW = 1e-6


def _per_step(value: float | list[float], steps: int) -> list[float]:
    return list(value) if isinstance(value, list) else [float(value)] * steps


def needs_reshaping(power_kw: list[float], min_kw: float) -> bool:
    """True if some step plans a power strictly between 0 and `min_kw`."""
    return any(TOLERANCE_KW < p < min_kw - TOLERANCE_KW for p in power_kw)


def enforce_min_power(instance: Instance, schedule: Schedule, min_kw: Mapping[str, float]) -> Schedule:
    """`schedule` with every EV in `min_kw` charging at 0 or at least its minimum (see module doc)."""
    if not any(ev_id in schedule.ev_power_kw and needs_reshaping(schedule.ev_power_kw[ev_id], kw)
               for ev_id, kw in min_kw.items() if kw > 0):
        return schedule  # nothing between 0 and a minimum (the common case): no copy, no work
    steps = instance.steps
    step_hours = instance.step_hours()
    limit = _per_step(instance.site.import_limit_kw, steps)
    prices = _per_step(instance.tariff.import_price, steps)
    base = _per_step(instance.site.base_load_kw, steps)
    pv = _per_step(instance.site.pv_kw, steps)
    power = {ev_id: list(p) for ev_id, p in schedule.ev_power_kw.items()}
    used = [base[t] - pv[t] + sum(p[t] for p in schedule.storage_power_kw.values())
            + sum(p[t] for p in power.values()) for t in range(steps)]
    charger_max = {c.id: c.max_kw for c in instance.chargers}
    reshaped = 0
    for ev in sorted(instance.evs, key=lambda e: (e.departure, e.id)):
        floor_kw = min_kw.get(ev.id, 0.0)
        plan = power.get(ev.id)
        if floor_kw <= 0 or plan is None or not needs_reshaping(plan, floor_kw):
            continue
        if any(p < 0 for p in plan):
            continue  # V2G plans are left alone
        energy_kwh = sum(p * h for p, h in zip(plan, step_hours, strict=True))
        for t in range(steps):
            used[t] -= plan[t]
            plan[t] = 0.0
        ev_max = min(ev.max_kw, charger_max.get(ev.charger or "", ev.max_kw))
        window = range(ev.arrival, min(ev.departure, steps))
        nominal_h = instance.step_minutes / 60.0
        fills = max(1, int(energy_kwh / (floor_kw * nominal_h) + 1e-9))  # steps it fills at the minimum
        level_kw = min(ev_max, max(floor_kw, energy_kwh / (fills * nominal_h)))
        for t in sorted(window, key=lambda s: (prices[s], used[s], s)):
            if energy_kwh <= TOLERANCE_KW:
                break
            room_kw = min(ev_max, limit[t] - used[t])
            if room_kw < floor_kw - TOLERANCE_KW:
                continue
            p = max(floor_kw, min(room_kw, level_kw, energy_kwh / step_hours[t]))
            plan[t] = p
            used[t] += p
            energy_kwh -= p * step_hours[t]
        reshaped += 1
    if not reshaped:
        return schedule
    note = f"{reshaped} EV plan(s) reshaped to the EV minimum power"
    message = f"{schedule.message}; {note}" if schedule.message else note
    return schedule.model_copy(update={"ev_power_kw": power, "message": message})


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
