"""Whole-site re-shares that cannot change anything, skipped (issue 14).

On a site in silent fallback mode (no optimizer: every steerable session shares the headroom
fairly) with more sessions than the headroom can give a sendable limit (100 kW among 20,000
sessions: 5 W each, 0 A once rounded), every whole-site pass after a session starts or ends, and
every interim pass, read all 20,000 EVSEs and worked out 20,000 shares to send nothing (0.7-1.4 s
of CPU each on the lease holder, the main tail of the 20,000-station harness run).

A full pass (`safety._share`) that sends nothing and finds every sharer counting 0 W at every
instant, without a minimum, at one constant level below every cap, leaves a `Quiet` record: the
level and its sharers. Until it is dropped, a re-share or interim pass (`pacing`) reads only the
EVSEs whose sessions started or ended since (`touch`) and those due an interim, and is skipped
when that proves a full pass would send nothing:

- the headroom has not grown (a budget above the record's, or any work other than a start, an
  end, a re-share, an interim pass or a watchdog pass that changed nothing, drops the record);
  ended sessions' EVSEs leave the sharers and count what they count now, at least the 0 W they
  counted as sharers;
- so the level is at most (level x sharers then) / sharers now, which must not exceed the
  record's level: each old sharer's share then allows what it allows now, 0 W (what a share
  allows is monotone in it), which is what it counts;
- each EVSE that joins the sharers counts 0 W, has no minimum, and that level's share allows it
  nothing more (`safety._changes` on it alone, the full pass's own test).

How the site limit holds: while the record holds, every sharer counts 0 W, so a full pass could
only raise limits; skipping it sends nothing and lowers nothing that would need lowering (an EVSE
that counts more than 0 W, or has a minimum, ends the skipping: a full pass runs). Changes to what
EVSEs count come from this node's own sends (defaults, plans, limit passes, probes, shares) or
from the watchdog, whose paths drop the record. A sharer that goes offline unseen makes the
level rise by a bounded amount; at worst that headroom is handed out late, never over the
limit: the record lives at most `QUIET_MAX_S`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from csms.smart_charging import planner, sending
from csms.smart_charging.actions import PASSES
from csms.smart_charging.evse import EvseInfo, ev_caps_w
from csms.smart_charging.planner import Series
from csms.smart_charging.work import Work
from evfleet.events import EventType

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

QUIET_MAX_S = 120.0
"""Longest a `Quiet` record is used: a full pass at least this often while sessions start or end."""

KEEPS = frozenset({EventType.TX_STARTED.value, EventType.TX_ENDED.value, Work.RESHARE, Work.INTERIM,
                   Work.TICK})
"""Work kinds that leave a site's record (`keep_for`); starts and ends are noted (`touch`)."""


@dataclass
class Quiet:
    """A silent fallback site whose last full pass sent nothing, every sharer at 0 W (module doc)."""

    level_w: float
    """Every sharer's share up to this allows it 0 W, what it counts."""
    headroom_w: float
    """What the sharers shared at the last full pass (at most what they share now)."""
    budget_w: float
    sharers: set[str]
    at: float = field(default_factory=time.monotonic)
    touched: set[tuple[str, int]] = field(default_factory=set)
    """EVSEs whose session started or ended since."""


def note(svc: SmartChargingService, site_id: str, sharers: list[str], shares: Mapping[str, Series],
         applied: Mapping[str, Series], caps: Mapping[str, float], mins: Mapping[str, float],
         budget_w: float) -> None:
    """After a silent full pass that sent nothing: keep its `Quiet` record if every sharer counts
    0 W, has no minimum, and shares one constant level below every cap; else none."""
    svc.quiet.pop(site_id, None)
    if not sharers:
        return
    level = shares[sharers[0]]
    if len(level) != 1:
        return
    level_w = level[0][1]
    for k in sharers:
        share = shares[k]
        if (len(share) != 1 or abs(share[0][1] - level_w) > 1e-6 or mins[k] > 0.0
                or caps[k] <= level_w + 1.0 or max(w for _, w in applied[k]) > planner.TOLERANCE_W):
            return
    svc.quiet[site_id] = Quiet(level_w, level_w * len(sharers), budget_w, set(sharers))


def keep_for(svc: SmartChargingService, site_id: str, kind: str) -> None:
    """Drop the site's record before work that may give it headroom (any but `KEEPS`)."""
    if kind not in KEEPS:
        svc.quiet.pop(site_id, None)


def drop(svc: SmartChargingService, site_id: str) -> None:
    """Drop the site's record (a path that may have changed what EVSEs count)."""
    svc.quiet.pop(site_id, None)


def touch(svc: SmartChargingService, site_id: str, station_id: str, evse_id: int | str | None) -> None:
    """A session started or ended on the EVSE: read again before the next skip."""
    quiet = svc.quiet.get(site_id)
    if quiet is None:
        return
    if evse_id is None or not str(evse_id).isdigit():
        svc.quiet.pop(site_id, None)
        return
    quiet.touched.add((station_id, int(evse_id)))


async def skip(svc: SmartChargingService, site_id: str, due: Iterable[tuple[str, int]] = ()) -> bool:
    """True if a full re-share of the site now would send nothing (module doc); the record then
    counts the EVSEs read. False (and the record dropped) when it cannot tell: run the full pass."""
    from csms.smart_charging import safety

    quiet = svc.quiet.get(site_id)
    if quiet is None:
        return False
    svc.quiet.pop(site_id)  # put back only if the skip is proven
    if (site_id not in svc._silent or site_id not in svc._fallback
            or time.monotonic() - quiet.at > QUIET_MAX_S):
        return False
    if await svc.site_budget_w(site_id) > quiet.budget_w + 1e-6:
        return False
    touched = sorted(quiet.touched | set(due))
    infos = await svc.evse_infos(touched) if touched else {}
    if len(infos) != len(touched):  # an EVSE no longer there: whether it shared is not known here
        return False
    now_s = svc.clock.timestamp()
    joining: dict[str, EvseInfo] = {}
    sharers = set(quiet.sharers)
    for info in infos.values():
        was = info.key in sharers
        sharers.discard(info.key)
        if _shares(svc, info):
            joining[info.key] = info
        elif not was:  # an EVSE that left the others: what it counted there is not known here
            return False
    sharers |= joining.keys()
    # uncapped, no minimum: the level is headroom / sharers, the headroom at most the record's
    level_w = quiet.headroom_w / len(sharers) if sharers else 0.0
    if level_w > quiet.level_w + 1e-9:
        return False
    applied: dict[str, Series] = {}
    for k, info in joining.items():
        cap_w, min_w = ev_caps_w(info)
        if svc.settings.fallback_limit_kw is not None:
            cap_w = min(cap_w, svc.settings.fallback_limit_kw * 1000.0)
        applied[k] = info.applied(now_s)
        if min_w > 0.0 or cap_w <= quiet.level_w + 1.0 or max(w for _, w in applied[k]) > planner.TOLERANCE_W:
            return False
    share = planner.constant(quiet.level_w, now_s)  # what it allows at the record's level: then below too
    _, payloads = await safety._changes(svc, site_id, joining, list(joining), dict.fromkeys(joining, share),
                                        applied, "interim", now_s, sending.Slices())
    if payloads:
        return False
    svc.quiet[site_id] = Quiet(quiet.level_w, quiet.headroom_w, quiet.budget_w, sharers, quiet.at)
    PASSES.labels("share-skipped").inc()
    log.debug("site %s: re-share skipped (%d sharers at %.1f W, %d EVSEs read)", site_id, len(sharers),
              level_w, len(touched))
    return True


def _shares(svc: SmartChargingService, info: EvseInfo) -> bool:
    """The EVSE is a sharer of a silent site's full pass (`safety.share_fairly`'s candidates)."""
    return bool(info.tx_ref and info.online and info.steerable and info.noncompliant_w is None
                and not svc.aside.busy(info))
