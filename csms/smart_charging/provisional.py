"""Who shares the headroom a site's plan leaves, and how much (pure, no I/O).

Three situations hand out headroom without a (covering) plan; each picks its sharers here and
gives them a water-filled share (`budget.fair_shares`) of what everything else leaves:

- **provisional** (a NotifyEVChargingNeeds arrived, issue 12's fast first answer): only the
  sessions that just announced their needs share; everything else (planned sessions, other
  interim/provisional ones, fixed loads, idle reservations) keeps what it has. The share comes
  only from unallocated headroom, so no other EVSE has to be lowered first: one round trip.
- **late** (a session got no plan within `interim_profile_after_s`, the optimizer is alive):
  sessions WITH a current plan keep their planned limits; the sessions without one share what
  the plan leaves (site limit minus planned, reserved, unsteerable and offline budgets).
- **silent** (no plan arrived for `optimizer_silent_after_s` real seconds since a session
  became late, and none for any other site either): the optimizer is taken as gone; every
  steerable session re-shares the headroom. While plans for other sites keep coming the optimizer
  is alive and behind (one worker for many sites): the site stays late, not silent, for up to
  `BEHIND_FACTOR` times that bound (a re-share of every session there would only be undone by the
  plan on its way, a TxProfile per session each time).

The share of each sharer is a *series*: at every instant from now on, the headroom the others
leave at that instant is water-filled among the sharers. So at every instant the sum of the
others and the shares is <= the site limit (the rule of ARCHITECTURE.md), and a plan that
packs into a cheap window later does not stop a new EV from charging now.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from csms.smart_charging import budget, planner
from csms.smart_charging.planner import Series

K = TypeVar("K", bound=Hashable)


BEHIND_FACTOR = 4.0
"""How many `optimizer_silent_after_s` a late site waits for its plan while the optimizer is seen
planning other sites, before it counts as silent anyway (a worker failing on this one site)."""


def optimizer_silent(late_since_s: float | None, now_s: float, bound_s: float,
                     last_plan_any_s: float | None = None) -> bool:
    """True once a site has waited for a plan longer than `bound_s` (monotonic seconds) while no
    plan for any site came within `bound_s` (`last_plan_any_s`: the latest, None if unknown), or
    longer than `BEHIND_FACTOR` x `bound_s` whatever came (module doc)."""
    if late_since_s is None:
        return False
    working = last_plan_any_s is not None and now_s - last_plan_any_s <= bound_s
    return now_s - late_since_s > (BEHIND_FACTOR * bound_s if working else bound_s)


def sharers(planned: Mapping[K, bool], arrivals: frozenset[K] | None, silent: bool) -> list[K]:
    """The candidate sessions that share (module doc), in a stable order.

    `planned`: every online, steerable, compliant session -> it holds an accepted profile for
    the site's current plan. `arrivals`: sessions whose needs just arrived (provisional pass),
    None for a late/silent pass.
    """
    keys = sorted(planned, key=str)
    if silent:
        return keys
    if arrivals is not None:
        return [k for k in keys if k in arrivals and not planned[k]]
    return [k for k in keys if not planned[k]]


def headroom_shares(others: Sequence[Series], budget_w: float, caps_w: Mapping[K, float],
                    mins_w: Mapping[K, float], now_s: float,
                    masks: Mapping[K, Series] | None = None) -> dict[K, Series]:
    """Each sharer's series: at every change point of `others` (and `masks`) from `now_s` on, the
    headroom (budget - sum of others, never negative) water-filled among the sharers.

    `masks`: per sharer, a series capping it over time (e.g. `cheap_mask`); a masked sharer
    leaves its part to the others. Sum of the shares + others <= `budget_w` at every instant
    from `now_s` on (where the others alone already exceed it, the shares are 0).
    """
    out: dict[K, Series] = {}
    planner.drain(headroom_shares_steps(others, budget_w, caps_w, mins_w, now_s, masks, out))
    return out


def headroom_shares_steps(others: Sequence[Series], budget_w: float, caps_w: Mapping[K, float],
                          mins_w: Mapping[K, float], now_s: float, masks: Mapping[K, Series] | None,
                          out: dict[K, Series]) -> Iterator[None]:
    """`headroom_shares` into `out`, a step (a `yield`) after every `budget.STEP_KEYS` sharers of its
    per-sharer loops (`budget.fair_shares_steps`): an async caller leaves the event loop between
    steps (20,000 sharers were 25-75 ms in one stretch, issue 14). The same arithmetic in the same
    order as in one go: the shares are the same however the steps are spread."""
    masks = masks or {}
    points = planner.grid([*others, *masks.values()], now_s)
    load = planner.total(list(others), points)
    out.clear()
    if len(points) == 1 and not masks:  # one instant (every other EVSE counts a constant)
        yield from _constant_shares(points[0], budget_w - load[0], caps_w, mins_w, out)
        return
    keys = list(caps_w)
    out.update({k: [] for k in keys})
    step = budget.STEP_KEYS
    for t, used in zip(points, load, strict=True):
        caps_t = caps_w if not masks else {
            k: min(c, planner.value_at(masks[k], t)) if k in masks else c for k, c in caps_w.items()}
        shares: dict[K, float] = {}
        yield from budget.fair_shares_steps(budget_w - used, caps_t, mins_w, shares)
        ordered = list(shares)  # keys only: a (key, share) tuple each was 20,000 objects alive
        for lo in range(0, len(ordered), step):
            for k in ordered[lo:lo + step]:
                w, series = shares[k], out[k]
                # a rise within 1e-6 W is not a new point (float noise), a fall always is: a share
                # kept above what the headroom leaves would exceed the budget (by microwatts)
                if not series or w - series[-1][1] > 1e-6 or w < series[-1][1]:
                    series.append((t, w))
            yield


def _constant_shares(t: float, headroom_w: float, caps_w: Mapping[K, float], mins_w: Mapping[K, float],
                     out: dict[K, Series]) -> Iterator[None]:
    """`headroom_shares_steps` at a single point `t` (no mask: a mask's change points are points):
    each share is the one-point series [(t, its fair share)], the same as the loop there appends,
    and sharers with equal shares get the same series object (read-only, as every series: on a
    full site most of 20,000 sharers share 0 W, one list and one tuple each per pass, issue 14)."""
    shares: dict[K, float] = {}
    yield from budget.fair_shares_steps(headroom_w, caps_w, mins_w, shares)
    of_w: dict[float, Series] = {}
    ordered = list(shares)
    for lo in range(0, len(ordered), budget.STEP_KEYS):
        for k in ordered[lo:lo + budget.STEP_KEYS]:
            w = shares[k]
            series = of_w.get(w)
            if series is None or (w == 0.0 and math.copysign(1.0, w) != math.copysign(1.0, series[0][1])):
                series = [(t, w)]  # (-0.0 and 0.0 are one key: each keeps its own sign)
                of_w.setdefault(w, series)
            out[k] = series
        yield


@dataclass(frozen=True)
class PlanView:
    """What the sharing needs of a site's current plan: its sessions and its price series."""

    refs: dict[str, str]
    """`sid/eid` -> tx_ref of the sessions the plan covers."""
    prices: list[float] | None = None
    start_s: float = 0.0
    step_s: float = 900.0


def fits(candidate: Series, ceiling: Series, now_s: float) -> bool:
    """The profile built for a share never allows more than the share (profile rounding only lowers)."""
    return planner.is_below(candidate, ceiling, now_s)


def cheap_mask(prices: Sequence[float] | None, start_s: float, step_s: float, now_s: float,
               until_s: float | None, cap_w: float) -> Series | None:
    """`cap_w` where the plan's price is the lowest of the session's stay, 0 elsewhere (None: no prices).

    While the optimizer is alive its plan follows within seconds, so a share handed out before
    it (provisional, late) only uses the cheapest steps of [now, departure) of the plan's price
    series: a share never buys at a price the plan would avoid. After departure: 0.
    """
    if not prices or step_s <= 0:
        return None
    first = max(0, int((now_s - start_s) // step_s))
    last = len(prices) if until_s is None else min(len(prices), math.ceil((until_s - start_s) / step_s))
    window = [float(p) for p in prices[first:max(last, first + 1)]]
    if not window:
        return None
    low = min(window)
    out: Series = []
    for i in range(first, len(prices)):
        w = cap_w if i < max(last, first + 1) and float(prices[i]) <= low + 1e-9 else 0.0
        if not out or out[-1][1] != w:
            out.append((max(now_s, start_s + i * step_s), w))
    return out
