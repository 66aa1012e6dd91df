"""The schedule a worker publishes, from the cost LP's: EV minimum power, then the levelled peak (pure).

`shape` runs `optimizer.min_power.enforce_min_power` and `optimizer.level.level_peak` on the LP's
schedule, as the worker and the demo's planning loop both do, and checks the result against the site
limit at every step. Each step promises to keep it; if the result breaks it anyway while the LP's own
schedule does not (the LP has the limit as a row), the LP's schedule is published instead: its steps
below an EV's minimum become pauses in the csms's profiles (`evfleet.txprofile`), so it can only draw
less. A plan over the limit is never applied in full by the csms (its increases stay blocked), and the
sessions it was made for waited at 0 W for the next plan: a re-plan near the standing plan rounded
steps up to the EV minimum where the site had no room (issue 14's failover test).
"""

from __future__ import annotations

from collections.abc import Mapping

from optimizer.level import level_peak
from optimizer.min_power import enforce_min_power, site_excess_kw
from optimizer.problem import Instance, Schedule


def shape(instance: Instance, lp: Schedule, min_kw: Mapping[str, float]) -> tuple[Schedule, dict[int, float]]:
    """(schedule to publish, {step: kW over the site limit} of the shaped schedule that was refused;
    empty when the shaped one is published)."""
    shaped = level_peak(instance, enforce_min_power(instance, lp, min_kw), min_kw)
    over = site_excess_kw(instance, shaped)
    if over and not site_excess_kw(instance, lp):
        return lp, over
    return shaped, {}
