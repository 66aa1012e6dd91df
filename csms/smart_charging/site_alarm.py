"""The site over-limit alarm's decision (pure, no I/O): metered sums in, raise / keep / clear out.

The watchdog (`watchdog.tick`) gives it, once per pass of a site, two metered sums of the site's
current readings (`metered.MeteredState.total_w`) and the site limit:

- `counted_w`: each reading counted for what it shows now. A reading taken before its session's
  latest accepted profile counts at most at the limit that profile sets (`MeteredState.caps`):
  after a mass re-share (a new session on a full site, a limit cut, a silent optimizer) the
  decreases are confirmed before the increases, but the lowered stations meter again only every
  30-60 s; their last readings, from before their decreases, beside the raised stations' fresh
  ones, summed above the limit although no applied limit ever was (32 false alarms in one loaded
  run before 567d9a4). A station marked non-compliant counts as metered;
- `as_taken_w`: every reading as metered.

The alarm is raised when `counted_w` stays above the limit (plus `tolerance_w`) for longer than
`after_s`: a genuine overshoot (a station above its applied limit, shown in its fresh reading, or
fresh readings summing above the limit) is counted in full and raises it after `after_s`. Once
raised it is cleared on `as_taken_w` only: the alarm's own corrective pass lowers the others at
once, and capping their readings at those lower limits would clear it before any reading showed
the site below the limit again.

This module decides; the watchdog writes the site's fields, the event, the metric and the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from csms.smart_charging.budget import Persistence

TOLERANCE_MIN_W = 100.0
"""Metered power may exceed the site limit by this much (or `TOLERANCE_FRACTION`) without alarm."""
TOLERANCE_FRACTION = 0.005


def tolerance_w(limit_w: float) -> float:
    """How far above `limit_w` the metered sum may be before it counts as over (meter rounding)."""
    return max(TOLERANCE_MIN_W, TOLERANCE_FRACTION * limit_w)


class Verdict(Enum):
    """What the watchdog does with the site's alarm after a pass."""

    QUIET = "quiet"
    """Not raised, and not to be raised (under the limit, or over for less than `after_s`)."""
    RAISE = "raise"
    """Raise it now (over for longer than `after_s`): event, site fields, corrective pass."""
    KEEP = "keep"
    """Raised before and still over."""
    CLEAR = "clear"
    """Raised before, and the readings as taken are under the limit again."""


@dataclass(frozen=True)
class Decision:
    """A pass's verdict and whether the site shows as over now (the `evfleet_site_over_limit` gauge)."""

    verdict: Verdict
    over: bool


@dataclass
class SiteAlarms:
    """The alarm state of the sites this node watches: since when each has been over, which are raised."""

    after_s: float
    """How long `counted_w` must stay over before the alarm is raised (`over_limit_after_s`)."""
    raised: set[str] = field(default_factory=set)
    _over: Persistence = field(init=False)

    def __post_init__(self) -> None:
        self._over = Persistence(self.after_s)

    def judge(self, site_id: str, counted_w: float, as_taken_w: float, limit_w: float,
              now_mono_s: float) -> Decision:
        """One pass of `site_id` at `now_mono_s` (monotonic s): the decision (module doc)."""
        bound_w = limit_w + tolerance_w(limit_w)
        over = counted_w > bound_w
        lasting = self._over.update(site_id, over, now_mono_s)
        raised = site_id in self.raised
        if not over and raised:  # cleared on the readings as taken, not on the lower limits sent since
            over = as_taken_w > bound_w
        if lasting and not raised:
            self.raised.add(site_id)
            return Decision(Verdict.RAISE, True)
        if raised and not over:
            self.raised.discard(site_id)
            return Decision(Verdict.CLEAR, False)
        return Decision(Verdict.KEEP if raised else Verdict.QUIET, over)
