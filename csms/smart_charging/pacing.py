"""How often a site's whole-site passes run (`service`): fallback re-shares after sessions start
or end, and interim passes (K15) when a plan is late. Each reads the whole site, so they are
coalesced and spaced: at most one per `RESHARE_MIN_S`, and never more than `WHOLE_SITE_DUTY` of
the node's CPU. Until a delayed pass runs, a new session counts at what it counts now (its default,
or its maximum while that is unconfirmed) and nothing freed is handed out, so waiting never lets
the counted sum exceed the budget; it only delays the new shares."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from csms.smart_charging import quiet, safety
from csms.smart_charging.work import Work
from evfleet.events import Event

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

STREAM_READ_INTERVAL_S = 0.05
"""Shortest time between the starts of two reads of the event stream (`service.run`) while the
stream keeps up: XREAD answers as soon as one entry is there, so at 333 events a second a node read
the stream about 90 times a second, 2-4 events per read, and the read (a redis-py round trip, its
reply parsed) cost more than its events (issue 14: 14 % of a node's CPU at 10,000 stations). A read
that returned a full batch is behind: the next one starts at once. The stream's events reach a
site's task at most this much later; nothing the site limit relies on waits on them (each path that
changes the limit enforces it itself, within a second)."""

RESHARE_MIN_S = 1.0
"""Shortest time between two fallback re-shares of a site after sessions start or end, and between two
interim passes: a pass reads the whole site, so on a 20,000-EVSE site in fallback mode (8 starts
and 8 ends a second) one per event would never end; the starts and ends (and the interims falling
due) of a second share one pass."""

WHOLE_SITE_DUTY = 0.25
"""Largest share of a node's time that fallback re-shares and interim passes of one site may take:
after a pass that took d seconds of the node's CPU the next waits max(`RESHARE_MIN_S`,
d x (1 - duty) / duty). A pass of a 20,000-EVSE site takes about a second of CPU, so at one per
second the lease holder had no time left for its stations' messages (issue 14: 60 % of its samples
in `share_fairly` at 10,000). CPU, not wall time: a pass that waits for stations' answers (up to
the call timeout) costs nothing meanwhile and must not delay the next interim answers."""


def pass_gap_s(pass_s: float) -> float:
    """Seconds a site waits after a whole-site pass that took `pass_s` CPU seconds (`WHOLE_SITE_DUTY`)."""
    return max(RESHARE_MIN_S, pass_s * (1.0 - WHOLE_SITE_DUTY) / WHOLE_SITE_DUTY)


@dataclass
class Pacing:
    """The times of each site's whole-site passes (one per service)."""

    reshare_queued: set[str] = field(default_factory=set)
    """Sites with a re-share queued or timed."""
    reshare_last: dict[str, float] = field(default_factory=dict)
    """site -> monotonic start of its last full re-share (a fallback re-share or interim pass)."""
    reshare_asked: dict[str, float] = field(default_factory=dict)
    """site -> monotonic time of the latest start or end that asked for a re-share."""
    interim_last: dict[str, float] = field(default_factory=dict)
    """site -> monotonic start of its last interim pass (at most one per `pass_gap_s`)."""
    gap: dict[str, float] = field(default_factory=dict)
    """site -> seconds from the start of one whole-site pass to the next (`pass_gap_s`)."""

    def note_pass(self, site_id: str, cpu_started: float) -> None:
        """A pass that started at thread CPU time `cpu_started` ended: space the next one."""
        # the node's (event-loop thread's) CPU while the pass ran: its own work and what ran
        # between its awaits, so a node that is busy anyway spaces its passes further
        cpu_s = time.thread_time() - cpu_started
        self.gap[site_id] = gap = pass_gap_s(cpu_s)
        if gap > RESHARE_MIN_S:
            log.debug("site %s: whole-site pass took %.2f CPU s, next in %.2f s at the earliest",
                      site_id, cpu_s, gap)

    def wait_s(self, last: dict[str, float], site_id: str, mono: float) -> float:
        """Seconds until the site's next whole-site pass may start (`WHOLE_SITE_DUTY`)."""
        return last.get(site_id, -math.inf) + self.gap.get(site_id, RESHARE_MIN_S) - mono


def enqueue_spaced(svc: SmartChargingService, site_id: str, work: Work, last: dict[str, float]) -> None:
    """Queue a whole-site pass `work` for the site now, or once `pass_gap_s` has passed since
    the start recorded in `last`."""
    wait_s = svc.pacing.wait_s(last, site_id, time.monotonic())
    if wait_s <= 0:
        svc.enqueue(site_id, work, None)
    else:
        asyncio.get_running_loop().call_later(wait_s, svc.enqueue, site_id, work, None)


async def interim_pass(svc: SmartChargingService, site_id: str) -> None:
    """The interim profiles that fell due (`Work.INTERIM`); in fallback mode a full re-share."""
    pacing = svc.pacing
    started, cpu = time.monotonic(), time.thread_time()
    pacing.interim_last[site_id] = started
    if await quiet.skip(svc, site_id, svc._interim_due.get(site_id, {})):
        svc._interim_due.pop(site_id, None)  # each due session counts 0 W, and its share allows that
        return
    await svc.send_interims(site_id)
    pacing.note_pass(site_id, cpu)
    if site_id in svc._fallback:  # in fallback mode this pass re-shared every session
        pacing.reshare_last[site_id] = started


async def reshare_pass(svc: SmartChargingService, site_id: str) -> None:
    """The re-share `reshare_soon` queued (`Work.RESHARE`), unless an interim pass did it since."""
    pacing = svc.pacing
    pacing.reshare_queued.discard(site_id)
    if pacing.reshare_last.get(site_id, -RESHARE_MIN_S) >= pacing.reshare_asked.pop(site_id, 0.0):
        return  # an interim pass re-shared every session after the last start or end
    if await quiet.skip(svc, site_id):
        return  # it would send nothing (`quiet`)
    pacing.reshare_last[site_id], cpu = time.monotonic(), time.thread_time()
    await safety.share_fairly(svc, site_id)
    pacing.note_pass(site_id, cpu)


def reshare_soon(svc: SmartChargingService, site_id: str) -> None:
    """In fallback mode, sessions started or ended: one re-share within `pass_gap_s` of the
    last (`Work.RESHARE`; module doc: waiting never exceeds the budget). An interim pass that
    started after the latest ask re-shared every session already: the re-share is skipped."""
    if site_id not in svc._fallback:
        return
    pacing = svc.pacing
    # the latest ask: a pass started before it does not count
    pacing.reshare_asked[site_id] = time.monotonic()
    if site_id in pacing.reshare_queued:
        return
    pacing.reshare_queued.add(site_id)
    enqueue_spaced(svc, site_id, Work.RESHARE, pacing.reshare_last)


def start_interim_timer(svc: SmartChargingService, site_id: str, event: Event) -> None:
    """K15: if no plan-based profile reaches the session within `interim_profile_after_s`, an
    interim pass (one for every interim that falls due meanwhile, spaced by `pass_gap_s`)."""
    if event.evse_id is None or not event.tx_ref:
        return
    start_interim_timer_for(svc, site_id, (event.station_id, int(event.evse_id)), event.tx_ref)


def start_interim_timer_for(svc: SmartChargingService, site_id: str, key: tuple[str, int], txid: str) -> None:
    """`start_interim_timer` of the session `txid` on EVSE `key` (station id, EVSE id)."""

    async def fire() -> None:
        await asyncio.sleep(svc.settings.interim_profile_after_s)
        due = svc._interim_due.setdefault(site_id, {})
        first = not due
        due[key] = txid
        if first:  # one queue item handles every interim that falls due meanwhile (each pass
            # reads the whole site; until it runs the session counts at its default, its
            # maximum while that is unconfirmed)
            enqueue_spaced(svc, site_id, Work.INTERIM, svc.pacing.interim_last)

    task = asyncio.create_task(fire())
    svc._timers.add(task)
    task.add_done_callback(svc._timers.discard)


def read_pause_s(started_s: float, now_s: float, got: int, count: int,
                 interval_s: float = STREAM_READ_INTERVAL_S) -> float:
    """Seconds to wait before the next read of the event stream, after one that started at
    `started_s` (monotonic) and returned `got` entries of at most `count`: none after a full batch
    (behind: read on at once), else what is left of `interval_s` since that read started (a read that
    waited for its first entry longer than that is not delayed further)."""
    if got >= count:
        return 0.0
    return max(0.0, started_s + interval_s - now_s)
